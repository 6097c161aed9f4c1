import { createLogger } from '@tributary/core';
import { ConfigError } from '@tributary/core/config';
import { buildASTSchema, parse } from 'graphql';
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { EntityCache, entityKeys, invalidationRules, type EntityCacheOptions } from '../src/cache/index.ts';
import { readBindings } from '@tributary/core/bindings';
import { defaultSupergraphPath } from '../src/gateway.ts';

const supergraphSdl = readFileSync(defaultSupergraphPath, 'utf8');
// The supergraph's own definitions make a schema good enough to plan against.
const schema = buildASTSchema(parse(supergraphSdl));
const logger = createLogger({ service: 'test', level: 'silent' });
// The rules the gateway derives from the supergraph's @changedBy declarations.
const { changes } = readBindings(supergraphSdl).bindings;
const productRules = invalidationRules(changes);
const wholeTypes = [...new Set(changes.filter((c) => !c.key).map((c) => c.type))];

function cacheWith(options: Partial<EntityCacheOptions> = {}) {
  return new EntityCache({ types: ['Job', 'Document'], rules: productRules, wholeTypes, supergraphSdl, ttlMs: 60_000, maxEntries: 100, logger, ...options });
}

function planOf(cache: EntityCache, query: string) {
  return cache.plan(schema, parse(query), undefined);
}

/** Plan, tag and store a result the way the plugin does. */
function store(cache: EntityCache, tenant: string, query: string, data: Record<string, unknown>, variables?: Record<string, unknown>, since = cache.begin()) {
  const plan = planOf(cache, query);
  if (!plan.cacheable) throw new Error(plan.reason);
  return cache.set(tenant, query + JSON.stringify(variables ?? {}), data, cache.tagsOf(plan, data, variables), since);
}
const has = (cache: EntityCache, tenant: string, query: string, variables?: Record<string, unknown>) => cache.get(tenant, query + JSON.stringify(variables ?? {})) !== undefined;

const JOB = 'query ($id: ID!) { job(id: $id) { id status document { id title analysis { summary } } } }';
const jobData = (id: string, documentId: string) => ({ job: { id, status: 'RUNNING', document: { id: documentId, title: 't', analysis: null } } });
const JOBS = '{ jobs(first: 5) { edges { node { id status } } pageInfo { hasNextPage } } }';

describe('entity keys from the supergraph', () => {
  it('reads each entity type’s flat key', () => {
    const keys = entityKeys(supergraphSdl);
    expect(keys.get('Job')).toEqual(['id']);
    expect(keys.get('Document')).toEqual(['id']);
    expect(keys.has('Stats')).toBe(false);
    expect(entityKeys('type P @join__type(graph: A, key: "sku org { id }") { sku: ID }').get('P')).toBeNull();
  });
});

