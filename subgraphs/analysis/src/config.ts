import { aiConfigSchema } from '@tributary/ai';
import { subgraphConfigSchema } from '@tributary/core/service';
import { z } from 'zod';
import type { QueueSettings } from './queue.ts';

const delays = z
  .string()
  .regex(/^\d+(,\d+)*$/, 'must be comma-separated milliseconds, e.g. 1000,5000,30000')
  .transform((s) => s.split(',').map(Number));

const weights = z
  .string()
  .transform((s, ctx) => {
    const map = new Map<string, number>();
    for (const entry of s.split(',').filter((e) => e.trim() !== '')) {
      const at = entry.lastIndexOf('=');
      const tenant = entry.slice(0, at).trim();
      const weight = Number(entry.slice(at + 1));
      if (at <= 0 || tenant === '' || !Number.isFinite(weight) || weight < 0.01 || weight > 1000) {
        ctx.addIssue({ code: 'custom', message: `"${entry}": expected tenant=weight with a weight from 0.01 to 1000` });
        return z.NEVER;
      }
      map.set(tenant, weight);
    }
    return map;
  });

export const configSchema = subgraphConfigSchema.extend({
  ...aiConfigSchema.shape,
  /** Attempts per document before its job FAILS (the first one counts). Default 5. */
  ANALYSIS_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(50).default(5),
  /** Delays between attempts, ms; the last repeats. Default 1000,5000,30000,120000. */
  ANALYSIS_RETRY_DELAYS_MS: delays.default([1_000, 5_000, 30_000, 120_000]),
  /**
   * Documents analysed at once by one process: model calls in flight, set by what the provider
   * allows (no database connection is held during a call). Default 32.
   */
  ANALYSIS_CONCURRENCY: z.coerce.number().int().min(1).max(512).default(32),
  /** How long a claim on a document holds without renewal before another worker may take it over, ms. Default 30000. */
  ANALYSIS_LEASE_MS: z.coerce.number().int().min(500).max(3_600_000).default(30_000),
  /** `fair`: by tenant (fair share), then priority; `fifo`: arrival order (the baseline). Default fair. */
  ANALYSIS_ORDER: z.enum(['fair', 'fifo']).default('fair'),
  /** The waiting one priority level is worth, ms: LOW work is overtaken only by work enqueued less than two steps after it. Default 60000. */
  ANALYSIS_PRIORITY_STEP_MS: z.coerce.number().int().min(0).max(86_400_000).default(60_000),
  /** Model calls in flight for one tenant across all analysis processes; 0: no cap. Default 0. */
  ANALYSIS_TENANT_CONCURRENCY: z.coerce.number().int().min(0).max(10_000).default(0),
  /** Fair-share weights, `tenant=weight,…` (weights 0.01..1000; others 1): a weight of 2 gets twice the turns. Default none. */
  ANALYSIS_TENANT_WEIGHTS: weights.default(new Map()),
});
export type AnalysisConfig = z.infer<typeof configSchema>;

/** The work table's settings from the service's config. */
export function queueSettings(config: AnalysisConfig): QueueSettings {
  return {
    order: config.ANALYSIS_ORDER,
    priorityStepMs: config.ANALYSIS_PRIORITY_STEP_MS,
    tenantConcurrency: config.ANALYSIS_TENANT_CONCURRENCY,
    tenantWeights: config.ANALYSIS_TENANT_WEIGHTS,
    leaseMs: config.ANALYSIS_LEASE_MS,
  };
}
