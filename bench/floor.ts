/**
 * The hand-written floor of the pipeline as deployed: `bench:deployed`'s and `bench:ai`'s `floor`
 * mode starts this file as six processes (FLOOR_ROLE = documents, analysis, jobs, insights,
 * webhooks, gateway) in place of the system's six, and puts the same load through it. It is the
 * same design with nothing of ours in its plumbing: raw pg and amqplib, node:http and ws, no
 * GraphQL, no ORM, no event validation, no tracing, no auth. What it keeps are the guarantees,
 * the hops and the work, statement for statement:
 *   - documents: the upload and its `document.uploaded` in one transaction (outbox); a relay that
 *     wakes on the commit's NOTIFY, claims rows `for update skip locked` (`begin` and the claim in
 *     one round trip), publishes them with publisher confirms and commits after the confirm;
 *   - analysis: the analysis service's three steps. A claim transaction (the lease row,
 *     `analysis.started`); the analysis and the embedding with no transaction open (the lease
 *     renewed every third of its length); a settling transaction (inbox row, every column the
 *     service stores: summary, themes, keywords, sentiment, provider, model, tokens, chunks; the
 *     document's embedding row; `analysis.completed` carrying the result). The analysis is the
 *     system's own computation, called through @tributary/ai's exports: offline, the
 *     `OfflineAnalyzer` and `OfflineEmbedder`; with OPENAI_API_KEY (bench:ai's provider), the
 *     `OpenAIProvider` (the same request body, prompt and `response_format`, its reply parsed and
 *     validated the same way) under a `ChunkedAnalyzer` with the service's chunk settings, and
 *     the `OpenAIEmbedder`. Around the call, written here on raw pg as the service's layers do
 *     it: the response cache read and written, the day's token budget reserved and settled
 *     (autocommit statements), at most ANALYSIS_CONCURRENCY calls at once (p-limit), each
 *     reading the provider's shared pause first (one read shared by the calls that ask at once,
 *     on a connection of its own; a 429 writes one), and twice as many documents claimed as calls;
 *   - jobs: each event in a transaction with its inbox row, the view row and `job.updated`;
 *   - insights: `analysis.completed`/`failed` in batches as the service's consumer gathers them
 *     (up to 50, four transactions at once): the batch's inbox rows, then the fold as the
 *     service writes it (documents locked in key order, new ones inserted, tenant totals and
 *     theme rows upserted, one statement per table) and `insights.updated` per tenant;
 *   - webhooks: each `job.updated` as the service's fan-out takes it: a terminal one looks up the
 *     tenant's endpoints for its event (one statement, no transaction); with none, acked with no
 *     inbox row, as the service does; with some, a transaction with the inbox row, the delivery
 *     rows and a `webhook.delivery` each (the benchmarks register none, so nothing is sent);
 *   - gateway: one exclusive queue bound to what the system's gateway binds (`job.updated`,
 *     `analysis.completed`, `insights.updated`); a subscription's first read, and on the terminal
 *     event the read of the client's selection, as the query plan makes it (documents' `job(id)`,
 *     then jobs' status, then analysis' row), each an HTTP call to a process; the answer on a
 *     graphql-ws socket (the subprotocol's few messages, by hand).
 * Queues are quorum queues on the run's exchange, as the services declare theirs. So the gap
 * from this floor to the system is what Tributary's layers add, and the floor itself is what this
 * machine allows whoever writes it.
 */
import {
  AiError,
  analysisOutputSchema,
  ChunkedAnalyzer,
  isAiError,
  loadAiConfig,
  OfflineAnalyzer,
  OfflineEmbedder,
  OpenAIEmbedder,
  OpenAIProvider,
  providersFromEnv,
  utcDay,
  type AiConfig,
  type AnalysisInput,
  type AnalysisResult,
  type AnalyzeOptions,
  type Embedder,
  type LlmProvider,
  type ProviderSettings,
} from '@tributary/ai';
import { errorCode, errorMessage } from '@tributary/core/errors';
import { ensureDatabase } from '@tributary/core/db';
import { type Channel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import pLimit from 'p-limit';
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Agent, request } from 'undici';
import { WebSocketServer, type WebSocket } from 'ws';
import { z } from 'zod';
import { connectAmqp, startFloorRelay, publishWithConfirms, type FloorOutboxRow } from './floor-relay.ts';
import { inTransaction } from './pg.ts';

type Role = 'documents' | 'analysis' | 'jobs' | 'insights' | 'webhooks' | 'gateway';
const ROLE = process.env.FLOOR_ROLE as Role;
const PORT = Number(process.env.PORT);
const NAMESPACE = process.env.TRIBUTARY_NAMESPACE!;
const EXCHANGE = `${NAMESPACE}.events`;
const AMQP_URL = process.env.AMQP_URL!;
const DATABASE_URL = process.env.FLOOR_DATABASE_URL;
/**
 * `relay` (default): as the services do, a relay publishes what commits. `direct`: the process
 * that committed publishes its rows itself right after the commit and marks them sent once
 * confirmed; the relay only sweeps rows left unsent for 5 s (a crash between commit and
 * confirm). The same guarantees, one wake-up and claim fewer per hop.
 */
const DISPATCH = (process.env.FLOOR_DISPATCH ?? 'relay') as 'relay' | 'direct';
/** The analysis service's settings of the same names, and their defaults. */
const ANALYSIS = {
  concurrency: Number(process.env.ANALYSIS_CONCURRENCY ?? 32),
  leaseMs: Number(process.env.ANALYSIS_LEASE_MS ?? 30_000),
  maxAttempts: Number(process.env.ANALYSIS_MAX_ATTEMPTS ?? 5),
};

interface Envelope {
  id: string;
  type: string;
  tenant: string;
  data: Record<string, unknown>;
}

