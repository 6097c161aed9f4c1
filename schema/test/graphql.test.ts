import { describe, expect, it } from 'vitest';
import { composeSubgraphs } from '../src/compose.ts';
import { graphql } from '../src/graphql-js.ts';
import { apiSchema, checkBreakingChanges, checkOperations, compositionViolations, coordinateAt, parseApprovedChanges } from '../src/graphql.ts';
import { SchemaCheckError } from '../src/report.ts';

const { buildSchema, parse, printSchema } = graphql;

const base = /* GraphQL */ `
  type Query {
    document(id: ID!): Document
    documents(first: Int, status: Status): [Document!]!
  }
  type Document {
    id: ID!
    title: String!
    size: Int!
    status: Status!
  }
  enum Status {
    QUEUED
    RUNNING
    DONE
  }
`;

/** The base schema with one textual edit applied. */
function edited(from: string, to: string): string {
  if (!base.includes(from)) throw new Error(`fixture does not contain ${from}`);
  return base.replace(from, to);
}

async function changesOf(sdl: string, approved: Parameters<typeof checkBreakingChanges>[2] = []) {
  return checkBreakingChanges(buildSchema(base), buildSchema(sdl), approved);
}

describe('breaking changes of the API schema', () => {
  it.each([
    ['a removed field', edited('size: Int!', ''), 'FIELD_REMOVED', 'Document.size'],
    ['a changed field type', edited('size: Int!', 'size: String!'), 'FIELD_TYPE_CHANGED', 'Document.size'],
    ['a nullable argument made non-null', edited('first: Int,', 'first: Int!,'), 'FIELD_ARGUMENT_TYPE_CHANGED', 'Query.documents.first'],
    ['a removed enum value', edited('DONE', ''), 'ENUM_VALUE_REMOVED', 'Status.DONE'],
    ['a new required argument', edited('document(id: ID!)', 'document(id: ID!, tenant: String!)'), 'FIELD_ARGUMENT_ADDED', 'Query.document.tenant'],
  ])('flags %s as breaking', async (_, sdl, type, coordinate) => {
    const { violations, counts } = await changesOf(sdl);
    expect(counts.breaking).toBe(1);
    expect(violations).toEqual([expect.objectContaining({ code: 'BREAKING_CHANGE', detail: type, coordinate })]);
  });

  it.each([
    ['a new optional field', edited('size: Int!', 'size: Int!\n    summary: String')],
    ['a new type', `${base}\ntype Theme { name: String! }`],
    ['a deprecation', edited('size: Int!', 'size: Int! @deprecated(reason: "use bytes")')],
    ['a new optional argument', edited('document(id: ID!)', 'document(id: ID!, version: Int)')],
  ])('passes %s', async (_, sdl) => {
    const { violations, counts } = await changesOf(sdl);
    expect(violations).toEqual([]);
    expect(counts.breaking).toBe(0);
  });

  it('passes a breaking change approved with a reason, by path or by message', async () => {
    const byPath = await changesOf(edited('size: Int!', ''), [{ change: 'Document.size', reason: 'no client reads it' }]);
    expect(byPath.violations).toEqual([]);
    expect(byPath.counts.approved).toBe(1);
    expect(byPath.notes).toEqual([expect.stringContaining('no client reads it')]);

    const byMessage = await changesOf(edited('DONE', ''), [{ change: "Enum value 'DONE' was removed from enum 'Status'", reason: 'renamed to COMPLETED' }]);
    expect(byMessage.violations).toEqual([]);
  });

  it('notes an approval that matches no change instead of failing', async () => {
    const { violations, notes } = await changesOf(base, [{ change: 'Query.gone', reason: 'old' }]);
    expect(violations).toEqual([]);
    expect(notes).toEqual(['approval matched no change (can be removed): Query.gone']);
  });

  it('reports a dangerous change as a note', async () => {
    const { violations, counts, notes } = await changesOf(edited('DONE', 'DONE\n    CANCELLED'));
    expect(violations).toEqual([]);
    expect(counts.dangerous).toBe(1);
    expect(notes[0]).toMatch(/^dangerous: .*CANCELLED/);
  });
});

