/**
 * The hand-written floor of the pipeline as deployed: `bench:deployed`'s `floor` mode starts this
 * file as four processes (FLOOR_ROLE = documents, analysis, jobs, gateway) in place of the system,
 * and puts the same open-loop load through it. It is the same design with nothing of ours in it:
 * raw pg and amqplib, node:http and ws, no GraphQL, no ORM, no validation, no tracing, no auth.
 * What it keeps are the guarantees and the hops, statement for statement:
 *   - documents: the upload and its `document.uploaded` in one transaction (outbox); a relay that
 *     wakes on the commit's NOTIFY, claims rows `for update skip locked` (`begin` and the claim in
 *     one round trip), publishes them with publisher confirms and commits after the confirm;
 *   - analysis: a claim transaction (the lease row, `analysis.started`), the analysis with no
 *     transaction open, a settling transaction (result, inbox row, `analysis.completed`). With
 *     OPENAI_BASE_URL set (bench:ai's provider), the analysis is one chat completion over plain
 *     HTTP, at most ANALYSIS_CONCURRENCY at once, with twice as many documents taken from the
 *     queue and claimed while they wait for a call, as the analysis service does;
 *   - jobs: each event in a transaction with its inbox row, the view row and `job.updated`;
 *   - gateway: one exclusive queue for `job.updated`; a subscription's first read, and on the
 *     terminal event the read of the client's selection, as the query plan makes it (documents'
 *     `job(id)`, then jobs' status, then analysis'), each an HTTP call to a process; the answer on
 *     a graphql-ws socket (the subprotocol's few messages, by hand).
 * Queues are quorum queues on the run's exchange, as the services declare theirs. So the gap
 * from this floor to the system is what Tributary's layers add, and the floor itself is what this
 * machine allows whoever writes it.
 */
import { ensureDatabase } from '@tributary/core/db';
import { type Channel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import pLimit from 'p-limit';
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import pg from 'pg';
import { Agent, request } from 'undici';
import { WebSocketServer, type WebSocket } from 'ws';
import { connectAmqp, startFloorRelay, publishWithConfirms, type FloorOutboxRow } from './floor-relay.ts';
import { inTransaction } from './pg.ts';

const ROLE = process.env.FLOOR_ROLE as 'documents' | 'analysis' | 'jobs' | 'gateway';
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
/** bench:ai's OpenAI-compatible provider, read from the services' own settings; none: the offline analysis. */
const AI = process.env.OPENAI_BASE_URL
  ? { url: `${process.env.OPENAI_BASE_URL}/chat/completions`, key: process.env.OPENAI_API_KEY ?? '', model: process.env.AI_MODEL ?? 'gpt-4o-mini', calls: Number(process.env.ANALYSIS_CONCURRENCY ?? 32) }
  : undefined;

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

const SCHEMAS: Record<string, string> = {
  documents: `create table if not exists documents (id uuid primary key, job_id uuid not null unique, tenant_id text not null, title text not null,
    content text not null, created_at timestamptz not null)`,
  analysis: `create table if not exists analyses (document_id uuid primary key, job_id uuid not null, tenant_id text not null, status text not null,
    attempts int not null, lease_token uuid, lease_expires_at timestamptz, summary text, updated_at timestamptz not null)`,
  jobs: `create table if not exists jobs (id uuid primary key, tenant_id text not null, document_id uuid not null, status text not null,
    updated_at timestamptz not null)`,
};

function outboxInsert(events: Envelope[]): { text: string; values: string[] } {
  const values: string[] = [];
  const rows = events.map((e, i) => {
    values.push(e.id, e.type, JSON.stringify(e));
    return `($${i * 3 + 1}, $${i * 3 + 2}, $${i * 3 + 3})`;
  });
  return { text: `insert into outbox (event_id, type, payload) values ${rows.join(', ')} returning id, event_id, type, payload`, values };
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
      const insert = outboxInsert(events);
      written.push(...(await client.query<FloorOutboxRow>(insert.text, insert.values)).rows);
    }),
  );
  if (DISPATCH === 'direct' && written.length > 0) void dispatch(pool, written);
  return result;
}

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