const OUTBOX_SCHEMA = `
  create table if not exists outbox (id bigserial primary key, event_id uuid not null, type text not null, payload text not null,
    created_at timestamptz not null default now(), sent_at timestamptz);
  create index if not exists outbox_unsent on outbox (id) where sent_at is null;
  create table if not exists inbox (consumer text not null, event_id uuid not null, primary key (consumer, event_id));
  create or replace function outbox_notify() returns trigger language plpgsql as $$ begin perform pg_notify('floor_outbox', ''); return null; end $$;
  drop trigger if exists outbox_notify on outbox;
  create trigger outbox_notify after insert on outbox for each statement execute function outbox_notify();`;

/** Each role's tables, with the columns and indexes the service's migrations give them. */
const SCHEMAS: Partial<Record<Role, string>> = {
  documents: `create table if not exists documents (id uuid primary key, job_id uuid not null unique, tenant_id text not null, title text not null,
    content text not null, created_at timestamptz not null)`,
  analysis: `
    create table if not exists analyses (document_id uuid primary key, job_id uuid not null, tenant_id text not null, status text not null, title text not null,
      summary text, themes jsonb, keywords jsonb, sentiment jsonb, provider text, model text, prompt_tokens integer, completion_tokens integer,
      cached boolean not null default false, chunks integer not null default 1, truncated boolean not null default false, error_code text, error_message text,
      attempts integer not null default 0, lease_token uuid, lease_expires_at timestamptz, created_at timestamptz not null, updated_at timestamptz not null);
    create index if not exists analyses_tenant on analyses (tenant_id, document_id);
    create table if not exists document_embeddings (document_id uuid primary key, tenant_id text not null, provider text not null, model text not null,
      vector jsonb not null, created_at timestamptz not null);
    create index if not exists document_embeddings_tenant on document_embeddings (tenant_id, provider, model);
    create table if not exists ai_token_ledger (tenant_id text not null, day date not null, used bigint not null default 0 check (used >= 0),
      reserved bigint not null default 0 check (reserved >= 0), updated_at timestamptz not null default now(), primary key (tenant_id, day));
    create table if not exists ai_response_cache (key text primary key, provider text not null, model text not null, output jsonb not null,
      prompt_tokens integer not null, completion_tokens integer not null, created_at timestamptz not null default now());
    create table if not exists ai_rate_pauses (key text primary key, until timestamptz not null)`,
  jobs: `create table if not exists jobs (id uuid primary key, tenant_id text not null, document_id uuid not null, status text not null,
    error_code text, updated_at timestamptz not null)`,
  insights: `
    create table if not exists insight_documents (tenant_id text not null, document_id text not null, status text not null, updated_at timestamptz not null,
      primary key (tenant_id, document_id));
    create table if not exists theme_stats (tenant_id text not null, name text not null, document_count integer not null, score_sum double precision not null,
      last_seen_at timestamptz not null, primary key (tenant_id, name));
    create index if not exists theme_stats_top on theme_stats (tenant_id, document_count desc, name);
    create table if not exists tenant_stats (tenant_id text primary key, analyzed integer not null default 0, failed integer not null default 0)`,
  webhooks: `
    create table if not exists webhooks (id uuid primary key, tenant_id text not null, url text not null, events jsonb not null, secret text not null,
      previous_secret text, previous_secret_until timestamptz, created_at timestamptz not null);
    create index if not exists webhooks_tenant on webhooks (tenant_id, created_at desc, id desc);
    create table if not exists webhook_deliveries (id uuid primary key, tenant_id text not null, webhook_id uuid not null references webhooks (id) on delete cascade,
      event text not null, job_id text not null, payload text not null, status text not null, attempts integer not null default 0, response_status integer,
      last_error text, lease_token text, lease_expires_at timestamptz, created_at timestamptz not null, updated_at timestamptz not null, delivered_at timestamptz,
      unique (webhook_id, job_id, event));
    create index if not exists webhook_deliveries_page on webhook_deliveries (webhook_id, created_at desc, id desc)`,
};

/** `($1, $2), ($3, $4)`: `rows` rows of `columns` placeholders. */
const placeholders = (rows: number, columns: number) =>
  Array.from({ length: rows }, (_, r) => `(${Array.from({ length: columns }, (_, c) => `$${r * columns + c + 1}`).join(', ')})`).join(', ');

function outboxInsert(events: Envelope[]): { text: string; values: string[] } {
  const values = events.flatMap((e) => [e.id, e.type, JSON.stringify(e)]);
  return { text: `insert into outbox (event_id, type, payload) values ${placeholders(events.length, 3)} returning id, event_id, type, payload`, values };
}

const event = (type: string, tenant: string, data: Record<string, unknown>): Envelope => ({ id: randomUUID(), type, tenant, data });

type Publish = (events: Envelope[]) => Promise<void>;
/** The channel `direct` dispatch publishes on (the relay's). */
let direct: ConfirmChannel | undefined;

/** A transaction whose `publish` writes to the outbox; with `direct` dispatch, its rows are published once it commits. */
async function transaction<T>(pool: pg.Pool, work: (client: pg.PoolClient, publish: Publish) => Promise<T>): Promise<T> {
  const written: FloorOutboxRow[] = [];
  const result = await inTransaction(pool, (client) =>
    work(client, async (events) => {
      if (events.length === 0) return;
      const insert = outboxInsert(events);
      written.push(...(await client.query<FloorOutboxRow>(insert.text, insert.values)).rows);
    }),
  );
  if (DISPATCH === 'direct' && written.length > 0) void dispatch(pool, written);
  return result;
}

/** Thrown in a settling transaction whose lease was lost: rolls back its inbox row with it, as the service's `settle` does. */
const DECLINED = new Error('the lease was taken over; rolled back');

/** Publish committed rows now, and mark them sent once confirmed; on any failure the sweep has them. */
async function dispatch(pool: pg.Pool, rows: FloorOutboxRow[]): Promise<void> {
  try {
    await publishWithConfirms(direct!, EXCHANGE, rows);
    await pool.query('update outbox set sent_at = now() where id = any($1::bigint[]) and sent_at is null', [rows.map((r) => r.id)]);
  } catch (error) {
    console.error(`${ROLE}: dispatch failed, left to the sweep: ${(error as Error).message}`);
  }
}

