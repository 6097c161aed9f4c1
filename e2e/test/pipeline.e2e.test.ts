import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { servicesAvailable, waitFor } from '@tributary/core/testing';
import { setTimeout as sleep } from 'node:timers/promises';
import { collect, deployedBrokers, startEmbeddedSystem, startProcessSystem, type GraphQLResponse, type TestSystem } from './fixtures/system.ts';

const UPLOAD = `mutation Upload($input: UploadDocumentInput!) {
  uploadDocument(input: $input) { document { id title } job { id status attempts createdAt } }
}`;
const JOB_COMPLETED = `subscription Done($jobId: ID!) {
  jobCompleted(jobId: $jobId) {
    id status error { code message }
    document { title analysis { summary themes { name score } } }
  }
}`;
const TEXT =
  'Renewable energy investment grew strongly this year. Solar and wind projects delivered record capacity, ' +
  'while battery storage costs fell again. Analysts expect renewable energy to dominate new power generation. ' +
  'Grid operators still worry about storage and transmission bottlenecks.';

async function upload(system: TestSystem, title = 'Energy report', content = TEXT, gateway = 0) {
  const response = await system.query<{ uploadDocument: { document: { id: string }; job: { id: string; status: string } } }>(UPLOAD, { input: { title, content } }, { gateway });
  expect(response.errors).toBeUndefined();
  return response.data!.uploadDocument;
}

const modes: [string, () => Promise<TestSystem>][] = [
  ['embedded defaults (pnpm dev)', () => startEmbeddedSystem()],
];
const available = await servicesAvailable();
if (available) for (const broker of await deployedBrokers()) modes.push([`separate processes on PostgreSQL and ${broker.name}`, () => startProcessSystem({ eventBusUrl: broker.url })]);

