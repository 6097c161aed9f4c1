import { baseConfigSchema, urlWithProtocol } from '@tributary/core/config';
import { z } from 'zod';

const subgraphUrl = urlWithProtocol('http:', 'https:');

export const configSchema = baseConfigSchema.extend({
  PORT: z.coerce.number().int().min(0).max(65535).default(4000),
  /** Where each subgraph listens; default: the URLs in the supergraph (localhost:4001-4004). */
  DOCUMENTS_URL: subgraphUrl.optional(),
  JOBS_URL: subgraphUrl.optional(),
  ANALYSIS_URL: subgraphUrl.optional(),
  INSIGHTS_URL: subgraphUrl.optional(),
  /** The composed supergraph; default: schema/supergraph.graphql of this repository. */
  SUPERGRAPH_PATH: z.string().min(1).optional(),
  /** How long a subscription to a job the job view has not seen yet waits before NOT_FOUND. */
  SUBSCRIPTION_NOT_FOUND_GRACE_MS: z.coerce.number().int().min(0).max(600_000).default(5_000),
  /** Largest request body, bytes. Default 2 MiB (uploads are up to 1 MiB of content). */
  GATEWAY_MAX_BODY_BYTES: z.coerce.number().int().positive().default(2 * 1024 * 1024),
});
export type GatewayConfig = z.infer<typeof configSchema>;

export function subgraphUrlOverrides(config: GatewayConfig): Record<string, string> {
  const overrides: Record<string, string> = {};
  if (config.DOCUMENTS_URL) overrides.documents = config.DOCUMENTS_URL;
  if (config.JOBS_URL) overrides.jobs = config.JOBS_URL;
  if (config.ANALYSIS_URL) overrides.analysis = config.ANALYSIS_URL;
  if (config.INSIGHTS_URL) overrides.insights = config.INSIGHTS_URL;
  return overrides;
}