/** Publishes committed outbox rows as the services' relay does (bench/floor-relay.ts); with `direct` dispatch, only a sweep of rows left unsent for 5 s. */
const startRelay = (confirm: ConfirmChannel) =>
  startFloorRelay({
    databaseUrl: DATABASE_URL!,
    channel: confirm,
    exchange: EXCHANGE,
    table: 'outbox',
    notifyChannel: 'floor_outbox',
    batchSize: 500,
    concurrency: 1,
    retain: true,
    ...(DISPATCH === 'direct' ? { claimFilter: "created_at < now() - interval '5 seconds'", wakeOnNotify: false } : {}),
  });

async function declare(channel: Channel, name: string, keys: string[], exclusive: boolean, prefetch: number): Promise<string> {
  const queue = `${NAMESPACE}.floor.${name}`;
  await channel.assertQueue(queue, exclusive ? { exclusive: true, autoDelete: true } : { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  for (const key of keys) await channel.bindQueue(queue, EXCHANGE, key);
  await channel.prefetch(prefetch);
  return queue;
}

/** Each delivery handled as it arrives (up to `prefetch` at once), acked once its handler resolves. */
async function consume(channel: Channel, name: string, keys: string[], handle: (e: Envelope) => Promise<void>, exclusive = false, prefetch = 64): Promise<void> {
  const queue = await declare(channel, name, keys, exclusive, prefetch);
  await channel.consume(queue, (message: ConsumeMessage | null) => {
    if (!message) return;
    handle(JSON.parse(message.content.toString()) as Envelope).then(
      () => channel.ack(message),
      (error: unknown) => {
        console.error(`${ROLE}: ${(error as Error).message}`);
        channel.nack(message, false, true);
      },
    );
  });
}

/**
 * Deliveries in batches, as the services' consumer gives a batch handler them: a burst (what one
 * socket read delivered) is gathered, then applied in one call, up to `maxBatch` events and
 * `concurrency` calls at once; while calls are in flight, a partial batch waits up to 10 ms for
 * more. Each batch's deliveries are acked once it resolves.
 */
async function consumeBatches(channel: Channel, name: string, keys: string[], handle: (events: Envelope[]) => Promise<void>, maxBatch = 50, concurrency = 4, prefetch = 200): Promise<void> {
  const queue = await declare(channel, name, keys, false, prefetch);
  const fullBatch = Math.max(1, Math.min(maxBatch, Math.floor(prefetch / concurrency)));
  const waiting: ConsumeMessage[] = [];
  let active = 0;
  let scheduled = false;
  let timer: NodeJS.Timeout | undefined;
  const pump = (force: boolean) => {
    let partialOk = force;
    while (active < concurrency && waiting.length > 0) {
      if (active > 0 && !partialOk && waiting.length < fullBatch) {
        timer ??= setTimeout(() => {
          timer = undefined;
          pump(true);
        }, 10);
        return;
      }
      partialOk = false;
      const batch = waiting.splice(0, maxBatch);
      active++;
      handle(batch.map((m) => JSON.parse(m.content.toString()) as Envelope))
        .then(
          () => batch.forEach((m) => channel.ack(m)),
          (error: unknown) => {
            console.error(`${ROLE}: ${(error as Error).message}`);
            batch.forEach((m) => channel.nack(m, false, true));
          },
        )
        .finally(() => {
          active--;
          pump(false);
        });
    }
  };
  await channel.consume(queue, (message: ConsumeMessage | null) => {
    if (!message) return;
    waiting.push(message);
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      pump(false);
    });
  });
}

/** Each event once: its inbox row in the transaction of its effect. */
async function once(client: pg.PoolClient, consumer: string, id: string): Promise<boolean> {
  const { rowCount } = await client.query('insert into inbox (consumer, event_id) values ($1, $2) on conflict do nothing', [consumer, id]);
  return rowCount === 1;
}

// ---------------------------------------------------------------------------------------------
// The analysis

type Analyze = (input: AnalysisInput, options: AnalyzeOptions) => Promise<AnalysisResult>;

const cachedOutputSchema = analysisOutputSchema.extend({ chunks: z.number().int().min(1).optional(), truncated: z.boolean().optional() });

/**
 * The analysis service's analyzer with a provider configured, its layers written on raw pg: the
 * response cache and the token budget around a {@link ChunkedAnalyzer} (the same chunks, calls,
 * estimate and cache key) over the provider, each call in one of `calls` slots after reading the
 * provider's shared pause. A transient failure is not retried here: the lease is given back and
 * the delivery requeued.
 */
