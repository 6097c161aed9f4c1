import { eventDirectiveDefinitions, eventsSpecLink } from '@tributary/core/bindings';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { checkEventBindings, resolvePath } from '../src/bindings.ts';
import { runCheck } from '../src/check.ts';
import { composeSubgraphs, generatedFiles, paths, snapshotText, type SubgraphSource } from '../src/compose.ts';
import { eventFileName, eventSnapshot } from '../src/events.ts';
import { apiSchema } from '../src/graphql.ts';
import { graphql } from '../src/graphql-js.ts';
import { commitFixtureRepo } from './repo.ts';
import { formatReport, type CheckReport, type Violation } from '../src/report.ts';

const docAdded = z.object({
  docId: z.string().min(1),
  shelfId: z.string(),
  rank: z.number().int(),
  score: z.number(),
  published: z.boolean(),
  status: z.enum(['DRAFT', 'PUBLISHED']),
  meta: z.object({ editor: z.string(), pages: z.number().int().nullable() }).nullable().optional(),
  tags: z.array(z.object({ name: z.string() })),
  extra: z.unknown(),
});
const contracts = { 'doc.added/v1': docAdded };
const sample = { docId: 'd1', shelfId: 's1', rank: 1, score: 0.5, published: true, status: 'DRAFT', meta: null, tags: [], extra: 1 };

const valid = {
  docAdded: '@eventSubscription(events: ["doc.added/v1"], match: ["docId = $docId"], entity: "Doc", key: "docId", lookup: "doc(id: $key)", initial: true)',
  docChanged: '@changedBy(event: "doc.added/v1", key: "docId")',
};

/** A subgraph `docs` with a subscription `docAdded` and an entity `Doc`, bound to `doc.added/v1`. */
const docs = ({ docAdded = valid.docAdded, docChanged = valid.docChanged } = {}): SubgraphSource => ({
  name: 'docs',
  url: 'http://docs',
  typeDefs: graphql.parse(`
    extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@key", "@composeDirective"]) ${eventsSpecLink}
    ${eventDirectiveDefinitions}
    type Query { doc(id: ID!): Doc  docByRank(rank: Int!): Doc  shelf(id: ID!): Shelf }
    type Subscription { docAdded(docId: ID!, rank: Int, published: Boolean, status: DocStatus): Doc! ${docAdded} }
    type Doc @key(fields: "id") ${docChanged} { id: ID! title: String status: DocStatus }
    type Shelf { id: ID! }
    enum DocStatus { DRAFT PUBLISHED }
  `),
});

