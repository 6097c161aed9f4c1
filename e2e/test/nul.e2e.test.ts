/**
 * A NUL character (U+0000), which PostgreSQL text cannot hold, in any string argument of the API
 * is the client's error, never ours: every string-valued argument of every root field, found in
 * the composed API schema (through input objects and lists, not listed by hand), is sent with a
 * NUL through the whole system (pnpm dev's embedded mode) as a variable and as a literal. Each is
 * BAD_USER_INPUT naming the argument (`extensions.field: "input.title"`); none is a 500 or
 * INTERNAL_SERVER_ERROR. Subscriptions (graphql-ws) are refused BAD_USER_INPUT too. A file's name
 * is no argument but a multipart part's: a raw NUL in it is a malformed request, an encoded one is
 * dropped as the name's other control characters are.
 */
import { Supergraph } from '@apollo/federation-internals';
import {
  astFromValue,
  getNamedType,
  isCompositeType,
  isEnumType,
  isInputObjectType,
  isListType,
  isNonNullType,
  isScalarType,
  print,
  type GraphQLField,
  type GraphQLInputType,
  type GraphQLObjectType,
} from 'graphql';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultSupergraphPath } from '@tributary/gateway';
import { collect, startEmbeddedSystem, type TestSystem } from './fixtures/system.ts';

const NUL_TEXT = 'before\u0000after';
const schema = Supergraph.build(readFileSync(defaultSupergraphPath, 'utf8')).apiSchema().toGraphQLJSSchema();

/** Scalars whose values are never strings; every other scalar (String, ID, Upload, …) can carry one. */
const NOT_STRINGS = new Set(['Int', 'Float', 'Boolean']);

/** Every way into `type` that ends at a string: `[]` for a string itself, `['title']`, `['events', '0']`. */
function stringPaths(type: GraphQLInputType, seen: ReadonlySet<string> = new Set()): string[][] {
  if (isNonNullType(type)) return stringPaths(type.ofType, seen);
  if (isListType(type)) return stringPaths(type.ofType as GraphQLInputType, seen).map((path) => ['0', ...path]);
  if (isScalarType(type)) return NOT_STRINGS.has(type.name) ? [] : [[]];
  if (isEnumType(type) || seen.has(type.name)) return [];
  const inside = new Set([...seen, type.name]);
  return Object.values(type.getFields()).flatMap((field) => stringPaths(field.type, inside).map((path) => [field.name, ...path]));
}

/** The name of the scalar `path` (as {@link stringPaths} gives it) leads to in `type`. */
function scalarAt(type: GraphQLInputType, path: readonly string[]): string {
  if (isNonNullType(type)) return scalarAt(type.ofType, path);
  if (isListType(type)) return scalarAt(type.ofType as GraphQLInputType, path.slice(1));
  if (isInputObjectType(type)) return scalarAt(type.getFields()[path[0]!]!.type, path.slice(1));
  return type.name;
}

/** A valid-looking value for what `type` requires: required input fields filled, optional ones left out. */
function sample(type: GraphQLInputType): unknown {
  if (isNonNullType(type)) return sample(type.ofType);
  if (isListType(type)) return [sample(type.ofType as GraphQLInputType)];
  if (isEnumType(type)) return type.getValues()[0]!.value;
  if (isInputObjectType(type)) {
    const value: Record<string, unknown> = {};
    for (const field of Object.values(type.getFields())) if (isNonNullType(field.type) && field.defaultValue === undefined) value[field.name] = sample(field.type);
    return value;
  }
  return { Int: 1, Float: 1, Boolean: false, ID: randomUUID() }[type.name] ?? 'text';
}