async function providerAnalysis(pool: pg.Pool, settings: ProviderSettings, config: AiConfig, calls: number): Promise<{ analyze: Analyze; close: () => Promise<void> }> {
  const provider = new OpenAIProvider({ apiKey: settings.apiKey, ...(settings.baseURL ? { baseURL: settings.baseURL } : {}), model: settings.model, name: settings.name, timeoutMs: config.AI_TIMEOUT_MS });
  const slot = pLimit(calls);
  // The pause read's own connection, outside the pool, and one read shared by the calls that ask at once.
  const pauses = new pg.Client({ connectionString: DATABASE_URL! });
  await pauses.connect();
  let pauseRead: Promise<number> | undefined;
  const pausedMs = () =>
    (pauseRead ??= pauses
      .query<{ paused_ms: string | number }>('select extract(epoch from (until - now())) * 1000 as paused_ms from ai_rate_pauses where key = $1 and until > now()', [provider.provider])
      .then(({ rows }) => (rows[0] ? Math.ceil(Number(rows[0].paused_ms)) + 5 : 0))
      .finally(() => (pauseRead = undefined)));
  const limited: LlmProvider = {
    provider: provider.provider,
    model: provider.model,
    estimateTokens: (input) => provider.estimateTokens(input),
    cacheKey: (input) => provider.cacheKey(input),
    analyze: (input, options) =>
      slot(async () => {
        for (let wait = await pausedMs(); wait > 0; wait = await pausedMs()) await sleep(wait);
        try {
          return await provider.analyze(input, options);
        } catch (error) {
          if (isAiError(error) && error.code === 'RATE_LIMITED' && error.retryAfterMs) {
            await pool
              .query(`insert into ai_rate_pauses (key, until) values ($1, now() + ($2::double precision * interval '1 millisecond')) on conflict (key) do update set until = greatest(ai_rate_pauses.until, excluded.until)`, [
                provider.provider,
                error.retryAfterMs,
              ])
              .catch(() => {});
          }
          throw error;
        }
      }),
  };
  const chunked = new ChunkedAnalyzer(limited, { maxChunkTokens: config.AI_MAX_CHUNK_TOKENS, maxChunks: config.AI_MAX_CHUNKS });
  const analyze: Analyze = async (input, options) => {
    const tenant = options.tenantId!;
    const key = chunked.cacheKey(input);
    const { rows: hits } = await pool.query<{ provider: string; model: string; output: unknown }>('select key, provider, model, output from ai_response_cache where key in ($1)', [key]);
    const hit = hits[0] ? cachedOutputSchema.safeParse(hits[0].output) : undefined;
    // A row that no longer parses is a miss, as in the service's cache.
    if (hits[0] && hit?.success) return { ...hit.data, provider: hits[0].provider, model: hits[0].model, tokens: { prompt: 0, completion: 0 }, cached: true };
    const estimate = chunked.estimateTokens(input);
    const day = utcDay(new Date());
    const budget = config.AI_DAILY_TOKEN_BUDGET;
    const { rowCount } = await pool.query(
      `insert into ai_token_ledger as l (tenant_id, day, used, reserved, updated_at)
       select $1, $2::date, 0, $3::bigint, now() where $4::bigint <= $5::bigint
       on conflict (tenant_id, day) do update set reserved = l.reserved + excluded.reserved, updated_at = now()
         where l.used + l.reserved + excluded.reserved <= $6::bigint
       returning 1 as ok`,
      [tenant, day, estimate, estimate, budget, budget],
    );
    if (rowCount === 0) throw new AiError('BUDGET_EXCEEDED', `tenant ${tenant}: the daily budget of ${budget} tokens cannot cover this call (about ${estimate} tokens)`, { provider: provider.provider });
    const settle = (spent: number) =>
      pool
        .query('update ai_token_ledger set reserved = greatest(reserved - $1, 0), used = used + $2, updated_at = now() where tenant_id = $3 and day = $4::date', [estimate, spent, tenant, day])
        .catch(() => {});
    let result: AnalysisResult;
    try {
      result = await chunked.analyze(input, options);
    } catch (error) {
      await settle(isAiError(error) && error.tokens ? error.tokens.prompt + error.tokens.completion : 0);
      throw error;
    }
    await settle(result.tokens.prompt + result.tokens.completion);
    const output = { summary: result.summary, themes: result.themes, keywords: result.keywords, sentiment: result.sentiment, chunks: result.chunks, truncated: result.truncated };
    await pool
      .query(
        `insert into ai_response_cache (key, provider, model, output, prompt_tokens, completion_tokens, created_at) values ($1, $2, $3, $4::jsonb, $5, $6, now()) on conflict (key) do nothing`,
        [key, result.provider, result.model, JSON.stringify(output), result.tokens.prompt, result.tokens.completion],
      )
      .catch(() => {});
    return result;
  };
  return { analyze, close: () => pauses.end() };
}

