/**
 * Resumable subscriptions as deployed (issue 29, item 4): every service and two gateways as
 * processes on PostgreSQL and RabbitMQ, the event log a RabbitMQ stream. A client of
 * `documentAnalyzed` receives its messages through gateway 0, keeps the last cursor and goes; that
 * gateway is restarted (stopped with SIGTERM, a new process started) while 20 more documents are
 * uploaded through gateway 1 and analysed; the client subscribes again through the new gateway
 * process with its cursor and receives exactly those 20, in the order they were analysed, then
 * live ones. The analysis runs one document at a time
 * (ANALYSIS_CONCURRENCY=1), so that order is the upload order. A cursor this system did not issue
 * is CURSOR_INVALID; CURSOR_EXPIRED (a cursor the log no longer keeps) is shown on the array log
 * in gateway/test/resume.test.ts, the stream's own expiry by core's log contract suite.
 */
import { freePort, servicesAvailable, stopProcesses, TEST_AMQP_URL, waitFor } from '@tributary/core/testing';
import { gatewaySubgraphUrls } from '@tributary/embedded/urls';
import { createClient, type Client } from 'graphql-ws';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startProcessSystem, TEST_SECRETS, type TestSystem } from './fixtures/system.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { id } } }';
const ANALYSED = 'subscription { documentAnalyzed { id title } }';
const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Message {
  data?: { documentAnalyzed?: { id: string; title: string } } | null;
  errors?: { message: string; extensions?: { code?: string } }[];
  extensions?: { cursor?: string };
}

/** Subscribe and keep every message; `titles()` of the documents, in order. */
function watch(client: Client, payload: { query: string; extensions?: { after: unknown } }) {
  const messages: Message[] = [];
  let ended: unknown;
  let stop = () => {};
  const done = new Promise<void>((resolve, reject) => {
    stop = client.subscribe(payload, {
      next: (m) => void messages.push(m as Message),
      error: (e) => {
        ended = e;
        reject(e);
      },
      complete: () => {
        ended = 'complete';
        resolve();
      },
    });
  });
  done.catch(() => {});
  return {
    messages,
    done,
    stop: () => stop(),
    titles: () => messages.map((m) => m.data?.documentAnalyzed?.title),
    until: async (n: number, timeoutMs = 60_000) => {
      const deadline = Date.now() + timeoutMs;
      while (messages.length < n) {
        if (ended !== undefined) throw new Error(`the stream ended after ${messages.length} messages: ${JSON.stringify(ended)}`);
        if (Date.now() > deadline) throw new Error(`${messages.length} messages, not ${n}, after ${timeoutMs} ms`);
        await sleep(50);
      }
    },
  };
}

/** A gateway process of the system's namespace, as startProcessSystem starts them: the restarted gateway. */
async function startGatewayProcess(system: TestSystem): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const env = {
    ...process.env,
    NODE_ENV: 'test',
    LOG_LEVEL: 'warn',
    AMQP_URL: TEST_AMQP_URL,
    TRIBUTARY_NAMESPACE: system.namespace!,
    AUTH_JWT_SECRET: TEST_SECRETS.auth,
    INTERNAL_SIGNING_SECRET: TEST_SECRETS.internal,
    ...gatewaySubgraphUrls(system.subgraphs),
    PORT: String(port),
  };
  const child = spawn(process.execPath, ['--import', 'tsx', 'gateway/src/main.ts'], { cwd: root, env, stdio: ['ignore', 'ignore', 'inherit'] });
  const url = `http://127.0.0.1:${port}/graphql`;
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`the gateway exited with code ${child.exitCode}`);
      return (await fetch(new URL('/ready', url)).catch(() => undefined))?.status === 200;
    },
    60_000,
    'the restarted gateway to be ready',
  );
  return { url, child };
}

