import { defineEntity, type InferEntity, type MigrationObject } from '@mikro-orm/core';
import { Migration } from '@tributary/core/db';
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

/** The migrations of @tributary/ai's tables; append them to the owning service's own. */
/** The shared rate windows and pauses of the SQL rate-limit store (`limits.ts`). */
class CreateRateLimits extends Migration {
  override up(): void {
    this.addSql(`create table if not exists ai_rate_calls (
      id bigserial primary key,
      key text not null,
      at timestamptz not null,
      tokens integer not null
    )`);
    this.addSql('create index if not exists ai_rate_calls_key_at on ai_rate_calls (key, at)');
    this.addSql('create table if not exists ai_rate_pauses (key text primary key, until timestamptz not null)');
  }

  override down(): void {
    this.addSql('drop table if exists ai_rate_calls');
    this.addSql('drop table if exists ai_rate_pauses');
  }
}

export const aiMigrations: MigrationObject[] = [
  { name: 'ai-0001-token-ledger', class: CreateTokenLedger },
  { name: 'ai-0002-response-cache', class: CreateResponseCache },
  { name: 'ai-0003-rate-limits', class: CreateRateLimits },
];