async function analysisRole(pool: pg.Pool, channel: Channel, routes: Record<string, Route>): Promise<() => Promise<void>> {
  // With a key: the provider, as the service configures it from the same settings; without: offline.
  const config = loadAiConfig(process.env);
  const [settings] = providersFromEnv(process.env, config);
  const ai = settings ? await providerAnalysis(pool, settings, config, ANALYSIS.concurrency) : undefined;
  const offline = new OfflineAnalyzer();
  const analyze: Analyze = ai ? ai.analyze : (input, options) => offline.analyze(input, options);
  const embedder: Embedder = settings
    ? new OpenAIEmbedder({ apiKey: settings.apiKey, ...(settings.baseURL ? { baseURL: settings.baseURL } : {}), model: config.AI_EMBEDDING_MODEL, name: settings.name, timeoutMs: config.AI_TIMEOUT_MS })
    : new OfflineEmbedder();
  const leaseSql = `now() + (${Math.round(ANALYSIS.leaseMs)} * interval '1 millisecond')`;
  const mine = `document_id = $1 and lease_token = $2 and status = 'RUNNING'`;

  await consume(
    channel,
    'analysis',
    ['document.uploaded'],
    async (e) => {
      const { documentId, jobId, title, text } = e.data as { documentId: string; jobId: string; title: string; text: string };
      const token = randomUUID();
      const attempt = await transaction(pool, async (tx, publish) => {
        const now = new Date().toISOString();
        const { rows } = await tx.query<{ attempts: number }>(
          `insert into analyses (document_id, job_id, tenant_id, status, title, cached, attempts, lease_token, lease_expires_at, created_at, updated_at)
           values ($1, $2, $3, 'RUNNING', $4, false, 1, $5, ${leaseSql}, $6, $6)
           on conflict (document_id) do update set status = 'RUNNING', attempts = analyses.attempts + 1, lease_token = excluded.lease_token,
             lease_expires_at = excluded.lease_expires_at, updated_at = excluded.updated_at
           where analyses.status in ('PENDING', 'RUNNING') and (analyses.lease_expires_at is null or analyses.lease_expires_at <= now())
           returning attempts`,
          [documentId, jobId, e.tenant, title, token, now],
        );
        if (!rows[0]) return undefined;
        await publish([event('analysis.started', e.tenant, { documentId, jobId, attempt: rows[0].attempts, startedAt: now })]);
        return rows[0].attempts;
      });
      // Done already, or under a live lease (the floor's one analysis process redelivers only what it gave back).
      if (attempt === undefined) return;

      const renewal = setInterval(() => {
        pool.query(`update analyses set lease_expires_at = ${leaseSql} where ${mine}`, [documentId, token]).catch(() => {});
      }, ANALYSIS.leaseMs / 3);
      // A long document's progress, each step in a short transaction of its own, in order.
      let progress = Promise.resolve();
      const onProgress = ({ done, total }: { done: number; total: number }) => {
        progress = progress.then(() =>
          transaction(pool, (_tx, publish) => publish([event('analysis.progress', e.tenant, { documentId, jobId, done, total, at: new Date().toISOString() })])).catch(() => {}),
        );
      };
      let outcome: { result: AnalysisResult; vector: number[] } | { error: unknown };
      try {
        const result = await analyze({ text, title }, { tenantId: e.tenant, onProgress });
        const [vector] = await embedder.embed([`${title}\n\n${text}`]);
        outcome = { result, vector: vector! };
      } catch (error) {
        outcome = { error };
      } finally {
        clearInterval(renewal);
        await progress;
      }

      const now = new Date().toISOString();
      const settle = (work: (tx: pg.PoolClient, publish: Publish) => Promise<boolean>) =>
        transaction(pool, async (tx, publish) => {
          if (!(await once(tx, 'analysis', e.id))) return;
          if (!(await work(tx, publish))) throw DECLINED;
        }).catch((error: unknown) => {
          if (error !== DECLINED) throw error;
        });
      if ('error' in outcome) {
        const { error } = outcome;
        if (!(isAiError(error) && error.unrecoverable) && attempt < ANALYSIS.maxAttempts) {
          // The lease given back, so the redelivery claims at once.
          await pool.query(`update analyses set lease_expires_at = now() where ${mine}`, [documentId, token]).catch(() => {});
          throw error;
        }
        const failure = { code: errorCode(error), message: errorMessage(error) };
        await settle(async (tx, publish) => {
          const { rowCount } = await tx.query(`update analyses set status = 'FAILED', error_code = $3, error_message = $4, lease_expires_at = null, updated_at = $5 where ${mine}`, [
            documentId,
            token,
            failure.code,
            failure.message,
            now,
          ]);
          if (rowCount !== 1) return false;
          await publish([event('analysis.failed', e.tenant, { documentId, jobId, error: failure, attempts: attempt, failedAt: now })]);
          return true;
        });
        return;
      }
      const { result, vector } = outcome;
      await settle(async (tx, publish) => {
        const { rowCount } = await tx.query(
          `update analyses set status = 'COMPLETED', summary = $3, themes = $4::jsonb, keywords = $5::jsonb, sentiment = $6::jsonb, provider = $7, model = $8,
             prompt_tokens = $9, completion_tokens = $10, cached = $11, chunks = $12, truncated = $13, lease_expires_at = null, updated_at = $14 where ${mine}`,
          [
            documentId,
            token,
            result.summary,
            JSON.stringify(result.themes),
            JSON.stringify(result.keywords),
            JSON.stringify(result.sentiment),
            result.provider,
            result.model,
            result.tokens.prompt,
            result.tokens.completion,
            result.cached,
            result.chunks ?? 1,
            result.truncated ?? false,
            now,
          ],
        );
        if (rowCount !== 1) return false;
        await tx.query(
          `insert into document_embeddings (document_id, tenant_id, provider, model, vector, created_at) values ($1, $2, $3, $4, $5::jsonb, $6)
           on conflict (document_id) do update set tenant_id = excluded.tenant_id, provider = excluded.provider, model = excluded.model, vector = excluded.vector, created_at = excluded.created_at`,
          [documentId, e.tenant, embedder.provider, embedder.model, JSON.stringify(vector), now],
        );
        await publish([
          event('analysis.completed', e.tenant, {
            documentId,
            jobId,
            summary: result.summary,
            themes: result.themes,
            keywords: result.keywords,
            sentiment: result.sentiment,
            provider: result.provider,
            model: result.model,
            tokens: result.tokens,
            attempts: attempt,
            completedAt: now,
          }),
        ]);
        return true;
      });
    },
    false,
    // Twice the model calls: as many documents claimed and waiting for a call slot as calls in flight.
    settings ? ANALYSIS.concurrency * 2 : 64,
  );
  routes['/analysis'] = async (url, _req, res) => {
    const { rows } = await pool.query<Record<string, unknown>>(
      `select summary, themes, keywords, sentiment, provider, model, prompt_tokens, completion_tokens, cached, chunks, truncated from analyses
       where document_id = $1 and tenant_id = $2 and status = 'COMPLETED'`,
      [url.searchParams.get('documentId'), url.searchParams.get('tenant')],
    );
    const row = rows[0];
    json(
      res,
      200,
      row
        ? {
            summary: row.summary,
            themes: row.themes,
            keywords: row.keywords,
            sentiment: row.sentiment,
            provider: row.provider,
            model: row.model,
            tokens: { prompt: row.prompt_tokens, completion: row.completion_tokens },
            cached: row.cached,
            chunks: row.chunks,
            truncated: row.truncated,
          }
        : null,
    );
  };
  return async () => {
    await ai?.close().catch(() => {});
  };
}

// ---------------------------------------------------------------------------------------------
// Insights and webhooks

/** A text-array key that sorts like the composite primary key it stands for. */
const byKey = (a: [string, string], b: [string, string]) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);

/**
 * The insights service's fold of a batch of analysis results, statement for statement: the
 * batch's inbox rows, then (for the events not seen before) the documents locked in key order,
 * new ones inserted and changed ones updated, tenant totals and theme rows upserted in key order,
 * and one `insights.updated` per tenant whose aggregates changed.
 */