describe.skipIf(!(await servicesAvailable()))('resuming documentAnalyzed from its cursor, as deployed', () => {
  let system: TestSystem;
  let restarted: { url: string; child: ChildProcess } | undefined;

  beforeAll(async () => {
    system = await startProcessSystem({ gatewayCount: 2, serviceEnv: { ANALYSIS_CONCURRENCY: '1' } });
  }, 240_000);
  afterAll(async () => {
    if (restarted) await stopProcesses([restarted.child]);
    await system?.stop();
  }, 60_000);

  /** Upload through `gateway`, one after the other; the documents' ids. */
  const upload = async (titles: string[], gateway: number) => {
    const ids: string[] = [];
    for (const title of titles) {
      const response = await system.query(UPLOAD, { input: { title, content: `${title}: revenue grew in the north while costs fell.` } }, { gateway });
      expect(response.errors).toBeUndefined();
      ids.push(response.data.uploadDocument.document.id as string);
    }
    return ids;
  };
  /** Until every one of these documents has its analysis, read through `gateway`. */
  const analysed = async (ids: string[], gateway: number) => {
    for (const id of ids) {
      for (let i = 0; ; i++) {
        const response = await system.query('query($id: ID!) { document(id: $id) { analysis { summary } } }', { id }, { gateway });
        if (response.data?.document?.analysis) break;
        if (i > 600) throw new Error(`document ${id} not analysed`);
        await sleep(100);
      }
    }
  };

  it('receives exactly the 20 documents analysed while it was away and its gateway restarted, in order, then live ones', async () => {
    const client = system.ws({ gateway: 0 });
    const first = watch(client, { query: ANALYSED });
    // The stream listens once graphql-ws has subscribed: upload until a message shows it does.
    const warmUp: string[] = [];
    while (first.messages.length === 0) {
      warmUp.push(...(await upload([`Warm-up ${warmUp.length}`], 0)));
      await analysed(warmUp.slice(-1), 0);
      await sleep(200);
    }
    const before = await upload(Array.from({ length: 9 }, (_, n) => `Before ${n}`), 0);
    await analysed(before, 0);
    await first.until(10);
    expect(first.titles().slice(-9)).toEqual(Array.from({ length: 9 }, (_, n) => `Before ${n}`));
    expect(first.messages.every((m) => typeof m.extensions?.cursor === 'string')).toBe(true);
    const cursor = first.messages.at(-1)!.extensions!.cursor!;
    first.stop();
    await client.dispose();

    // Its gateway is restarted while 20 documents are uploaded (through the other one) and analysed.
    const pid = system.pids!['gateway 0']!;
    process.kill(pid, 'SIGTERM');
    const uploading = upload(Array.from({ length: 20 }, (_, n) => `Missed ${n}`), 1);
    await waitFor(async () => !isAlive(pid), 30_000, 'gateway 0 to stop');
    restarted = await startGatewayProcess(system);
    const missed = await uploading;
    await analysed(missed, 1);

    const token = await system.token();
    const resumedClient = createClient({ url: restarted.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0, connectionParams: { authorization: `Bearer ${token}` } });
    const resumed = watch(resumedClient, { query: ANALYSED, extensions: { after: cursor } });
    await resumed.until(20);
    expect(resumed.titles()).toEqual(Array.from({ length: 20 }, (_, n) => `Missed ${n}`));
    expect(resumed.messages.map((m) => m.data?.documentAnalyzed?.id)).toEqual(missed);
    await upload(['Live 0', 'Live 1', 'Live 2'], 1);
    await resumed.until(23);
    expect(resumed.titles().slice(20)).toEqual(['Live 0', 'Live 1', 'Live 2']);
    await sleep(500);
    expect(resumed.messages).toHaveLength(23);
    await resumedClient.dispose();
  }, 240_000);

  it('refuses a cursor it did not issue with CURSOR_INVALID and completes', async () => {
    const refused = watch(system.ws({ gateway: 1 }), { query: ANALYSED, extensions: { after: 'bm90LWEtY3Vyc29y' } });
    await refused.done;
    expect(refused.messages.map((m) => m.errors?.[0]?.extensions?.code)).toEqual(['CURSOR_INVALID']);
  }, 60_000);
});