async function consume(channel: Channel, name: string, keys: string[], handle: (e: Envelope) => Promise<void>, exclusive = false, prefetch = 64): Promise<void> {
  const queue = `${NAMESPACE}.floor.${name}`;
  await channel.assertQueue(queue, exclusive ? { exclusive: true, autoDelete: true } : { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  for (const key of keys) await channel.bindQueue(queue, EXCHANGE, key);
  await channel.prefetch(prefetch);
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

/** The analysis as one chat completion to bench:ai's provider: its reply is the summary. */
function chatAnalysis(ai: NonNullable<typeof AI>): (text: string) => Promise<string> {
  const agent = new Agent({ keepAliveTimeout: 30_000 });
  // The same call slots as the analysis service's (p-limit, first come first served).
  const slot = pLimit(ai.calls);
  return (text) =>
    slot(async () => {
      const response = await request(ai.url, {
        method: 'POST',
        dispatcher: agent,
        headers: { authorization: `Bearer ${ai.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: ai.model, messages: [{ role: 'user', content: text }] }),
      });
      const body = (await response.body.json()) as { choices?: Array<{ message?: { content?: string } }> };
      if (response.statusCode !== 200) throw new Error(`chat completion: HTTP ${response.statusCode}`);
      return body.choices?.[0]?.message?.content ?? '';
    });
}

/** Each event once: its inbox row in the transaction of its effect. */
async function once(client: pg.PoolClient, consumer: string, id: string): Promise<boolean> {
  const { rowCount } = await client.query('insert into inbox (consumer, event_id) values ($1, $2) on conflict do nothing', [consumer, id]);
  return rowCount === 1;
}

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

  if (ROLE === 'analysis') {
    const chat = AI ? chatAnalysis(AI) : undefined;
    await consume(channel, 'analysis', ['document.uploaded'], async (e) => {
      const { documentId, jobId, text } = e.data as { documentId: string; jobId: string; text: string };
      const token = randomUUID();
      const claimed = await transaction(pool, async (tx, publish) => {
        const { rows } = await tx.query<{ attempts: number }>(
          `insert into analyses (document_id, job_id, tenant_id, status, attempts, lease_token, lease_expires_at, updated_at)
           values ($1, $2, $3, 'RUNNING', 1, $4, now() + interval '30 seconds', now())
           on conflict (document_id) do update set attempts = analyses.attempts + 1, lease_token = excluded.lease_token, lease_expires_at = excluded.lease_expires_at
           where analyses.status = 'RUNNING' and analyses.lease_expires_at <= now() returning attempts`,
          [documentId, jobId, e.tenant, token],
        );
        if (!rows[0]) return false;
        await publish([event('analysis.started', e.tenant, { documentId, jobId, attempt: rows[0].attempts })]);
        return true;
      });
      if (!claimed) return;
      // The offline analysis, in the floor's terms: the words counted; or the provider's answer.
      const words = text.split(/\s+/).filter(Boolean);
      let summary = words.slice(0, 12).join(' ');
      if (chat) {
        try {
          summary = await chat(text);
        } catch (error) {
          // The lease given back, so the redelivery claims at once.
          await pool.query('update analyses set lease_expires_at = now() where document_id = $1 and lease_token = $2', [documentId, token]);
          throw error;
        }
      }
      await transaction(pool, async (tx, publish) => {
        const { rowCount } = await tx.query(`update analyses set status = 'COMPLETED', summary = $1, updated_at = now() where document_id = $2 and lease_token = $3`, [summary, documentId, token]);
        if (rowCount !== 1 || !(await once(tx, 'analysis', e.id))) return;
        await publish([event('analysis.completed', e.tenant, { documentId, jobId, words: words.length })]);
      });
    }, false, AI ? AI.calls * 2 : 64);
    routes['/analysis'] = async (url, _req, res) => {
      const { rows } = await pool.query('select summary, status from analyses where document_id = $1 and tenant_id = $2', [url.searchParams.get('documentId'), url.searchParams.get('tenant')]);
      json(res, 200, rows[0] ?? null);
    };
  }

  if (ROLE === 'jobs') {
    const statusOf: Record<string, string> = { 'document.uploaded': 'QUEUED', 'analysis.started': 'RUNNING', 'analysis.completed': 'COMPLETED' };
    await consume(channel, 'jobs', Object.keys(statusOf), async (e) => {
      const { documentId, jobId } = e.data as { documentId: string; jobId: string };
      const status = statusOf[e.type]!;
      await transaction(pool, async (tx, publish) => {
        if (!(await once(tx, 'jobs', e.id))) return;
        // A later status never goes back: QUEUED < RUNNING < COMPLETED.
        const { rows } = await tx.query<{ status: string }>(
          `insert into jobs (id, tenant_id, document_id, status, updated_at) values ($1, $2, $3, $4, now())
           on conflict (id) do update set status = excluded.status, updated_at = now()
           where array_position(array['QUEUED','RUNNING','COMPLETED'], jobs.status) < array_position(array['QUEUED','RUNNING','COMPLETED'], excluded.status)
           returning status`,
          [jobId, e.tenant, documentId, status],
        );
        if (!rows[0]) return;
        await publish([event('job.updated', e.tenant, { jobId, documentId, status })]);
      });
    });
    routes['/job'] = async (url, _req, res) => {
      const { rows } = await pool.query('select id, status from jobs where id = $1 and tenant_id = $2', [url.searchParams.get('id'), url.searchParams.get('tenant')]);
      json(res, 200, rows[0] ?? null);
    };
  }

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
  /** The client's selection, as the query plan reads it: documents' job(id), jobs' status, analysis'. */
  const read = async (jobId: string) => {
    const doc = await get<{ id: string; title: string }>(`${urls.documents}/job?id=${jobId}&tenant=${tenant}`);
    if (doc.status === 404) return null;
    const job = await get<{ status: string } | null>(`${urls.jobs}/job?id=${jobId}&tenant=${tenant}`);
    const status = job.body?.status ?? 'QUEUED';
    if (status !== 'COMPLETED') return { status };
    const analysis = await get<{ summary: string } | null>(`${urls.analysis}/analysis?documentId=${doc.body.id}&tenant=${tenant}`);
    return { status, document: { analysis: analysis.body ? { summary: analysis.body.summary } : null } };
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
  await consume(
    channel,
    `gateway-${randomUUID()}`,
    ['job.updated'],
    async (e) => {
      const { jobId, status } = e.data as { jobId: string; status: string };
      if (status !== 'COMPLETED' || !listeners.has(jobId)) return;
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
        } else if (data.status === 'COMPLETED') finish(jobId, data);
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(PORT, '127.0.0.1', resolve));
  return [
    () => new Promise((resolve) => (wss.close(), server.close(() => resolve()))),
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