async function aggregate(pool: pg.Pool, batch: Envelope[]): Promise<void> {
  const events = batch.filter((e) => e.type === 'analysis.completed' || e.type === 'analysis.failed');
  if (events.length === 0) return;
  await transaction(pool, async (tx, publish) => {
    const { rows: inserted } = await tx.query<{ event_id: string }>(
      `insert into inbox (consumer, event_id) values ${placeholders(events.length, 2)} on conflict do nothing returning event_id`,
      events.flatMap((e) => ['insights', e.id]),
    );
    const fresh = new Set(inserted.map((r) => r.event_id));
    // The same event twice in one batch: the first copy wins.
    const todo = events.filter((e) => fresh.delete(e.id));
    if (todo.length === 0) return;
    type Data = { documentId: string; themes?: { name: string; score: number }[]; completedAt?: string };
    const byDocument = new Map<string, { key: [string, string]; events: Envelope[] }>();
    const lastOfTenant = new Map<string, Envelope>();
    for (const e of todo) {
      lastOfTenant.set(e.tenant, e);
      const key: [string, string] = [e.tenant, (e.data as Data).documentId];
      const id = JSON.stringify(key);
      const entry = byDocument.get(id);
      if (entry) entry.events.push(e);
      else byDocument.set(id, { key, events: [e] });
    }
    const documents = [...byDocument.values()].sort((a, b) => byKey(a.key, b.key));
    const { rows: known } = await tx.query<{ tenant_id: string; document_id: string; status: string }>(
      `select d.tenant_id, d.document_id, d.status from insight_documents d
       join unnest($1::text[], $2::text[]) as k (tenant_id, document_id) using (tenant_id, document_id)
       order by d.tenant_id, d.document_id for update of d`,
      [documents.map((d) => d.key[0]), documents.map((d) => d.key[1])],
    );
    const previous = new Map(known.map((r) => [JSON.stringify([r.tenant_id, r.document_id]), r.status]));
    const now = new Date().toISOString();
    const tenants = new Map<string, { analyzed: number; failed: number }>();
    const themes = new Map<string, { key: [string, string]; count: number; scoreSum: number; lastSeenAt: string }>();
    const created: unknown[] = [];
    const changed: unknown[] = [];
    for (const { key, events: documentEvents } of documents) {
      const before = previous.get(JSON.stringify(key));
      let status = before;
      const counts = tenants.get(key[0]) ?? { analyzed: 0, failed: 0 };
      for (const e of documentEvents) {
        const completed = e.type === 'analysis.completed';
        if (status === 'COMPLETED' || (status === 'FAILED' && !completed)) continue;
        if (completed) {
          const data = e.data as Data;
          counts.analyzed++;
          if (status === 'FAILED') counts.failed--;
          const best = new Map<string, number>();
          for (const theme of data.themes ?? []) {
            const name = theme.name.trim().toLowerCase();
            if (name) best.set(name, Math.max(best.get(name) ?? 0, theme.score));
          }
          for (const [name, score] of best) {
            const themeId = JSON.stringify([key[0], name]);
            const theme = themes.get(themeId) ?? { key: [key[0], name], count: 0, scoreSum: 0, lastSeenAt: data.completedAt! };
            theme.count++;
            theme.scoreSum += score;
            if (data.completedAt! > theme.lastSeenAt) theme.lastSeenAt = data.completedAt!;
            themes.set(themeId, theme);
          }
        } else {
          counts.failed++;
        }
        status = completed ? 'COMPLETED' : 'FAILED';
      }
      tenants.set(key[0], counts);
      if (status === before || status === undefined) continue;
      (before === undefined ? created : changed).push(key[0], key[1], status, now);
    }
    if (created.length > 0) await tx.query(`insert into insight_documents (tenant_id, document_id, status, updated_at) values ${placeholders(created.length / 4, 4)}`, created);
    if (changed.length > 0) {
      await tx.query(
        `update insight_documents d set status = v.status, updated_at = v.updated_at::timestamptz
         from (values ${placeholders(changed.length / 4, 4)}) as v (tenant_id, document_id, status, updated_at)
         where d.tenant_id = v.tenant_id and d.document_id = v.document_id`,
        changed,
      );
    }
    const tenantRows = [...tenants].filter(([, c]) => c.analyzed !== 0 || c.failed !== 0).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (tenantRows.length === 0) return;
    const { rows: totals } = await tx.query<{ tenant_id: string; analyzed: number; failed: number }>(
      `insert into tenant_stats (tenant_id, analyzed, failed)
       select v.tenant_id, v.analyzed::int, v.failed::int from (values ${placeholders(tenantRows.length, 3)}) as v (tenant_id, analyzed, failed) order by v.tenant_id
       on conflict (tenant_id) do update set analyzed = tenant_stats.analyzed + excluded.analyzed, failed = tenant_stats.failed + excluded.failed
       returning tenant_id, analyzed, failed`,
      tenantRows.flatMap(([tenant, c]) => [tenant, c.analyzed, c.failed]),
    );
    const themeRows = [...themes.values()].sort((a, b) => byKey(a.key, b.key));
    if (themeRows.length > 0) {
      await tx.query(
        `insert into theme_stats (tenant_id, name, document_count, score_sum, last_seen_at)
         select v.tenant_id, v.name, v.document_count::int, v.score_sum::double precision, v.last_seen_at::timestamptz
         from (values ${placeholders(themeRows.length, 5)}) as v (tenant_id, name, document_count, score_sum, last_seen_at) order by v.tenant_id, v.name
         on conflict (tenant_id, name) do update set document_count = theme_stats.document_count + excluded.document_count,
           score_sum = theme_stats.score_sum + excluded.score_sum,
           last_seen_at = greatest(theme_stats.last_seen_at, excluded.last_seen_at)`,
        themeRows.flatMap((t) => [t.key[0], t.key[1], t.count, t.scoreSum, t.lastSeenAt]),
      );
    }
    const changedThemes = new Map<string, string[]>();
    for (const { key: [tenant, name] } of themeRows) changedThemes.set(tenant, [...(changedThemes.get(tenant) ?? []), name]);
    const byTenant = new Map(totals.map((r) => [r.tenant_id, r]));
    await publish(
      tenantRows.map(([tenant]) => {
        const row = byTenant.get(tenant)!;
        return event('insights.updated', tenant, { documents: row.analyzed + row.failed, analyzed: row.analyzed, failed: row.failed, themes: changedThemes.get(tenant) ?? [], updatedAt: now });
      }),
    );
  });
}