/** `value` with the string at `path` (through `type`) replaced by one holding NUL, containers made as needed. */
function withNul(type: GraphQLInputType, value: unknown, path: readonly string[]): unknown {
  if (isNonNullType(type)) return withNul(type.ofType, value, path);
  if (path.length === 0) return NUL_TEXT;
  const [step, ...rest] = path as [string, ...string[]];
  if (isListType(type)) {
    const list = Array.isArray(value) && value.length > 0 ? [...value] : [sample(type.ofType as GraphQLInputType)];
    list[0] = withNul(type.ofType as GraphQLInputType, list[0], rest);
    return list;
  }
  if (!isInputObjectType(type)) throw new Error(`no way into ${String(type)} at ${step}`);
  const object = (typeof value === 'object' && value !== null ? { ...value } : {}) as Record<string, unknown>;
  const field = type.getFields()[step]!;
  object[step] = withNul(field.type, object[step] ?? sample(field.type), rest);
  return object;
}

interface Case {
  operation: 'query' | 'mutation' | 'subscription';
  field: GraphQLField<unknown, unknown>;
  /** The argument and the way into it, as the refusal names it. */
  path: string;
  /** The scalar at the end of the path (String, ID, Upload, …). */
  scalar: string;
  /** Every argument of the field: the required ones sampled, the one tried with a NUL. */
  args: Record<string, unknown>;
}

function cases(operation: Case['operation'], root: GraphQLObjectType | null | undefined): Case[] {
  return Object.values(root?.getFields() ?? {}).flatMap((field) =>
    field.args.flatMap((arg) =>
      stringPaths(arg.type).map((path) => {
        const args: Record<string, unknown> = {};
        for (const other of field.args) if (isNonNullType(other.type) && other.defaultValue === undefined) args[other.name] = sample(other.type);
        args[arg.name] = withNul(arg.type, args[arg.name], path);
        return { operation, field, path: [arg.name, ...path].join('.'), scalar: scalarAt(arg.type, path), args };
      }),
    ),
  );
}

const selection = (field: GraphQLField<unknown, unknown>) => (isCompositeType(getNamedType(field.type)) ? ' { __typename }' : '');

/** The case as an operation passing every argument in a variable. */
function withVariables(c: Case): { query: string; variables: Record<string, unknown> } {
  const used = c.field.args.filter((arg) => arg.name in c.args);
  const declared = used.map((arg) => `$${arg.name}: ${String(arg.type)}`).join(', ');
  const passed = used.map((arg) => `${arg.name}: $${arg.name}`).join(', ');
  return { query: `${c.operation}${declared ? `(${declared})` : ''} { ${c.field.name}(${passed})${selection(c.field)} }`, variables: c.args };
}

/** The case as an operation with every argument a literal. */
function withLiterals(c: Case): string {
  const passed = c.field.args
    .filter((arg) => arg.name in c.args)
    .map((arg) => `${arg.name}: ${print(astFromValue(c.args[arg.name], arg.type)!)}`)
    .join(', ');
  return `${c.operation} { ${c.field.name}(${passed})${selection(c.field)} }`;
}

const requests = [...cases('query', schema.getQueryType()), ...cases('mutation', schema.getMutationType())];
const subscriptions = cases('subscription', schema.getSubscriptionType());