describe.skipIf(!available).each(modes)('the pipeline, %s', (_name, start) => {
  let system: TestSystem;
  beforeAll(async () => {
    system = await start();
  }, 120_000);
  afterAll(async () => {
    await system?.stop();
  }, 60_000);

  it('answers an upload at once with a QUEUED job, then streams jobCompleted with the analysis resolved across subgraphs', async () => {
    const { document, job } = await upload(system);
    expect(job.status).toBe('QUEUED');
    const messages = await collect(system.ws(), JOB_COMPLETED, { jobId: job.id });
    expect(messages).toHaveLength(1);
    const completed = messages[0]!.data!.jobCompleted;
    expect(messages[0]!.errors).toBeUndefined();
    expect(completed).toMatchObject({ id: job.id, status: 'COMPLETED', error: null, document: { title: 'Energy report' } });
    expect(completed.document.analysis.summary.length).toBeGreaterThan(0);
    expect(completed.document.analysis.themes.length).toBeGreaterThan(0);
    for (const theme of completed.document.analysis.themes) expect(theme.score).toBeGreaterThanOrEqual(0);

    // The aggregates follow from the same event (their own consumer, so poll briefly).
    await waitFor(async () => ((await system.query('{ stats { analyzed } }')).data?.stats.analyzed ?? 0) >= 1, 10_000, 'insights to count it');
    const insights = await system.query('{ stats { documents analyzed failed } themes(first: 5) { name documentCount averageScore lastSeenAt } }');
    expect(insights.data.stats.analyzed).toBeGreaterThanOrEqual(1);
    expect(insights.data.themes.length).toBeGreaterThan(0);
    const themeNames = completed.document.analysis.themes.map((t: { name: string }) => t.name.toLowerCase());
    expect(insights.data.themes.some((t: { name: string }) => themeNames.includes(t.name))).toBe(true);

    const read = await system.query('query($id: ID!) { document(id: $id) { title content job { status attempts completedAt } analysis { sentiment { label score } keywords provider model tokens { prompt completion } } } }', { id: document.id });
    expect(read.data.document.content).toBe(TEXT);
    expect(read.data.document.job).toMatchObject({ status: 'COMPLETED', attempts: 1 });
    expect(read.data.document.analysis.provider).toBe('offline');
  });

  it('sends jobCompleted at once to a subscriber who comes after the job finished', async () => {
    const { job } = await upload(system, 'Late subscriber');
    await collect(system.ws(), JOB_COMPLETED, { jobId: job.id });
    const late = await collect(system.ws(), JOB_COMPLETED, { jobId: job.id }, 5_000);
    expect(late).toHaveLength(1);
    expect(late[0]!.data!.jobCompleted.status).toBe('COMPLETED');
  });

  it('answers a subscription to an unknown job with NOT_FOUND', async () => {
    const messages = await collect(system.ws(), JOB_COMPLETED, { jobId: randomUUID() }, 10_000);
    expect(messages).toHaveLength(1);
    expect(messages[0]!.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
  });

  it('streams every state change with jobUpdated', async () => {
    const { job } = await upload(system, 'Watched');
    const messages = await collect(system.ws(), 'subscription($id: ID!) { jobUpdated(jobId: $id) { status } }', { id: job.id });
    expect(messages.at(-1)!.data.jobUpdated.status).toBe('COMPLETED');
    const statuses = messages.map((m) => m.data.jobUpdated.status);
    // Never backwards: QUEUED < RUNNING < COMPLETED.
    const rank = { QUEUED: 0, RUNNING: 1, COMPLETED: 2, FAILED: 2 } as Record<string, number>;
    for (let i = 1; i < statuses.length; i++) expect(rank[statuses[i]]).toBeGreaterThanOrEqual(rank[statuses[i - 1]]!);
  });

  /** Open a subscription and gather its messages until `count` have come (or fail after `timeoutMs`). */
  function gather(client: ReturnType<TestSystem['ws']>, query: string, count: number, timeoutMs = 30_000) {
    const messages: GraphQLResponse[] = [];
    let done: () => void = () => {};
    const enough = new Promise<void>((resolve) => (done = resolve));
    const stop = client.subscribe({ query }, { next: (m) => (messages.push(m as GraphQLResponse), messages.length >= count && done()), error: () => {}, complete: () => {} });
    return {
      messages,
      all: async () => {
        await Promise.race([enough, sleep(timeoutMs).then(() => Promise.reject(new Error(`${messages.length} of ${count} messages within ${timeoutMs} ms`)))]);
        stop();
        return messages;
      },
    };
  }

  it('streams documentAnalyzed: one message per newly analysed document of the tenant, resolved through federation', async () => {
    const tenant = `analyzed-${randomUUID()}`;
    const token = await system.token({ tenant });
    const mine = gather(system.ws({ token }), 'subscription { documentAnalyzed { id title job { id } analysis { summary } } }', 2);
    const other = gather(system.ws(), 'subscription { documentAnalyzed { id } }', 1);
    // graphql-ws registers the subscription when its message arrives: give it a moment.
    await sleep(200);
    const ids: string[] = [];
    for (const title of ['First analysed', 'Second analysed']) {
      const response = await system.query(UPLOAD, { input: { title, content: TEXT } }, { token });
      expect(response.errors).toBeUndefined();
      ids.push(response.data.uploadDocument.document.id);
    }
    const messages = await mine.all();
    expect(messages.map((m) => m.data.documentAnalyzed.id).sort()).toEqual([...ids].sort());
    for (const m of messages) {
      expect(m.errors).toBeUndefined();
      // Resolved when analysis completes: the analysis is there (the job view, fed by its own consumer, may not have moved yet).
      expect(m.data.documentAnalyzed.job.id).toBeTruthy();
      expect(m.data.documentAnalyzed.analysis.summary.length).toBeGreaterThan(0);
    }
    // Events are always filtered by tenant: tenant-a's subscriber heard none of them.
    await sleep(300);
    expect(other.messages.filter((m) => ids.includes(m.data?.documentAnalyzed?.id))).toEqual([]);
  });

  it('streams statsUpdated whenever the tenant’s aggregates change', async () => {
    const tenant = `stats-${randomUUID()}`;
    const token = await system.token({ tenant });
    const stream = gather(system.ws({ token }), 'subscription { statsUpdated { documents analyzed failed } }', 2);
    await sleep(200);
    for (const title of ['Counted once', 'Counted twice']) {
      const response = await system.query(UPLOAD, { input: { title, content: TEXT } }, { token });
      expect(response.errors).toBeUndefined();
      await collect(system.ws({ token }), JOB_COMPLETED, { jobId: response.data.uploadDocument.job.id });
    }
    const messages = await stream.all();
    expect(messages.map((m) => m.data.statsUpdated)).toEqual([
      { documents: 1, analyzed: 1, failed: 0 },
      { documents: 2, analyzed: 2, failed: 0 },
    ]);
  });

  it('gives 200 concurrent uploads with a subscriber each exactly one jobCompleted, and leaves no job unfinished', async () => {
    const jobs = await Promise.all(Array.from({ length: 200 }, (_, i) => upload(system, `Concurrent ${i}`, `${TEXT} Document number ${i}.`)));
    const client = system.ws();
    const results = await Promise.all(jobs.map(({ job }) => collect(client, JOB_COMPLETED, { jobId: job.id }, 120_000)));
    for (const [i, messages] of results.entries()) {
      expect(messages).toHaveLength(1);
      expect(messages[0]!.data!.jobCompleted).toMatchObject({ id: jobs[i]!.job.id, status: 'COMPLETED' });
    }
    for (const status of ['QUEUED', 'RUNNING']) {
      const open = await system.query('query($s: JobStatus) { jobs(status: $s, first: 100) { edges { node { id } } } }', { s: status });
      expect(open.data.jobs.edges).toEqual([]);
    }
  });

  it('refuses bad input with BAD_USER_INPUT and stores and publishes nothing', async () => {
    const before = await system.count('documents', 'select count(*) as n from tributary_outbox');
    const beforeDocs = await system.count('documents', 'select count(*) as n from documents');
    const cases: [Record<string, unknown>, string][] = [
      [{ title: '  ', content: 'text' }, 'title'],
      [{ title: 'T', content: '' }, 'content'],
      [{ title: 'T', content: 'x'.repeat(1024 * 1024 + 1) }, 'content'],
      [{ title: 'T', content: 'text', contentType: 'application/pdf' }, 'contentType'],
      [{ title: 'T', content: '<p> </p>', contentType: 'text/html' }, 'content'],
    ];
    for (const [input, field] of cases) {
      const response = await system.query(UPLOAD, { input });
      expect(response.data).toBeNull();
      expect(response.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field });
    }
    const wrongType = await system.query(UPLOAD, { input: { title: 5, content: 'x' } });
    expect(wrongType.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(await system.count('documents', 'select count(*) as n from tributary_outbox')).toBe(before);
    expect(await system.count('documents', 'select count(*) as n from documents')).toBe(beforeDocs);
  });

  it('pages through documents and jobs with cursors, newest first', async () => {
    const uploads = [];
    for (let i = 0; i < 4; i++) uploads.push(await upload(system, `Page ${i}`));
    await Promise.all(uploads.map(({ job }) => collect(system.ws(), JOB_COMPLETED, { jobId: job.id })));
    const page1 = await system.query('{ documents(first: 2) { edges { cursor node { id createdAt } } pageInfo { hasNextPage endCursor } } }');
    expect(page1.data.documents.edges).toHaveLength(2);
    expect(page1.data.documents.pageInfo.hasNextPage).toBe(true);
    const page2 = await system.query('query($after: String) { documents(first: 2, after: $after) { edges { node { id createdAt } } } }', { after: page1.data.documents.pageInfo.endCursor });
    const ids1 = page1.data.documents.edges.map((e: { node: { id: string } }) => e.node.id);
    const ids2 = page2.data.documents.edges.map((e: { node: { id: string } }) => e.node.id);
    expect(ids2).toHaveLength(2);
    expect(ids1.filter((id: string) => ids2.includes(id))).toEqual([]);
    expect(page2.data.documents.edges[0].node.createdAt <= page1.data.documents.edges[1].node.createdAt).toBe(true);
    const jobs = await system.query('{ jobs(status: COMPLETED, first: 3) { edges { node { status } } } }');
    expect(jobs.data.jobs.edges.map((e: { node: { status: string } }) => e.node.status)).toEqual(['COMPLETED', 'COMPLETED', 'COMPLETED']);
    for (const bad of ['{ documents(after: "garbage") { edges { cursor } } }', '{ jobs(first: 0) { edges { cursor } } }', '{ documents(first: 101) { edges { cursor } } }']) {
      expect((await system.query(bad)).errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    }
  });

  it('strips markup from HTML and Markdown before analysis', async () => {
    const html = await system.query('mutation($i: UploadDocumentInput!) { uploadDocument(input: $i) { job { id } } }', {
      i: { title: 'HTML', contentType: 'text/html; charset=utf-8', content: '<h1>Solar power</h1><script>alert(1)</script><p>Wind <em>turbines</em> spin.</p><style>p{}</style>' },
    });
    const md = await system.query('mutation($i: UploadDocumentInput!) { uploadDocument(input: $i) { job { id } } }', { i: { title: 'MD', contentType: 'text/markdown', content: '# Heading\n\n**Bold** claims about [links](http://example.com).' } });
    for (const id of [html.data.uploadDocument.job.id, md.data.uploadDocument.job.id]) {
      const [message] = await collect(system.ws(), 'subscription($id: ID!) { jobCompleted(jobId: $id) { status document { analysis { summary } } } }', { id });
      const summary: string = message!.data.jobCompleted.document.analysis.summary;
      expect(summary).not.toMatch(/<|>|\*\*|\]\(|alert|p\{\}/);
    }
  });
});

describe.skipIf(!available)('two gateway processes on one broker', () => {
  let system: TestSystem;
  beforeAll(async () => {
    system = await startProcessSystem({ gatewayCount: 2 });
  }, 120_000);
  afterAll(async () => {
    await system?.stop();
  }, 60_000);

  it('delivers each client its own completions through its own gateway', async () => {
    const a = await upload(system, 'Through gateway A', TEXT, 0);
    const b = await upload(system, 'Through gateway B', TEXT, 1);
    const [onA, onB] = await Promise.all([collect(system.ws({ gateway: 0 }), JOB_COMPLETED, { jobId: a.job.id }), collect(system.ws({ gateway: 1 }), JOB_COMPLETED, { jobId: b.job.id })]);
    expect(onA[0]!.data!.jobCompleted).toMatchObject({ id: a.job.id, status: 'COMPLETED', document: { title: 'Through gateway A' } });
    expect(onB[0]!.data!.jobCompleted).toMatchObject({ id: b.job.id, status: 'COMPLETED', document: { title: 'Through gateway B' } });
  });
});

describe('a failing analysis', () => {
  let system: TestSystem;
  beforeAll(async () => {
    let calls = 0;
    system = await startEmbeddedSystem({
      env: { ANALYSIS_MAX_ATTEMPTS: '3' },
      analysis: {
        analyzer: {
          provider: 'broken',
          model: 'none',
          analyze: async () => {
            calls++;
            throw Object.assign(new Error(`provider unavailable (call ${calls})`), { code: 'PROVIDER_UNAVAILABLE' });
          },
        },
      },
    });
  }, 60_000);
  afterAll(async () => {
    await system?.stop();
  });

  it('ends the job FAILED with the error after the configured attempts, and counts it in stats', async () => {
    const { job } = await upload(system, 'Doomed');
    const [message] = await collect(system.ws(), JOB_COMPLETED, { jobId: job.id });
    expect(message!.data!.jobCompleted).toMatchObject({ status: 'FAILED', error: { code: 'PROVIDER_UNAVAILABLE' }, document: { analysis: null } });
    const read = await system.query('query($id: ID!) { job(id: $id) { attempts } }', { id: job.id });
    expect(read.data.job.attempts).toBe(3);
    await waitFor(async () => (await system.query('{ stats { failed } }')).data?.stats.failed === 1, 10_000, 'stats.failed');
  });
});
