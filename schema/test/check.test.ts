import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { runCheck, type CheckOptions } from '../src/check.ts';
import { composeSubgraphs, generatedFiles, paths, snapshotText, type SubgraphSource } from '../src/compose.ts';
import { eventFileName } from '../src/events.ts';
import { graphql } from '../src/graphql-js.ts';
import { commitFixtureRepo } from './repo.ts';
import { formatReport, type CheckReport } from '../src/report.ts';

describe('schema check on this repository', () => {
  it('passes', { timeout: 60_000 }, async () => {
    const report = await runCheck();
    expect(report.exitCode, formatReport(report)).toBe(0);
    expect(report.steps.map((s) => s.step)).toEqual(['composition', 'drift', 'breaking', 'operations', 'events', 'bindings']);
  });
});

const subgraph = (fields: string): SubgraphSource => ({
  name: 'docs',
  url: 'http://docs',
  typeDefs: graphql.parse(`extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key"])\ntype Query { doc(id: ID!): Doc }\ntype Doc @key(fields: "id") { id: ID! ${fields} }`),
});
const contract = z.object({ docId: z.string() });

/** A throwaway git repository holding the committed schema files of `committed`. */
function fixtureRepo(committed: SubgraphSource): string {
  const root = mkdtempSync(join(tmpdir(), 'schema-check-'));
  const { sdls, result } = composeSubgraphs([committed]);
  if (result.errors) throw result.errors[0];
  const files: Record<string, string> = {
    ...generatedFiles(sdls, result),
    [`${paths.eventsDir}/${eventFileName('doc.added/v1')}`]: snapshotText(contract),
    [`${paths.samplesDir}/${eventFileName('doc.added/v1')}`]: '{ "docId": "d1" }',
    [`${paths.operationsDir}/doc.graphql`]: 'query Doc($id: ID!) { doc(id: $id) { id title } }',
  };
  commitFixtureRepo(root, files);
  roots.push(root);
  return root;
}
const roots: string[] = [];
afterAll(() => roots.forEach((root) => rmSync(root, { recursive: true, force: true })));

const check = (root: string, current: SubgraphSource, options: Partial<CheckOptions> = {}) =>
  runCheck({ root, subgraphs: [current], contracts: { 'doc.added/v1': contract }, ...options });
const stepOf = (report: CheckReport, step: string) => report.steps.find((s) => s.step === step);

describe('schema check on a fixture repository', () => {
  const withTitle = subgraph('title: String!');

  it('exits 0 and skips the breaking-change step when the base does not exist', async () => {
    const report = await check(fixtureRepo(withTitle), withTitle);
    expect(report.exitCode, formatReport(report)).toBe(0);
    expect(stepOf(report, 'breaking')).toMatchObject({ status: 'skipped', summary: 'no base, skipped: HEAD~1 does not exist' });
  });

  it('exits 1 on drift, a breaking change and a broken operation when a field is removed', async () => {
    const report = await check(fixtureRepo(withTitle), subgraph(''), { base: 'HEAD' });
    expect(report.exitCode).toBe(1);
    expect(stepOf(report, 'drift')?.violations.map((v) => v.file)).toEqual(['schema/subgraphs/docs.graphql', 'schema/supergraph.graphql']);
    expect(stepOf(report, 'breaking')?.violations).toEqual([expect.objectContaining({ detail: 'FIELD_REMOVED', coordinate: 'Doc.title' })]);
    expect(stepOf(report, 'operations')?.violations).toEqual([expect.objectContaining({ operation: 'Doc', message: 'Cannot query field "title" on type "Doc".' })]);
    expect(formatReport(report)).toContain('fix: pnpm schema:compose');
  });

  it('passes the breaking-change step when the change is approved', async () => {
    const root = fixtureRepo(withTitle);
    writeFileSync(join(root, paths.approvedChanges), JSON.stringify([{ change: 'Doc.title', reason: 'documents have names now' }]));
    const report = await check(root, subgraph(''), { base: 'HEAD' });
    expect(stepOf(report, 'breaking')).toMatchObject({ status: 'passed', notes: [expect.stringContaining('documents have names now')] });
  });

  it('exits 2 when the approved changes file is invalid', async () => {
    const root = fixtureRepo(withTitle);
    writeFileSync(join(root, paths.approvedChanges), JSON.stringify([{ change: 'Doc.title' }]));
    const report = await check(root, withTitle);
    expect(report.exitCode).toBe(2);
    expect(stepOf(report, 'breaking')).toMatchObject({ status: 'error', error: { code: 'APPROVED_CHANGES_INVALID' } });
  });

  it('exits 2 when the base cannot be read because the folder is not a repository', async () => {
    const root = mkdtempSync(join(tmpdir(), 'schema-check-'));
    roots.push(root);
    const report = await check(root, withTitle, { base: 'HEAD' });
    expect(stepOf(report, 'breaking')).toMatchObject({ status: 'error', error: { code: 'GIT_FAILED' } });
    expect(report.exitCode).toBe(2);
  });
});
