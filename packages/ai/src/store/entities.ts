import { defineEntity, type InferEntity, type MigrationObject } from '@mikro-orm/core';
import { Migration } from '@tributary/core/db';
import { rateLimitTablesMigration, type SqlRateLimitTables } from '@tributary/core/rate-limit';
import type { AnalysisOutput } from '../types.ts';

/**
 * Tokens a tenant spent (`used`) and has in flight (`reserved`) on one UTC day. Written only with
 * atomic SQL ({@link TokenLedger}); the entity is for reading.
 */
export const TokenLedgerEntry = defineEntity({
  name: 'AiTokenLedgerEntry',
  tableName: 'ai_token_ledger',
  properties: (p) => ({
    tenantId: p.text().primary(),
    /** The UTC day, `YYYY-MM-DD`. */
    day: p.date().primary(),
    used: p.bigint('number'),
    reserved: p.bigint('number'),
    updatedAt: p.datetime(),
  }),
  primaryKeys: ['tenantId', 'day'],
});
export type TokenLedgerEntry = InferEntity<typeof TokenLedgerEntry>;

/** A validated LLM answer, keyed by the hash of (provider, model, prompt, schema). */
export const CachedResponse = defineEntity({
  name: 'AiCachedResponse',
  tableName: 'ai_response_cache',
  properties: (p) => ({
    key: p.text().primary(),
    provider: p.text(),
    model: p.text(),
    output: p.json<AnalysisOutput>(),
    /** What the answer cost when it was made (a hit costs nothing). */
    promptTokens: p.integer(),
    completionTokens: p.integer(),
    createdAt: p.datetime(),
  }),
});
export type CachedResponse = InferEntity<typeof CachedResponse>;

class CreateTokenLedger extends Migration {
  override up(): void {
    this.addSql(`create table if not exists ai_token_ledger (
      tenant_id text not null,
      day date not null,
      used bigint not null default 0 check (used >= 0),
      reserved bigint not null default 0 check (reserved >= 0),
      updated_at timestamptz not null default now(),
      primary key (tenant_id, day)
    )`);
  }

  override down(): void {
    this.addSql('drop table if exists ai_token_ledger');
  }
}

class CreateResponseCache extends Migration {
  override up(): void {
    this.addSql(`create table if not exists ai_response_cache (
      key text primary key,
      provider text not null,
      model text not null,
      output jsonb not null,
      prompt_tokens integer not null,
      completion_tokens integer not null,
      created_at timestamptz not null default now()
    )`);
    // For pruning old answers by age.
    this.addSql('create index if not exists ai_response_cache_created_at on ai_response_cache (created_at)');
  }

  override down(): void {
    this.addSql('drop table if exists ai_response_cache');
  }
}

/** The entities of @tributary/ai's tables, for the service that owns them (analysis) to register. */
export const aiEntities = [TokenLedgerEntry, CachedResponse];

/**
 * Where the analysis database counts the providers' rate windows and pauses (the SQL store of
 * `@tributary/core/rate-limit`): the tables and lock name `ai-0003-rate-limits` has always used.
 */
export const aiRateLimitTables: SqlRateLimitTables = { calls: 'ai_rate_calls', pauses: 'ai_rate_pauses', lock: 'tributary-ai-rate' };

/** The migrations of @tributary/ai's tables; append them to the owning service's own. */
export const aiMigrations: MigrationObject[] = [
  { name: 'ai-0001-token-ledger', class: CreateTokenLedger },
  { name: 'ai-0002-response-cache', class: CreateResponseCache },
  { name: 'ai-0003-rate-limits', class: rateLimitTablesMigration(aiRateLimitTables) },
];
