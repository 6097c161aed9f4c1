import { queryRows, queryRun, type Database } from '@tributary/core/db';
import { z } from 'zod';
import { analysisOutputSchema, type AnalysisOutput, type AnalysisResult } from '../types.ts';
import { autocommit } from './autocommit.ts';

/** A cached answer, with how many calls it was made of (a long text's chunks). */
export interface CacheEntry {
  key: string;
  provider: string;
  model: string;
  output: AnalysisOutput & { chunks?: number | undefined; truncated?: boolean | undefined };
}

const cachedOutputSchema = analysisOutputSchema.extend({ chunks: z.number().int().min(1).optional(), truncated: z.boolean().optional() });

/** Validated LLM answers by request hash (`ai_response_cache`), shared by all tenants. */
export class ResponseCache {
  constructor(private readonly db: Database) {}

  /** The entry for the first of `keys` that has one (keys in order of preference). */
  async get(keys: readonly string[]): Promise<CacheEntry | undefined> {
    if (keys.length === 0) return undefined;
    const rows = await queryRows<{ key: string; provider: string; model: string; output: unknown }>(
      autocommit(this.db),
      `select key, provider, model, output from ai_response_cache where key in (${keys.map(() => '?').join(', ')})`,
      keys,
    );
    for (const key of keys) {
      const row = rows.find((r) => r.key === key);
      if (!row) continue;
      // The row was valid when written; the schema may have tightened since. A stale row is a miss.
      const output = cachedOutputSchema.safeParse(typeof row.output === 'string' ? JSON.parse(row.output) : row.output);
      if (output.success) return { key, provider: row.provider, model: row.model, output: output.data };
    }
    return undefined;
  }

  /** Stores an answer; the first writer of a key wins (both answered the same request). */
  async put(key: string, result: AnalysisResult): Promise<void> {
    const output: CacheEntry['output'] = {
      summary: result.summary,
      themes: result.themes,
      keywords: result.keywords,
      sentiment: result.sentiment,
      ...(result.chunks !== undefined ? { chunks: result.chunks } : {}),
      ...(result.truncated !== undefined ? { truncated: result.truncated } : {}),
    };
    await queryRun(
      autocommit(this.db),
      `insert into ai_response_cache (key, provider, model, output, prompt_tokens, completion_tokens, created_at)
       values (?, ?, ?, ?::jsonb, ?, ?, now()) on conflict (key) do nothing`,
      [key, result.provider, result.model, JSON.stringify(output), result.tokens.prompt, result.tokens.completion],
    );
  }
}