let root: string;
beforeAll(() => {
  // The valid fixture committed, so that only the binding step fails for a broken one.
  root = mkdtempSync(join(tmpdir(), 'schema-bindings-'));
  const { sdls, result } = composeSubgraphs([docs()]);
  if (result.errors) throw result.errors[0];
  const files: Record<string, string> = {
    ...generatedFiles(sdls, result),
    [`${paths.eventsDir}/${eventFileName('doc.added/v1')}`]: snapshotText(docAdded),
    [`${paths.samplesDir}/${eventFileName('doc.added/v1')}`]: JSON.stringify(sample),
  };
  commitFixtureRepo(root, files);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const check = (source: SubgraphSource) => runCheck({ root, base: 'HEAD', subgraphs: [source], contracts });
const bindingStep = (report: CheckReport) => report.steps.find((s) => s.step === 'bindings')!;

/** The one violation of the binding step, checked to name its code, the subgraph and the field in the terminal too. */
async function onlyViolation(source: SubgraphSource, detail: string, coordinate: string): Promise<Violation> {
  const report = await check(source);
  const step = bindingStep(report);
  expect(report.exitCode, formatReport(report)).toBe(1);
  expect(step.status).toBe('failed');
  expect(step.violations, formatReport(report)).toEqual([expect.objectContaining({ code: 'INVALID_EVENT_BINDING', detail, subgraphs: ['docs'], coordinate })]);
  expect(formatReport(report)).toMatch(new RegExp(`✗ \\[${detail} · subgraph docs · [^\\]]*${coordinate.replace('.', '\\.')}\\] `));
  return step.violations[0]!;
}

describe('the event binding step of schema check', () => {
  it('passes a fixture subgraph whose bindings match its API schema and contracts', async () => {
    const report = await check(docs());
    expect(report.exitCode, formatReport(report)).toBe(0);
    expect(bindingStep(report)).toMatchObject({ status: 'passed', summary: '1 @eventSubscription and 1 @changedBy bindings in 1 subgraphs match the API schema and the event contracts' });
  });

  it('fails on an event type that is not in the contracts', async () => {
    const v = await onlyViolation(docs({ docAdded: valid.docAdded.replace('doc.added/v1', 'doc.removed/v1') }), 'UNKNOWN_EVENT', 'Subscription.docAdded');
    expect(v).toMatchObject({ event: 'doc.removed/v1', message: '`events` names doc.removed/v1: not in the contracts (no version of doc.removed is)' });
  });

  it('fails on an event version that is not in the contracts', async () => {
    const v = await onlyViolation(docs({ docChanged: valid.docChanged.replace('doc.added/v1', 'doc.added/v2') }), 'UNKNOWN_EVENT', 'Doc');
    expect(v).toMatchObject({ event: 'doc.added/v2', message: '@changedBy(event: "doc.added/v2"): not in the contracts (doc.added has doc.added/v1)' });
  });

  it('fails on a path that is not in the event', async () => {
    const v = await onlyViolation(docs({ docAdded: valid.docAdded.replace('"docId = $docId"', '"docId = $docId", "documentId = $docId"') }), 'PATH_NOT_IN_EVENT', 'Subscription.docAdded');
    expect(v.event).toBe('doc.added/v1');
    expect(v.message).toMatch(/^`match` path documentId is not in the event: doc\.added\/v1 has no documentId \(\$ has docId, extra, meta, /);
  });

  it('fails on a path whose type cannot be compared with its argument', async () => {
    const v = await onlyViolation(docs({ docAdded: valid.docAdded.replace('"docId = $docId"', '"docId = $docId", "score = $rank"') }), 'PATH_TYPE_MISMATCH', 'Subscription.docAdded');
    expect(v.message).toBe('`match` path score is number in doc.added/v1; it is bound to $rank (Int), compared with integer');
  });

  it('fails on an argument the subscription field does not have', async () => {
    const v = await onlyViolation(docs({ docAdded: valid.docAdded.replace('"docId = $docId"', '"docId = $documentId"') }), 'UNKNOWN_ARGUMENT', 'Subscription.docAdded');
    expect(v.message).toContain('$documentId');
  });

  it('fails on a lookup field that returns another type than the entity', async () => {
    const v = await onlyViolation(docs({ docAdded: valid.docAdded.replace('doc(id: $key)', 'shelf(id: $key)') }), 'LOOKUP_MISMATCH', 'Subscription.docAdded');
    expect(v.message).toBe('`lookup` shelf returns Shelf, not the entity Doc');
  });

  it('reports a directive that does not parse, and the entity the field does not return', async () => {
    const report = await check(docs({ docAdded: valid.docAdded.replace('key: "docId"', 'key: "doc-id"').replace('entity: "Doc"', 'entity: "Shelf"') }));
    expect(bindingStep(report).violations.map((v) => [v.detail, v.coordinate])).toEqual(
      expect.arrayContaining([
        ['INVALID_BINDING', 'Subscription.docAdded'],
        ['ENTITY_MISMATCH', 'Subscription.docAdded'],
      ]),
    );
  });

  it('is skipped when composition fails', async () => {
    const broken = { ...docs(), typeDefs: graphql.parse('type Query { doc: Missing }') };
    const report = await check(broken);
    expect(bindingStep(report)).toMatchObject({ status: 'skipped', summary: 'composition failed' });
  });
});

describe('event binding paths and types', () => {
  const sdls = (docAdded: string, docChanged = valid.docChanged) => {
    const { sdls, result } = composeSubgraphs([docs({ docAdded, docChanged })]);
    if (result.errors) throw result.errors[0];
    return { sdls, schema: apiSchema(result.supergraphSdl), contracts };
  };
  const problems = (docAdded: string, docChanged?: string) => checkEventBindings(sdls(docAdded, docChanged)).violations.map((v) => `${v.detail} ${v.message}`);
  const withMatch = (match: string) => valid.docAdded.replace('"docId = $docId"', `"docId = $docId", ${match}`);

  it.each([
    ['an ID with a string', '"shelfId = $docId"'],
    ['an ID with an integer', '"rank = $docId"'],
    ['an Int with an integer', '"rank = $rank"'],
    ['a Boolean with a boolean', '"published = $published"'],
    ['an enum with a string', '"status = $status"'],
    ['a nullable nested value through an optional object', '"meta.pages = $rank"'],
    ['a value the contract does not type', '"extra = $rank"'],
  ])('accepts a match of %s', (_, match) => {
    expect(problems(withMatch(match))).toEqual([]);
  });

  it.each([
    ['an Int with a string', '"shelfId = $rank"', '`match` path shelfId is string in doc.added/v1; it is bound to $rank (Int), compared with integer'],
    ['an ID with a float', '"score = $docId"', '`match` path score is number in doc.added/v1; it is bound to $docId (ID!), compared with string or integer'],
    ['a Boolean with a string', '"status = $published"', '`match` path status is string in doc.added/v1; it is bound to $published (Boolean), compared with boolean'],
    ['an ID with an object', '"meta = $docId"', '`match` path meta is null | object in doc.added/v1; it is bound to $docId (ID!), compared with string or integer'],
  ])('refuses a match of %s', (_, match, message) => {
    expect(problems(withMatch(match))).toEqual([`PATH_TYPE_MISMATCH ${message}`]);
  });

  it('refuses a value that is always null', () => {
    const { violations } = checkEventBindings({ ...sdls(withMatch('"gone = $docId"')), contracts: { 'doc.added/v1': docAdded.extend({ gone: z.null() }) } });
    expect(violations.map((v) => v.message)).toEqual(['`match` path gone is always null in doc.added/v1; it is bound to $docId (ID!), compared with string or integer']);
  });

  it('refuses a path into an array', () => {
    expect(problems(withMatch('"tags.name = $docId"'))).toEqual(['PATH_NOT_IN_EVENT `match` path tags.name is not in the event: tags is an array in doc.added/v1, and paths go through objects only']);
  });

  it('refuses a missing nested path, naming what the object has', () => {
    expect(problems(withMatch('"meta.author = $docId"'))).toEqual(['PATH_NOT_IN_EVENT `match` path meta.author is not in the event: doc.added/v1 has no meta.author (meta has editor, pages)']);
  });

  it('refuses a where path that is not a scalar', () => {
    expect(problems(valid.docAdded.replace('initial: true', 'where: "meta in [A]"'))).toEqual([
      'PATH_TYPE_MISMATCH `where` path meta is null | object in doc.added/v1; it is bound to a condition, compared with a string, number or boolean',
    ]);
  });

  it("checks a key path against the lookup's key argument", () => {
    const byRank = valid.docAdded.replace('doc(id: $key)', 'docByRank(rank: $key)').replace('initial: true', 'initial: false');
    expect(problems(byRank.replace('key: "docId"', 'key: "rank"'))).toEqual([]);
    expect(problems(byRank)).toEqual(['PATH_TYPE_MISMATCH `key` path docId is string in doc.added/v1; it is bound to the key argument docByRank(rank: Int!), compared with integer']);
  });

  it("checks a @changedBy key path against the entity's key", () => {
    expect(problems(valid.docAdded, '@changedBy(event: "doc.added/v1", key: "score")')).toEqual([
      'PATH_TYPE_MISMATCH @changedBy key score is number in doc.added/v1; it is bound to the key Doc.id (ID!), compared with string or integer',
    ]);
    expect(problems(valid.docAdded, '@changedBy(event: "doc.added/v1", key: "docid")')[0]).toMatch(/^PATH_NOT_IN_EVENT @changedBy key docid is not in the event: doc\.added\/v1 has no docid/);
  });

  it('reports a path once per event it is missing from', () => {
    const both = sdls(valid.docAdded.replace('events: ["doc.added/v1"]', 'events: ["doc.added/v1", "doc.moved/v1"]'));
    const moved = z.object({ shelfId: z.string() });
    const { violations } = checkEventBindings({ ...both, contracts: { ...contracts, 'doc.moved/v1': moved } });
    expect(violations.map((v) => `${v.detail} ${v.event} ${v.message.split(':')[0]}`)).toEqual(['PATH_NOT_IN_EVENT doc.moved/v1 `match` path docId is not in the event', 'PATH_NOT_IN_EVENT doc.moved/v1 `key` path docId is not in the event']);
  });
});

describe('resolvePath', () => {
  const schema = eventSnapshot(
    z.object({
      a: z.union([z.object({ b: z.string() }), z.object({ c: z.number().int() })]),
      d: z.string().nullable(),
      r: z.record(z.string(), z.object({ e: z.boolean() })),
      n: z.null(),
    }),
  );
  it('finds a part in any branch of a union', () => {
    expect(resolvePath(schema, ['a', 'b'])).toEqual({ found: true, types: new Set(['string']) });
    expect(resolvePath(schema, ['a', 'c'])).toEqual({ found: true, types: new Set(['integer']) });
  });
  it('keeps null among the types of a nullable value', () => {
    expect(resolvePath(schema, ['d'])).toEqual({ found: true, types: new Set(['string', 'null']) });
    expect(resolvePath(schema, ['n'])).toEqual({ found: true, types: new Set(['null']) });
  });
  it('goes through any key of a record', () => {
    expect(resolvePath(schema, ['r', 'anything', 'e'])).toEqual({ found: true, types: new Set(['boolean']) });
  });
  it('says where a path stops', () => {
    expect(resolvePath(schema, ['a', 'x'])).toMatchObject({ found: false, missing: 'a.x', at: 'a', available: ['b', 'c'] });
    expect(resolvePath(schema, ['d', 'x'])).toMatchObject({ found: false, missing: 'd.x', at: 'd', available: [] });
  });
});