const webhookEvent: Record<string, string> = { COMPLETED: 'JOB_COMPLETED', FAILED: 'JOB_FAILED' };

/** The webhooks service's fan-out of one `job.updated`. */
async function fanOut(pool: pg.Pool, e: Envelope): Promise<void> {
  const { jobId, documentId, status } = e.data as { jobId: string; documentId: string; status: string };
  const kind = webhookEvent[status];
  if (!kind) return;
  const hooksFor = (client: pg.Pool | pg.PoolClient) => client.query<{ id: string }>('select id from webhooks where tenant_id = $1 and events @> $2::jsonb order by id', [e.tenant, JSON.stringify([kind])]);
  // The service's relevance check, before any transaction: no endpoint for it, acked with no inbox row.
  if ((await hooksFor(pool)).rows.length === 0) return;
  await transaction(pool, async (tx, publish) => {
    if (!(await once(tx, 'webhooks', e.id))) return;
    const { rows: hooks } = await hooksFor(tx);
    if (hooks.length === 0) return;
    const payload = JSON.stringify({ type: kind === 'JOB_COMPLETED' ? 'job.completed' : 'job.failed', timestamp: new Date().toISOString(), data: { jobId, documentId, status } });
    const now = new Date().toISOString();
    const { rows } = await tx.query<{ id: string; webhook_id: string }>(
      `insert into webhook_deliveries (id, tenant_id, webhook_id, event, job_id, payload, status, attempts, created_at, updated_at)
       select v.id::uuid, v.tenant_id, v.webhook_id::uuid, v.event, v.job_id, v.payload, 'PENDING', 0, v.at::timestamptz, v.at::timestamptz
       from (values ${placeholders(hooks.length, 7)}) as v (id, tenant_id, webhook_id, event, job_id, payload, at)
       on conflict (webhook_id, job_id, event) do nothing
       returning id, webhook_id`,
      hooks.flatMap((hook) => [randomUUID(), e.tenant, hook.id, kind, jobId, payload, now]),
    );
    await publish(rows.map((row) => event('webhook.delivery', e.tenant, { deliveryId: row.id, webhookId: row.webhook_id })));
  });
}

// ---------------------------------------------------------------------------------------------
// HTTP

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString()));
    req.on('error', reject);
  });
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

type Route = (url: URL, req: IncomingMessage, res: ServerResponse) => Promise<void>;

async function serve(routes: Record<string, Route>): Promise<() => Promise<void>> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://floor');
    const route = routes[url.pathname];
    if (url.pathname === '/ready') return json(res, 200, { ready: true });
    if (!route) return json(res, 404, { error: 'not found' });
    route(url, req, res).catch((error: unknown) => json(res, 500, { error: (error as Error).message }));
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve) => server.listen(PORT, '127.0.0.1', resolve));
  return () => new Promise((resolve) => server.close(() => resolve()));
}

async function subgraph(pool: pg.Pool): Promise<Array<() => Promise<void>>> {
  await pool.query(OUTBOX_SCHEMA);
  await pool.query(SCHEMAS[ROLE]!);
  const amqp = await connectAmqp(AMQP_URL);
  const confirm = await amqp.createConfirmChannel();
  await confirm.assertExchange(EXCHANGE, 'topic', { durable: true });
  const channel = await amqp.createChannel();
  direct = confirm;
  const stops: Array<() => Promise<void>> = [await startRelay(confirm)];
  const routes: Record<string, Route> = {};

  if (ROLE === 'documents') {
    routes['/upload'] = async (_url, req, res) => {
      const input = JSON.parse(await readBody(req)) as { tenant: string; title: string; content: string };
      const id = randomUUID();
      const jobId = randomUUID();
      await transaction(pool, async (tx, publish) => {
        await tx.query('insert into documents (id, job_id, tenant_id, title, content, created_at) values ($1, $2, $3, $4, $5, now())', [id, jobId, input.tenant, input.title, input.content]);
        await publish([event('document.uploaded', input.tenant, { documentId: id, jobId, title: input.title, text: input.content })]);
      });
      json(res, 200, { id, jobId });
    };
    routes['/job'] = async (url, _req, res) => {
      const { rows } = await pool.query('select id, title, job_id, created_at from documents where job_id = $1 and tenant_id = $2', [url.searchParams.get('id'), url.searchParams.get('tenant')]);
      json(res, rows[0] ? 200 : 404, rows[0] ?? { error: 'NOT_FOUND' });
    };
  }

  if (ROLE === 'analysis') stops.push(await analysisRole(pool, channel, routes));

  if (ROLE === 'jobs') {
    const statusOf: Record<string, string> = { 'document.uploaded': 'QUEUED', 'analysis.started': 'RUNNING', 'analysis.completed': 'COMPLETED', 'analysis.failed': 'FAILED' };
    // A later status never goes back: QUEUED < RUNNING < COMPLETED or FAILED.
    const rank = (column: string) => `(case ${column} when 'QUEUED' then 0 when 'RUNNING' then 1 else 2 end)`;
    await consume(channel, 'jobs', Object.keys(statusOf), async (e) => {
      const { documentId, jobId, error } = e.data as { documentId: string; jobId: string; error?: { code: string } };
      const status = statusOf[e.type]!;
      await transaction(pool, async (tx, publish) => {
        if (!(await once(tx, 'jobs', e.id))) return;
        const { rows } = await tx.query<{ status: string }>(
          `insert into jobs (id, tenant_id, document_id, status, error_code, updated_at) values ($1, $2, $3, $4, $5, now())
           on conflict (id) do update set status = excluded.status, error_code = excluded.error_code, updated_at = now()
           where ${rank('jobs.status')} < ${rank('excluded.status')}
           returning status`,
          [jobId, e.tenant, documentId, status, error?.code ?? null],
        );
        if (!rows[0]) return;
        await publish([event('job.updated', e.tenant, { jobId, documentId, status })]);
      });
    });
    routes['/job'] = async (url, _req, res) => {
      const { rows } = await pool.query('select id, status, error_code from jobs where id = $1 and tenant_id = $2', [url.searchParams.get('id'), url.searchParams.get('tenant')]);
      json(res, 200, rows[0] ?? null);
    };
  }

  if (ROLE === 'insights') await consumeBatches(channel, 'insights', ['analysis.completed', 'analysis.failed'], (events) => aggregate(pool, events));

  if (ROLE === 'webhooks') await consume(channel, 'webhooks', ['job.updated'], (e) => fanOut(pool, e), false, 200);

  stops.push(await serve(routes));
  stops.push(async () => {
    await amqp.close().catch(() => {});
  });
  return stops;
}

