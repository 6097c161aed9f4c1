import { contracts } from '@tributary/contracts';
import { Kind, parse, type DocumentNode } from 'graphql';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const src = fileURLToPath(new URL('../src/', import.meta.url));

/** Every file under gateway/src, GraphiQL's browser code and styles included. */
function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? files(path) : [path];
  });
}
const sources = files(src).map((file) => ({ at: file.slice(src.length), text: readFileSync(file, 'utf8') }));

// The product, read from what the subgraphs declare: the supergraph's types and root fields (the
// committed one, the gateway's defaultSupergraphPath), and the event types of the contracts.
const supergraph = parse(readFileSync(new URL('../../schema/supergraph.graphql', import.meta.url), 'utf8'));
const ROOTS = ['Query', 'Mutation', 'Subscription'];
const typeNames: string[] = [];
const rootFields: Record<string, string[]> = {};
for (const definition of supergraph.definitions) {
  if (definition.kind !== Kind.OBJECT_TYPE_DEFINITION && definition.kind !== Kind.INPUT_OBJECT_TYPE_DEFINITION && definition.kind !== Kind.ENUM_TYPE_DEFINITION && definition.kind !== Kind.SCALAR_TYPE_DEFINITION) continue;
  const name = definition.name.value;
  // Federation's and the link spec's own types are the gateway's business.
  if (/^(join|link)__/.test(name)) continue;
  if (ROOTS.includes(name)) rootFields[name] = definition.kind === Kind.OBJECT_TYPE_DEFINITION ? (definition.fields ?? []).map((f) => f.name.value) : [];
  else typeNames.push(name);
}
const eventTypes = [...new Set(Object.keys(contracts).map((schema) => schema.split('/')[0]!))];

/** Lines of gateway/src that name `name` as a whole word (dots included: `job.updated`). */
function naming(name: string): string[] {
  const word = new RegExp(`(?<![\\w.])${name.replace(/\./g, '\\.')}(?![\\w])`);
  return sources.flatMap(({ at, text }) => text.split('\n').flatMap((line, i) => (word.test(line) ? [`${at}:${i + 1}: ${line.trim()}`] : [])));
}

/** The root fields the operations in a string literal select, if it holds a GraphQL document. */
function selectedRootFields(literal: string): string[] {
  if (literal.includes('${') || !/^\s*(#[^\n]*\n\s*)*(\{|query\b|mutation\b|subscription\b)/.test(literal)) return [];
  let document: DocumentNode;
  try {
    document = parse(literal);
  } catch {
    return [];
  }
  return document.definitions.flatMap((d) => (d.kind === Kind.OPERATION_DEFINITION ? d.selectionSet.selections.flatMap((s) => (s.kind === Kind.FIELD ? [s.name.value] : [])) : []));
}

describe('the gateway knows no product', () => {
  it('reads the product from the supergraph and the contracts (what the checks below look for)', () => {
    expect(typeNames).toContain('Job');
    expect(rootFields.Subscription).toContain('jobCompleted');
    expect(rootFields.Query).toContain('stats');
    expect(eventTypes).toContain('job.updated');
  });

  it('names none of our types, subscriptions or events anywhere in gateway/src, GraphiQL included', () => {
    const names = [...typeNames, ...(rootFields.Subscription ?? []), ...eventTypes];
    expect(names.flatMap(naming)).toEqual([]);
  });

  it('names our mutations nowhere but our upload mutation as the default of a setting (UPLOAD_RATE_LIMIT_FIELDS)', () => {
    const found = (rootFields.Mutation ?? []).flatMap(naming);
    expect(found.filter((at) => !(at.startsWith('config.ts:') && at.includes('uploadDocument')))).toEqual([]);
  });

  it('holds no GraphQL operation on our fields (GraphiQL opens on a query its embedder gives)', () => {
    const ours = new Set(Object.values(rootFields).flat());
    const found = sources.flatMap(({ at, text }) =>
      [...text.matchAll(/`([^`]*)`|'((?:[^'\\\n]|\\.)*)'|"((?:[^"\\\n]|\\.)*)"/g)].flatMap((m) => {
        const fields = selectedRootFields(m[1] ?? m[2] ?? m[3] ?? '').filter((f) => ours.has(f));
        return fields.length > 0 ? [`${at}:${text.slice(0, m.index).split('\n').length}: ${fields.join(', ')}`] : [];
      }),
    );
    expect(found).toEqual([]);
  });
});
