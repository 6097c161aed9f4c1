import { describe, expect, it } from 'vitest';
import { checkDrift, unifiedDiff } from '../src/drift.ts';

describe('drift of generated files', () => {
  const generated = { 'schema/supergraph.graphql': 'type Query {\n  a: Int\n  b: Int\n}\n' };

  it('passes files equal to what the code generates', () => {
    expect(checkDrift(generated, { ...generated })).toEqual([]);
  });

  it('fails a file that differs, with a diff and the command that fixes it', () => {
    const [violation, ...rest] = checkDrift(generated, { 'schema/supergraph.graphql': 'type Query {\n  a: Int\n}\n' });
    expect(rest).toEqual([]);
    expect(violation).toMatchObject({ code: 'SCHEMA_DRIFT', file: 'schema/supergraph.graphql', fix: 'pnpm schema:compose' });
    expect(violation?.diff).toBe(
      [
        '--- schema/supergraph.graphql (committed)',
        '+++ schema/supergraph.graphql (generated)',
        '@@ -1,4 +1,5 @@',
        ' type Query {',
        '   a: Int',
        '+  b: Int',
        ' }',
        ' ',
      ].join('\n'),
    );
  });

  it('fails a missing file and a file no longer generated', () => {
    const violations = checkDrift(generated, { 'schema/supergraph.graphql': undefined, 'schema/subgraphs/gone.graphql': 'type Query { x: Int }\n' });
    expect(violations.map((v) => [v.file, v.message])).toEqual([
      ['schema/supergraph.graphql', 'is missing'],
      ['schema/subgraphs/gone.graphql', 'is no longer generated (a removed subgraph?)'],
    ]);
  });
});

describe('unified diff', () => {
  it('keeps distant changes in separate hunks with two lines of context', () => {
    const before = Array.from({ length: 20 }, (_, i) => `line ${i + 1}`).join('\n');
    const after = before.replace('line 2\n', 'line two\n').replace('line 18', 'line eighteen');
    const hunks = unifiedDiff(before, after, 'f').split('\n').filter((l) => l.startsWith('@@'));
    expect(hunks).toEqual(['@@ -1,4 +1,4 @@', '@@ -16,5 +16,5 @@']);
  });

  it('cuts a long diff', () => {
    const after = Array.from({ length: 100 }, (_, i) => `${i}`).join('\n');
    const diff = unifiedDiff('', after, 'f', 10).split('\n');
    expect(diff).toHaveLength(11);
    expect(diff.at(-1)).toMatch(/^… \d+ more lines$/);
  });
});