describe('what may be cached', () => {
  it('caches a lookup by key, and tags it with the key and every entity in the result', () => {
    const cache = cacheWith();
    const plan = planOf(cache, JOB);
    expect(plan.cacheable).toBe(true);
    if (!plan.cacheable) return;
    const tags = cache.tagsOf(plan, jobData('j1', 'd1'), { id: 'j1' });
    expect(tags).toEqual(expect.arrayContaining(['Job:j1', 'Document:d1', 'all:Job', 'all:Document']));
    // A lookup depends on its own entity, not on the type's lists.
    expect(tags).not.toContain('any:Job');
  });

  it('tags a list by the types that decide its members, through connection types', () => {
    const plan = planOf(cacheWith(), JOBS);
    expect(plan.cacheable && plan.staticTags).toEqual(expect.arrayContaining(['any:Job', 'all:Job']));
  });

  it('tags an entity whose key was not selected by its whole type', () => {
    const cache = cacheWith();
    const plan = planOf(cache, 'query ($id: ID!) { job(id: $id) { status document { title } } }');
    if (!plan.cacheable) throw new Error(plan.reason);
    expect(cache.tagsOf(plan, { job: { status: 'QUEUED', document: { title: 't' } } }, { id: 'j1' })).toEqual(expect.arrayContaining(['Job:j1', 'any:Document']));
  });

  it.each([
    ['a type not opted in', '{ document(id: "d1") { id } }', ['Job'], 'Document is not a cached type'],
    ['a type changed as a whole that is not cached', '{ stats { documents } }', ['Job', 'Document'], 'Stats is not a cached type'],
    ['a mutation', 'mutation { uploadDocument(input: { title: "t", content: "c" }) { document { id } } }', ['Job', 'Document'], 'mutation'],
    ['introspection', '{ __schema { queryType { name } } }', ['Job', 'Document'], '__schema is not cacheable'],
  ])('does not cache %s', (_name, query, types, reason) => {
    expect(planOf(cacheWith({ types }), query)).toEqual({ cacheable: false, reason });
  });

  it('never caches a result holding a @volatile field (Job.queuePosition moves with no event), at any depth', () => {
    const cache = cacheWith();
    for (const query of ['query ($id: ID!) { job(id: $id) { id queuePosition } }', '{ jobs(first: 5) { edges { node { id queuePosition } } } }', 'query ($id: ID!) { document(id: $id) { id job { id queuePosition } } }']) {
      expect(planOf(cache, query)).toEqual({ cacheable: false, reason: 'Job.queuePosition is @volatile: no event says when it changes' });
    }
    // The supergraph says so: the directive composed from the analysis subgraph.
    expect(readBindings(supergraphSdl).bindings.volatile).toEqual(['Job.queuePosition']);
  });

  it('refuses to cache types that no event announces, or that are neither entities nor changed as a whole', () => {
    expect(() => cacheWith({ types: ['JobProgress'] })).toThrow(ConfigError);
    expect(() => cacheWith({ types: ['Stats'], wholeTypes: [] })).toThrow(/neither an entity/);
    expect(() => cacheWith({ types: ['Job', 'Document'], rules: { 'job.updated/v1': productRules['job.updated/v1']! } })).toThrow(/no event announces changes of Document/);
  });

  it('caches a type changed as a whole (the tenant’s stats), dropped by the event that changes it', () => {
    const cache = cacheWith({ types: ['Stats', 'ThemeStat'] });
    const STATS = '{ stats { documents analyzed } themes(first: 3) { name documentCount } }';
    expect(planOf(cache, STATS).cacheable).toBe(true);
    store(cache, 'a', STATS, { stats: { documents: 1, analyzed: 1 }, themes: [] });
    store(cache, 'b', STATS, { stats: { documents: 2, analyzed: 2 }, themes: [] });
    cache.onEvent({ dataschema: 'insights.updated/v1', tenantid: 'a', data: { documents: 2, analyzed: 2, failed: 0, themes: [], updatedAt: new Date().toISOString() } } as never);
    expect(has(cache, 'a', STATS)).toBe(false);
    expect(has(cache, 'b', STATS)).toBe(true);
  });
});