describe('a NUL character in any string argument of the API', () => {
  let system: TestSystem;

  beforeAll(async () => {
    system = await startEmbeddedSystem({ env: { NODE_ENV: 'production' } });
  }, 60_000);
  afterAll(async () => {
    await system?.stop();
  });

  async function send(body: { query: string; variables?: Record<string, unknown> }) {
    const response = await fetch(system.gateways[0]!, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${await system.token()}` },
      body: JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as { errors?: { message: string; extensions?: { code?: string; field?: string } }[] } };
  }

  it('is found, from the schema, in the arguments this test must cover', () => {
    const found = [...requests, ...subscriptions].map((c) => `${c.field.name}(${c.path})`);
    // Not the list under test (that is whatever the schema has): a check that the generation sees
    // into input objects and lists, and that no argument of a non-root field escapes it.
    expect(found).toEqual(expect.arrayContaining(['document(id)', 'uploadDocument(input.title)', 'uploadDocument(input.content)', 'createWebhook(input.url)', 'jobCompleted(jobId)']));
    const nested = Object.values(schema.getTypeMap())
      .filter((type) => type.name !== 'Query' && type.name !== 'Mutation' && type.name !== 'Subscription' && !type.name.startsWith('__') && 'getFields' in type && !isInputObjectType(type))
      .flatMap((type) => Object.values((type as GraphQLObjectType).getFields()).flatMap((field) => field.args.filter((arg) => stringPaths(arg.type).length > 0).map((arg) => `${type.name}.${field.name}(${arg.name})`)));
    expect(nested, 'a field below the root takes a string: reach it from a root field in this test').toEqual([]);
  });

  it.each(requests.map((c) => [`${c.operation} ${c.field.name}(${c.path})`, c] as const))('%s: BAD_USER_INPUT naming the argument, as a variable and as a literal', async (_name, c) => {
    for (const [form, body] of [['variable', withVariables(c)], ['literal', { query: withLiterals(c) }]] as const) {
      const { status, body: answer } = await send(body);
      const codes = (answer.errors ?? []).map((e) => e.extensions?.code);
      expect(status, `${body.query}: ${JSON.stringify(answer)}`).toBeLessThan(500);
      expect(codes, body.query).not.toContain('INTERNAL_SERVER_ERROR');
      // A custom scalar may refuse every literal, before any NUL is looked for: Upload does (a
      // file is a part of a multipart request, never a literal). That is the client's error too.
      if (form === 'literal' && c.scalar !== 'String' && c.scalar !== 'ID' && codes[0] === 'GRAPHQL_VALIDATION_FAILED') continue;
      expect(answer.errors, body.query).toEqual([expect.objectContaining({ message: expect.stringContaining('NUL character'), extensions: expect.objectContaining({ code: 'BAD_USER_INPUT', field: c.path }) })]);
    }
  });

  it('refuses a file name with a raw NUL as a malformed request, and stores one sent percent-encoded without it', async () => {
    const upload = async (disposition: string) => {
      const boundary = 'nul-test-boundary';
      const operations = JSON.stringify({ query: 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { file { name } } } }', variables: { input: { title: 'Named', file: null } } });
      const part = (headers: string, body: string) => `--${boundary}\r\n${headers}\r\n\r\n${body}\r\n`;
      const body = [
        part('Content-Disposition: form-data; name="operations"', operations),
        part('Content-Disposition: form-data; name="map"', JSON.stringify({ 0: ['variables.input.file'] })),
        part(`Content-Disposition: form-data; name="0"; ${disposition}\r\nContent-Type: text/plain`, 'Plain text about tides and turbines.'),
        `--${boundary}--\r\n`,
      ].join('');
      const response = await fetch(system.gateways[0]!, {
        method: 'POST',
        headers: { authorization: `Bearer ${await system.token()}`, 'apollo-require-preflight': 'true', 'content-type': `multipart/form-data; boundary=${boundary}` },
        body,
      });
      return [response.status, await response.json()] as const;
    };
    expect(await upload('filename="notes\u0000.txt"')).toEqual([400, { errors: [{ message: 'malformed multipart request: Malformed part header', extensions: { code: 'BAD_REQUEST' } }] }]);
    // RFC 5987's filename*: the name decoded holds NUL, dropped as the name's other control characters are.
    expect(await upload("filename*=UTF-8''notes%00.txt")).toEqual([200, { data: { uploadDocument: { document: { file: { name: 'notes.txt' } } } } }]);
  });

  it.each(subscriptions.map((c) => [`${c.field.name}(${c.path})`, c] as const))('subscription %s: BAD_USER_INPUT, then the stream ends', async (_name, c) => {
    const { query, variables } = withVariables(c);
    const messages = await collect(system.ws(), query, variables, 10_000);
    const errors = messages.flatMap((m) => m.errors ?? []);
    expect(errors.map((e) => e.extensions?.code)).toEqual(['BAD_USER_INPUT']);
    expect(errors[0]!.message).toContain('NUL character');
  });
});