async function gateway(): Promise<Array<() => Promise<void>>> {
  const agent = new Agent({ keepAliveTimeout: 30_000 });
  const urls = { documents: process.env.FLOOR_DOCUMENTS_URL!, jobs: process.env.FLOOR_JOBS_URL!, analysis: process.env.FLOOR_ANALYSIS_URL! };
  const get = async <T>(url: string): Promise<{ status: number; body: T }> => {
    const response = await request(url, { dispatcher: agent });
    return { status: response.statusCode, body: (await response.body.json()) as T };
  };
  const tenant = 'bench';
  const terminal = (status: string) => status === 'COMPLETED' || status === 'FAILED';
  /** The client's selection, as the query plan reads it: documents' job(id), jobs' status, analysis'. */
  const read = async (jobId: string) => {
    const doc = await get<{ id: string; title: string }>(`${urls.documents}/job?id=${jobId}&tenant=${tenant}`);
    if (doc.status === 404) return null;
    const job = await get<{ status: string; error_code: string | null } | null>(`${urls.jobs}/job?id=${jobId}&tenant=${tenant}`);
    const status = job.body?.status ?? 'QUEUED';
    if (!terminal(status)) return { status };
    const analysis = await get<Record<string, unknown> | null>(`${urls.analysis}/analysis?documentId=${doc.body.id}&tenant=${tenant}`);
    return { status, error: job.body?.error_code ? { code: job.body.error_code } : null, document: { analysis: analysis.body } };
  };
  const listeners = new Map<string, Array<{ socket: WebSocket; id: string }>>();
  const send = (socket: WebSocket, message: unknown) => socket.send(JSON.stringify(message));
  const finish = (jobId: string, data: unknown) => {
    for (const { socket, id } of listeners.get(jobId) ?? []) {
      send(socket, { id, type: 'next', payload: { data: { jobCompleted: data } } });
      send(socket, { id, type: 'complete' });
    }
    listeners.delete(jobId);
  };

  const amqp = await connectAmqp(AMQP_URL);
  const channel = await amqp.createChannel();
  await channel.assertExchange(EXCHANGE, 'topic', { durable: true });
  // What the system's gateway binds: its subscriptions' events (jobCompleted, documentAnalyzed, statsUpdated).
  await consume(
    channel,
    `gateway-${randomUUID()}`,
    ['job.updated', 'analysis.completed', 'insights.updated'],
    async (e) => {
      if (e.type !== 'job.updated') return;
      const { jobId, status } = e.data as { jobId: string; status: string };
      if (!terminal(status) || !listeners.has(jobId)) return;
      const data = await read(jobId);
      if (data) finish(jobId, data);
    },
    true,
  );

  const server = createServer((req, res) => {
    if (req.url === '/ready') return json(res, 200, { ready: true });
    void (async () => {
      const body = JSON.parse(await readBody(req)) as { variables: { input: { title: string; content: string } } };
      const response = await request(`${urls.documents}/upload`, { method: 'POST', dispatcher: agent, body: JSON.stringify({ tenant, ...body.variables.input }) });
      const uploaded = (await response.body.json()) as { jobId: string };
      json(res, 200, { data: { uploadDocument: { job: { id: uploaded.jobId } } } });
    })().catch((error: unknown) => json(res, 500, { errors: [{ message: (error as Error).message }] }));
  });
  const wss = new WebSocketServer({ server, path: '/graphql', handleProtocols: () => 'graphql-transport-ws' });
  wss.on('connection', (socket) => {
    socket.on('message', (raw) => {
      const message = JSON.parse(raw.toString()) as { type: string; id?: string; payload?: { variables?: { id?: string } } };
      if (message.type === 'connection_init') return send(socket, { type: 'connection_ack' });
      if (message.type === 'ping') return send(socket, { type: 'pong' });
      if (message.type !== 'subscribe' || !message.id) return;
      const jobId = message.payload?.variables?.id ?? '';
      const id = message.id;
      const mine = listeners.get(jobId) ?? [];
      mine.push({ socket, id });
      listeners.set(jobId, mine);
      // The first read: unknown → NOT_FOUND at once; already done → its one message now.
      void read(jobId).then((data) => {
        if (!data) {
          listeners.delete(jobId);
          send(socket, { id, type: 'error', payload: [{ message: 'not found', extensions: { code: 'NOT_FOUND' } }] });
        } else if (terminal(data.status)) finish(jobId, data);
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(PORT, '127.0.0.1', resolve));
  return [
    // The server closes once every socket has: a client's graphql-ws socket left open would hold it.
    () => new Promise((resolve) => (wss.clients.forEach((socket) => socket.terminate()), wss.close(), server.close(() => resolve()))),
    async () => {
      await amqp.close().catch(() => {});
      await agent.close();
    },
  ];
}

// The run's database, created as the services create theirs (set-up only, not measured).
if (DATABASE_URL) await ensureDatabase(DATABASE_URL, new URL(DATABASE_URL).pathname.slice(1));
const pool = DATABASE_URL ? new pg.Pool({ connectionString: DATABASE_URL, max: 10 }) : undefined;
const stops = ROLE === 'gateway' ? await gateway() : await subgraph(pool!);
process.once('SIGTERM', () => {
  void (async () => {
    for (const stop of stops) await stop().catch(() => {});
    await pool?.end().catch(() => {});
    process.exit(0);
  })();
});