describe('invalidation', () => {
  it('drops exactly the results holding a changed entity, per tenant', () => {
    const cache = cacheWith();
    store(cache, 'a', JOB, jobData('j1', 'd1'), { id: 'j1' });
    store(cache, 'a', JOB, jobData('j2', 'd2'), { id: 'j2' });
    store(cache, 'a', JOBS, { jobs: { edges: [], pageInfo: { hasNextPage: false } } });
    store(cache, 'b', JOB, jobData('j1', 'd1'), { id: 'j1' });
    cache.invalidate('a', [{ type: 'Job', id: 'j1' }], 'event');
    expect(has(cache, 'a', JOB, { id: 'j1' })).toBe(false);
    expect(has(cache, 'a', JOBS)).toBe(false);
    expect(has(cache, 'a', JOB, { id: 'j2' })).toBe(true);
    expect(has(cache, 'b', JOB, { id: 'j1' })).toBe(true);
    // A nested entity counts as much as the anchor.
    cache.invalidate('a', [{ type: 'Document', id: 'd2' }], 'event');
    expect(has(cache, 'a', JOB, { id: 'j2' })).toBe(false);
  });

  it('drops every result holding a type when a change names no id', () => {
    const cache = cacheWith();
    store(cache, 'a', JOB, jobData('j1', 'd1'), { id: 'j1' });
    cache.invalidate('a', [{ type: 'Document' }], 'mutation');
    expect(has(cache, 'a', JOB, { id: 'j1' })).toBe(false);
  });

  it('does not store a result read while one of its entities was invalidated', () => {
    const cache = cacheWith();
    const since = cache.begin();
    cache.invalidate('a', [{ type: 'Job', id: 'j1' }], 'event');
    expect(store(cache, 'a', JOB, jobData('j1', 'd1'), { id: 'j1' }, since)).toBe(false);
    // Unrelated invalidations, or another tenant's, do not stop it.
    const since2 = cache.begin();
    cache.invalidate('a', [{ type: 'Job', id: 'j9' }], 'event');
    cache.invalidate('b', [{ type: 'Job', id: 'j1' }], 'event');
    expect(store(cache, 'a', JOB, jobData('j1', 'd1'), { id: 'j1' }, since2)).toBe(true);
  });

  it("shares a miss in flight with identical queries, unless one of its answer's entities was invalidated since it began", () => {
    const cache = cacheWith();
    const plan = planOf(cache, JOB);
    if (!plan.cacheable) throw new Error(plan.reason);
    const data = jobData('j1', 'd1');
    const tags = cache.tagsOf(plan, data, { id: 'j1' });
    const flight = cache.takeOff('a', 'k');
    expect(cache.inFlight('a', 'k')).toBe(flight);
    expect(cache.inFlight('b', 'k')).toBeUndefined();
    // Another entity's, or another tenant's, invalidation meanwhile: still shared.
    cache.invalidate('a', [{ type: 'Job', id: 'j9' }], 'event');
    cache.invalidate('b', [{ type: 'Job', id: 'j1' }], 'event');
    expect(cache.sharable('a', flight, tags)).toBe(true);
    // One of its own: the answer may predate the change.
    cache.invalidate('a', [{ type: 'Document', id: 'd1' }], 'event');
    expect(cache.sharable('a', flight, tags)).toBe(false);
    flight.land(data);
    expect(cache.inFlight('a', 'k')).toBeUndefined();
  });

  it('drops everything on clear, and refuses results read before it', () => {
    const cache = cacheWith();
    store(cache, 'a', JOB, jobData('j1', 'd1'), { id: 'j1' });
    const since = cache.begin();
    cache.clear();
    expect(cache.size).toBe(0);
    expect(store(cache, 'b', JOB, jobData('j2', 'd2'), { id: 'j2' }, since)).toBe(false);
    expect(store(cache, 'b', JOB, jobData('j2', 'd2'), { id: 'j2' })).toBe(true);
  });

  it('maps events through their rules, and drops the tenant for an unreadable one', () => {
    const cache = cacheWith();
    store(cache, 'a', JOB, jobData('j1', 'd1'), { id: 'j1' });
    store(cache, 'a', JOB, jobData('j2', 'd2'), { id: 'j2' });
    const envelope = (dataschema: string, data: unknown) => ({ id: randomUUID(), type: dataschema.split('/')[0]!, source: 'test', specversion: '1.0' as const, time: new Date().toISOString(), dataschema, subject: 'x', tenantid: 'a', data });
    const now = new Date().toISOString();
    cache.onEvent(envelope('analysis.started/v1', { documentId: 'd1', jobId: 'j1', attempt: 1, startedAt: now }));
    expect(cache.size).toBe(2);
    cache.onEvent(envelope('job.updated/v1', { jobId: 'j1', documentId: 'd1', status: 'COMPLETED', attempts: 1, error: null, createdAt: now, updatedAt: now, completedAt: now }));
    expect(has(cache, 'a', JOB, { id: 'j1' })).toBe(false);
    expect(has(cache, 'a', JOB, { id: 'j2' })).toBe(true);
    cache.onEvent(envelope('job.updated/v1', { jobId: 'j3' }));
    expect(cache.size).toBe(0);
  });

  it('expires entries after the TTL and evicts the least recently used', () => {
    let now = 0;
    const cache = cacheWith({ ttlMs: 1_000, maxEntries: 2, now: () => now });
    store(cache, 'a', JOB, jobData('j1', 'd1'), { id: 'j1' });
    store(cache, 'a', JOB, jobData('j2', 'd2'), { id: 'j2' });
    expect(has(cache, 'a', JOB, { id: 'j1' })).toBe(true);
    store(cache, 'a', JOB, jobData('j3', 'd3'), { id: 'j3' });
    expect(has(cache, 'a', JOB, { id: 'j2' })).toBe(false);
    expect(has(cache, 'a', JOB, { id: 'j1' })).toBe(true);
    now = 1_000;
    expect(has(cache, 'a', JOB, { id: 'j1' })).toBe(false);
  });

  it('counts what it drops on the counters it holds, one per name in the registry', async () => {
    const cache = cacheWith({ maxEntries: 1 });
    expect(cacheWith().metrics.invalidations).toBe(cache.metrics.invalidations);
    const evicted = async () => (await cache.metrics.invalidations.get()).values.find((v) => v.labels.cause === 'evicted')?.value ?? 0;
    const before = await evicted();
    store(cache, 'a', JOB, jobData('j1', 'd1'), { id: 'j1' });
    store(cache, 'a', JOB, jobData('j2', 'd2'), { id: 'j2' });
    expect(await evicted()).toBe(before + 1);
  });

  it('reads what a mutation changed from its result', () => {
    const cache = cacheWith();
    const document = parse('mutation { uploadDocument(input: { title: "t", content: "c" }) { document { id } job { id status } } }');
    expect(cache.changedBy(schema, document, undefined, { uploadDocument: { document: { id: 'd1' }, job: { id: 'j1', status: 'QUEUED' } } })).toEqual([
      { type: 'Document', id: ['d1'] },
      { type: 'Job', id: ['j1'] },
    ]);
  });
});