describe('approved changes file', () => {
  it('accepts a list of changes with reasons', () => {
    expect(parseApprovedChanges('[{ "change": "Query.stats", "reason": "replaced by insights" }]')).toEqual([{ change: 'Query.stats', reason: 'replaced by insights' }]);
  });

  it.each([
    ['a change without a reason', '[{ "change": "Query.stats" }]'],
    ['a blank reason', '[{ "change": "Query.stats", "reason": "  " }]'],
    ['an unknown key', '[{ "change": "Query.stats", "reason": "x", "by": "me" }]'],
    ['an object instead of a list', '{}'],
    ['text that is not JSON', 'nope'],
  ])('rejects %s with APPROVED_CHANGES_INVALID', (_, text) => {
    expect(() => parseApprovedChanges(text)).toThrow(expect.objectContaining({ name: 'SchemaCheckError', code: 'APPROVED_CHANGES_INVALID' }));
    expect(() => parseApprovedChanges(text)).toThrow(SchemaCheckError);
  });
});

describe('client operations', () => {
  const schema = buildSchema(base);

  it('passes valid operations, fragments shared across files included', () => {
    const result = checkOperations(schema, {
      'fragments.graphql': 'fragment Doc on Document { id title }',
      'documents.graphql': 'query Documents { documents(first: 10) { ...Doc status } }',
    });
    expect(result).toEqual({ violations: [], operations: 1 });
  });

  it('fails an operation that uses a removed field, naming the file, the operation and the field', () => {
    const { violations } = checkOperations(schema, {
      'documents.graphql': 'query Documents {\n  documents { id }\n}\n\nquery DocumentPage($id: ID!) {\n  document(id: $id) { id summary }\n}\n',
    });
    expect(violations).toEqual([
      { code: 'INVALID_OPERATION', file: 'documents.graphql:6:26', operation: 'DocumentPage', message: 'Cannot query field "summary" on type "Document".' },
    ]);
  });

  it('fails a file that does not parse', () => {
    const { violations } = checkOperations(schema, { 'broken.graphql': 'query { documents { id }' });
    expect(violations).toEqual([expect.objectContaining({ code: 'INVALID_OPERATION', detail: 'SYNTAX', file: 'broken.graphql' })]);
  });

  it('fails two operations with the same name in different files', () => {
    const { violations } = checkOperations(schema, { 'a.graphql': 'query Docs { documents { id } }', 'b.graphql': 'query Docs { documents { title } }' });
    expect(violations).toEqual([expect.objectContaining({ message: 'There can be only one operation named "Docs".' })]);
  });
});

/** A tiny Federation 2 subgraph. */
const subgraph = (name: string, sdl: string) => ({
  name,
  url: `http://${name}`,
  typeDefs: parse(`extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key", "@shareable"])\n${sdl}`),
});

describe('composition', () => {
  it('names the error code, the subgraphs and the field of a composition error', () => {
    const { sdls, result } = composeSubgraphs([
      subgraph('a', 'type Query { t: T } type T @key(fields: "id") @shareable { id: ID! x: String }'),
      subgraph('b', 'type Query { u: T } type T @key(fields: "id") @shareable { id: ID! x: Int }'),
    ]);
    expect(result.errors).toBeDefined();
    expect(compositionViolations(result.errors ?? [], sdls)).toEqual([
      expect.objectContaining({ code: 'COMPOSITION_ERROR', detail: 'FIELD_TYPE_MISMATCH', subgraphs: ['a', 'b'], coordinate: 'T.x' }),
    ]);
  });

  it('names the subgraph whose own schema is invalid', () => {
    const { sdls, result } = composeSubgraphs([subgraph('a', 'type Query { t: Missing }')]);
    expect(compositionViolations(result.errors ?? [], sdls)).toEqual([
      expect.objectContaining({ detail: 'INVALID_GRAPHQL', subgraphs: ['a'], coordinate: 'Query.t' }),
    ]);
  });

  it('builds the API schema without the federation machinery', () => {
    const { result } = composeSubgraphs([subgraph('a', 'type Query { t: T } type T @key(fields: "id") { id: ID! }')]);
    const printed = printSchema(apiSchema(result.supergraphSdl ?? ''));
    expect(printed).toContain('type T {\n  id: ID!\n}');
    expect(printed).not.toMatch(/join__|link__|@key/);
  });

  it('locates a coordinate from an offset in the SDL', () => {
    const sdl = 'type Query {\n  doc(id: ID!): Doc\n}\ntype Doc { id: ID! }';
    const doc = parse(sdl);
    expect(coordinateAt(doc, sdl.indexOf('doc('))).toBe('Query.doc');
    expect(coordinateAt(doc, sdl.indexOf('id: ID!)'))).toBe('Query.doc(id:)');
    expect(coordinateAt(doc, sdl.indexOf('type Doc'))).toBe('Doc');
  });
});
