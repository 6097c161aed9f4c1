/**
 * Issue 29's late joiner: a Tier-2 subgraph (the wordcount fixture, a per-tenant keyword count fed
 * by `analysis.completed`) is started after 500 documents were analysed. Its consumer starts from
 * the event log's beginning: once caught up it holds exactly the view computed from those
 * documents' analyses (read through the gateway, not from the events), it keeps up with 20 more
 * uploads made while it catches up, and no event is applied twice (handler calls per event,
 * inbox rows and applied count all equal the analyses).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropDatabase } from '@tributary/core/db';
import { namespacedDatabaseName, namespacedDatabaseUrl, servicesAvailable, TEST_AMQP_URL, TEST_DATABASE_URL, waitFor } from '@tributary/core/testing';
import { startService, type RunningService } from '@tributary/core/service';
import { startEmbeddedSystem, TEST_SECRETS, type TestSystem } from './fixtures/system.ts';
import { wordcountService, wordcountView, type WordcountProbe } from './fixtures/wordcount.ts';

const UPLOAD = 'mutation Upload($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { id } } }';
const DOCUMENTS = 'query Docs($after: String) { documents(first: 100, after: $after) { edges { node { id analysis { keywords } } } pageInfo { hasNextPage endCursor } } }';
const VOCABULARY = ['solar', 'wind', 'battery', 'grid', 'storage', 'turbine', 'carbon', 'hydrogen', 'nuclear', 'tariff', 'subsidy', 'transmission', 'demand', 'forecast', 'outage', 'capacity'];

/** A text whose frequent words (what the offline analyzer keeps as keywords) vary from document to document. */
function text(i: number): string {
  const pick = (k: number) => VOCABULARY[(i * 7 + k * 3) % VOCABULARY.length]!;
  const words = [pick(0), pick(0), pick(0), pick(1), pick(1), pick(2)];
  return `Report ${i}. ${words.join(' ')} markets moved. The ${pick(0)} outlook and ${pick(1)} plans were discussed, with ${pick(2)} in view.`;
}

async function uploadMany(system: TestSystem, token: string, from: number, count: number): Promise<void> {
  const indexes = Array.from({ length: count }, (_, k) => from + k);
  // 20 at a time: enough to keep the pipeline busy, not so many that the gateway queues them all.
  for (let i = 0; i < indexes.length; i += 20) {
    await Promise.all(
      indexes.slice(i, i + 20).map(async (n) => {
        const response = await system.query(UPLOAD, { input: { title: `Doc ${n}`, content: text(n) } }, { token });
        if (response.errors) throw new Error(JSON.stringify(response.errors));
      }),
    );
  }
}

/** The view the wordcount should hold, computed from the analyses the gateway serves. */
async function expectedView(system: TestSystem, token: string): Promise<{ keywords: Record<string, number>; documents: number }> {
  const keywords: Record<string, number> = {};
  let documents = 0;
  let after: string | null = null;
  do {
    const page: any = await system.query(DOCUMENTS, { after }, { token });
    if (page.errors) throw new Error(JSON.stringify(page.errors));
    for (const { node } of page.data.documents.edges) {
      if (!node.analysis) continue;
      documents++;
      for (const word of new Set<string>(node.analysis.keywords.map((k: string) => k.toLowerCase()))) keywords[word] = (keywords[word] ?? 0) + 1;
    }
    after = page.data.documents.pageInfo.hasNextPage ? page.data.documents.pageInfo.endCursor : null;
  } while (after);
  return { keywords: Object.fromEntries(Object.entries(keywords).sort(([a], [b]) => (a < b ? -1 : 1))), documents };
}

const available = await servicesAvailable();

const modes: [string, boolean][] = [
  ['embedded defaults (pnpm dev)', false],
  ['PostgreSQL and RabbitMQ', true],
];

describe.skipIf(!available).each(modes)('a Tier-2 subgraph added after the fact, %s', (_name, realServices) => {
  let system: Awaited<ReturnType<typeof startEmbeddedSystem>>;
  let wordcount: RunningService | undefined;
  const probe: WordcountProbe = { calls: new Map(), applied: 0 };
  const tenant = `late-${randomUUID()}`;
  let token: string;

  beforeAll(async () => {
    system = await startEmbeddedSystem({ realServices });
    token = await system.token({ tenant });
  }, 120_000);
  afterAll(async () => {
    await wordcount?.stop();
    await system?.stop();
    if (system?.namespace) await dropDatabase(TEST_DATABASE_URL, namespacedDatabaseName(system.namespace, 'wordcount')).catch(() => {});
  }, 60_000);

  it('builds its view from the 500 analyses before it, keeps up with 20 more, and applies each event once', async () => {
    const analysed = async () => {
      const stats = (await system.query('{ stats { analyzed failed } }', {}, { token })).data?.stats;
      return (stats?.analyzed ?? 0) + (stats?.failed ?? 0);
    };
    await uploadMany(system, token, 0, 500);
    await waitFor(async () => (await analysed()) === 500, 120_000, '500 documents analysed');

    const env: Record<string, string> = system.namespace
      ? { AMQP_URL: TEST_AMQP_URL, TRIBUTARY_NAMESPACE: system.namespace, WORDCOUNT_DATABASE_URL: namespacedDatabaseUrl(TEST_DATABASE_URL, system.namespace, 'wordcount') }
      : { TRIBUTARY_DATA_DIR: 'memory://' };
    // The embedded system's services share one in-memory bus (and its log); on RabbitMQ the fixture has its own connection.
    const shared = system.namespace ? {} : { transport: system.services[0]!.transport };
    wordcount = await startService(wordcountService(probe), { env: { LOG_LEVEL: 'silent', INTERNAL_SIGNING_SECRET: TEST_SECRETS.internal, ...env }, port: 0, ...shared });
    // 20 more while it reads the history: some reach both the log it reads and its queue.
    const more = uploadMany(system, token, 500, 20);
    await wordcount.consumers[0]!.caughtUp();
    await more;
    await waitFor(async () => (await analysed()) === 520, 60_000, '520 documents analysed');
    const expected = await expectedView(system, token);
    expect(expected.documents).toBeGreaterThan(500);
    await waitFor(async () => (await wordcountView(wordcount!.db.fork(), tenant)).documents === expected.documents, 60_000, 'the wordcount to catch up');

    expect(await wordcountView(wordcount.db.fork(), tenant)).toEqual(expected);
    // Each analysis.completed applied once: one handler call per event, one inbox row, the applied count.
    const [inbox] = await wordcount.db.fork().execute<{ n: string }[]>("select count(*) as n from tributary_inbox where consumer = 'wordcount.keywords'");
    expect(probe.calls.size).toBe(expected.documents);
    expect([...probe.calls.values()].filter((n) => n !== 1)).toEqual([]);
    expect(Number(inbox!.n)).toBe(expected.documents);
    expect(probe.applied).toBe(expected.documents);
  });
});
