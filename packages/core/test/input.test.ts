/**
 * Strings PostgreSQL cannot store (U+0000, NUL) are refused before execution, in every argument
 * of a subgraph's operation: findUnstorableInput on its own (literals and variables, nested input
 * objects and lists, defaults, fragments, directives), then through createSubgraph, where it is
 * BAD_USER_INPUT naming the argument, HTTP 400, and the resolver never runs.
 */
import { getOperationAST, parse, parse as gql } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/index.ts';
import { InMemoryTransport } from '../src/events/memory.ts';
import { findUnstorableInput } from '../src/input.ts';
import { createSubgraph, type Subgraph } from '../src/server.ts';
import { silent } from './fixtures/harness.ts';

const NUL = '\u0000';

function find(query: string, variables?: Record<string, unknown>) {
  const document = parse(query);
  return findUnstorableInput(document, getOperationAST(document)!, variables);
}

describe('findUnstorableInput', () => {
  it('finds NUL in a string literal, however deep in input objects and lists, naming the way in', () => {
    expect(find('mutation { upload(input: { title: "a\\u0000b" }) { id } }')).toEqual({ owner: 'upload', field: 'input.title' });
    expect(find('mutation { create(input: { url: "x", tags: ["ok", "b\\u0000"] }) { id } }')).toEqual({ owner: 'create', field: 'input.tags.1' });
    expect(find('{ a { b(filter: { any: [{ name: { eq: "\\u0000" } }] }) } }')).toEqual({ owner: 'b', field: 'filter.any.0.name.eq' });
    expect(find('{ document(id: """block \u0000 string""") { id } }')).toEqual({ owner: 'document', field: 'id' });
  });

  it('finds NUL in a variable’s value, nested or whole, and in a variable inside a literal', () => {
    const upload = 'mutation($input: UploadInput!) { upload(input: $input) { id } }';
    expect(find(upload, { input: { title: `x${NUL}` } })).toEqual({ owner: 'upload', field: 'input.title' });
    expect(find(upload, { input: { title: 'x', parts: [{ name: 'a' }, { name: NUL }] } })).toEqual({ owner: 'upload', field: 'input.parts.1.name' });
    expect(find('query($id: ID!) { job(id: $id) { id } }', { id: NUL })).toEqual({ owner: 'job', field: 'id' });
    expect(find('mutation($t: String!) { upload(input: { title: $t, content: "fine" }) { id } }', { t: `${NUL}` })).toEqual({ owner: 'upload', field: 'input.title' });
    expect(find('query($ids: [ID!]!) { jobs(ids: $ids) { id } }', { ids: ['a', `b${NUL}`] })).toEqual({ owner: 'jobs', field: 'ids.1' });
  });

  it('reads a variable’s default when the request gives no value, and the value when it does', () => {
    const query = 'query($after: String = "\\u0000") { documents(after: $after) { id } }';
    expect(find(query)).toEqual({ owner: 'documents', field: 'after' });
    expect(find(query, { after: 'cursor' })).toBeUndefined();
  });

  it('looks into the fragments the operation spreads and into directive arguments', () => {
    expect(find('query { ...F } fragment F on Query { ... on Query { job(id: "\\u0000") { id } } }')).toEqual({ owner: 'job', field: 'id' });
    expect(find('query($label: String) { job(id: "1") @tag(label: $label) { id } }', { label: NUL })).toEqual({ owner: '@tag', field: 'label' });
  });

  it('finds nothing in clean input, in other operations of the document, or in names and numbers', () => {
    expect(find('mutation($input: UploadInput!) { upload(input: $input) { id } }', { input: { title: 'Tab\tand\nnewline are fine', size: 0, tags: [] } })).toBeUndefined();
    const document = parse('query A { job(id: "1") { id } } query B { job(id: "\\u0000") { id } }');
    expect(findUnstorableInput(document, getOperationAST(document, 'A')!, {})).toBeUndefined();
    expect(findUnstorableInput(document, getOperationAST(document, 'B')!, {})).toEqual({ owner: 'job', field: 'id' });
    // A variable the operation does not use is not its input (validation refuses it anyway).
    expect(find('query($id: ID!) { job(id: $id) { id } }', { id: '1', other: NUL })).toBeUndefined();
  });
});

describe('a subgraph refusing NUL in its arguments', () => {
  let subgraph: Subgraph;
  let url: string;
  const calls: unknown[] = [];

  beforeAll(async () => {
    const db = await openDatabase({ service: 'test', target: { kind: 'pglite', dataDir: 'memory://' }, entities: [], logger: silent });
    subgraph = await createSubgraph({
      name: 'test',
      typeDefs: gql(`
        extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@key"])
        input NoteInput { title: String!, tags: [String!], parts: [PartInput!] }
        input PartInput { name: String!, size: Int }
        type Note { id: ID! title: String! }
        type Query { note(id: ID!): Note }
        type Mutation { addNote(input: NoteInput!): Note! }
      `),
      resolvers: {
        Query: {
          note: (_: unknown, args: unknown) => {
            calls.push(args);
            return { id: '1', title: 't' };
          },
        },
        Mutation: {
          addNote: (_: unknown, args: { input: { title: string } }) => {
            calls.push(args);
            return { id: '1', title: args.input.title };
          },
        },
      },
      db,
      transport: new InMemoryTransport('input'),
      logger: silent,
      context: async () => ({}),
    });
    url = await subgraph.listen(0);
  });
  afterAll(async () => {
    await subgraph?.stop();
  });

  async function post(query: string, variables?: Record<string, unknown>) {
    const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query, variables }) });
    return { status: response.status, body: (await response.json()) as { data?: unknown; errors?: { message: string; extensions?: Record<string, unknown> }[] } };
  }

  it('refuses NUL in a variable’s nested list with BAD_USER_INPUT naming the argument, HTTP 400, before the resolver runs', async () => {
    const before = calls.length;
    const { status, body } = await post('mutation($input: NoteInput!) { addNote(input: $input) { id } }', { input: { title: 'ok', parts: [{ name: 'a' }, { name: `b${NUL}c` }] } });
    expect(status).toBe(400);
    expect(body.data).toBeUndefined();
    expect(body.errors).toEqual([
      { message: '`input.parts.1.name` of addNote contains a NUL character (U+0000), which cannot be stored', extensions: expect.objectContaining({ code: 'BAD_USER_INPUT', field: 'input.parts.1.name' }) },
    ]);
    expect(calls.length).toBe(before);
  });

  it('refuses NUL in a literal the same way, and serves the same operation without it', async () => {
    const refused = await post('{ note(id: "1\\u0000") { id } }');
    expect(refused.status).toBe(400);
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'id' });
    const served = await post('mutation { addNote(input: { title: "fine", tags: ["a", "b"] }) { title } }');
    expect(served).toEqual({ status: 200, body: { data: { addNote: { title: 'fine' } } } });
  });
});
