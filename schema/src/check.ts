/**
 * `pnpm schema:check [--base <git-ref>] [--json]`: composition, drift, breaking changes,
 * client operations, event contracts and event bindings, each reported as its own step.
 * Exit 0 clean, 1 violations, 2 could not run.
 *
 * This file does the reading (repo files, git); the rules live in graphql.ts, drift.ts,
 * events.ts and bindings.ts and take in-memory inputs.
 */
import { contracts as repoContracts } from '@tributary/contracts';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { z } from 'zod';
import { checkEventBindings } from './bindings.ts';
import { composeSubgraphs, generatedFiles, paths, repoRoot, subgraphs as repoSubgraphs, type SubgraphSource } from './compose.ts';
import { checkDrift } from './drift.ts';
import { checkEvents, dataschemaOf, type JsonSchema } from './events.ts';
import { apiSchema, checkBreakingChanges, checkOperations, compositionViolations, parseApprovedChanges } from './graphql.ts';
import { exitCodeOf, formatReport, SchemaCheckError, type CheckReport, type StepName, type StepResult, type Violation } from './report.ts';

export interface CheckOptions {
  /** Git ref whose committed `schema/supergraph.graphql` is the base for breaking changes. Default `HEAD~1`. */
  base?: string;
  /** Repository root the paths are read from. Default this repository. */
  root?: string;
  /** Subgraphs to compose. Default the repository's. */
  subgraphs?: readonly SubgraphSource[];
  /** Event contracts by `dataschema`. Default `@tributary/contracts`. */
  contracts?: Readonly<Record<string, z.ZodType>>;
}

/** Runs every step and never throws: a step that cannot run is reported with status `error` (exit 2). */
export async function runCheck(options: CheckOptions = {}): Promise<CheckReport> {
  const { base = 'HEAD~1', root = repoRoot, subgraphs = repoSubgraphs, contracts = repoContracts } = options;
  const steps: StepResult[] = [];
  let composed: ReturnType<typeof composeSubgraphs> | undefined;

  steps.push(
    await step('composition', 'Composition', () => {
      composed = composeSubgraphs(subgraphs);
      const { errors, hints } = composed.result;
      if (errors) return outcome(compositionViolations(errors, composed.sdls), '', `${errors.length} composition error(s)`);
      return outcome([], `${subgraphs.length} subgraphs compose (${hints.length} hint${hints.length === 1 ? '' : 's'})`, '');
    }),
  );
  const composedOk = composed?.result.errors === undefined ? composed?.result : undefined;

  steps.push(
    await step('drift', 'Drift of the committed schema files', () => {
      if (!composed) return skipped('composition did not run');
      const committed: Record<string, string | undefined> = {};
      for (const f of listFiles(root, paths.subgraphsDir, '.graphql')) committed[`${paths.subgraphsDir}/${f}`] = readText(root, `${paths.subgraphsDir}/${f}`);
      const generated: Record<string, string> = composedOk
        ? generatedFiles(composed.sdls, composedOk)
        : Object.fromEntries(Object.entries(composed.sdls).map(([name, sdl]) => [paths.subgraph(name), sdl]));
      if (composedOk) committed[paths.supergraph] = readText(root, paths.supergraph);
      const notes = composedOk ? [] : ['the supergraph was not compared: composition failed'];
      const n = Object.keys(generated).length;
      return outcome(checkDrift(generated, committed), `${n} generated files match the committed ones`, `the committed files differ from the code`, notes);
    }),
  );

  steps.push(
    await step('breaking', `Breaking changes of the API schema against ${base}`, async () => {
      const approvedText = readText(root, paths.approvedChanges);
      const approved = approvedText === undefined ? [] : parseApprovedChanges(approvedText, paths.approvedChanges);
      if (!composedOk) return skipped('composition failed');
      const baseSdl = readBaseSupergraph(root, base);
      if ('missing' in baseSdl) return skipped(`no base, skipped: ${baseSdl.missing}`);
      let baseSchema;
      try {
        baseSchema = apiSchema(baseSdl.sdl);
      } catch (e) {
        throw new SchemaCheckError('BASE_INVALID', `${base}:${paths.supergraph} is not a valid supergraph: ${(e as Error).message}`, { cause: e });
      }
      const { violations, notes, counts } = await checkBreakingChanges(baseSchema, apiSchema(composedOk.supergraphSdl), approved);
      const summary = `${counts.breaking} breaking, ${counts.approved} approved, ${counts.dangerous} dangerous, ${counts.safe} safe`;
      const fail = `${summary}; approve a deliberate one in ${paths.approvedChanges} with a reason`;
      return outcome(violations, summary, fail, notes);
    }),
  );

  steps.push(
    await step('operations', 'Client operations', () => {
      if (!composedOk) return skipped('composition failed');
      const files: Record<string, string> = {};
      for (const f of listFiles(root, paths.operationsDir, '.graphql')) files[`${paths.operationsDir}/${f}`] = readText(root, `${paths.operationsDir}/${f}`) ?? '';
      const { violations, operations } = checkOperations(apiSchema(composedOk.supergraphSdl), files);
      const n = Object.keys(files).length;
      return outcome(violations, `${operations} operations in ${n} files are valid`, `invalid operations`, n ? [] : [`no operations in ${paths.operationsDir}`]);
    }),
  );

  steps.push(
    await step('events', 'Event contracts', () => {
      const snapshots: Record<string, JsonSchema> = {};
      const samples: Record<string, unknown> = {};
      const notes: string[] = [];
      for (const [dir, into] of [
        [paths.eventsDir, snapshots],
        [paths.samplesDir, samples],
      ] as const) {
        for (const f of listFiles(root, dir, '.json')) {
          const event = dataschemaOf(f);
          if (event === undefined) {
            notes.push(`ignored ${dir}/${f}: not named <type>.v<n>.json`);
            continue;
          }
          const json = readJson(root, `${dir}/${f}`);
          if (into === snapshots && (typeof json !== 'object' || json === null || Array.isArray(json)))
            throw new SchemaCheckError('FILE_UNREADABLE', `${dir}/${f} is not a JSON Schema object`);
          into[event] = json as JsonSchema;
        }
      }
      const versions = Object.keys(contracts).length;
      return outcome(
        checkEvents({ contracts, snapshots, samples }),
        `${versions} contract versions match their snapshots; ${Object.keys(samples).length} golden samples parse`,
        'event contracts break their snapshots or samples (an incompatible shape is a new version: see schema/README.md)',
        notes,
      );
    }),
  );

  steps.push(
    await step('bindings', 'Event bindings', () => {
      if (!composed || !composedOk) return skipped('composition failed');
      const { violations, subscriptions, changes } = checkEventBindings({ sdls: composed.sdls, schema: apiSchema(composedOk.supergraphSdl), contracts });
      const n = Object.keys(composed.sdls).length;
      return outcome(
        violations,
        `${subscriptions} @eventSubscription and ${changes} @changedBy bindings in ${n} subgraphs match the API schema and the event contracts`,
        'event bindings name what the API schema or the event contracts do not have (the gateway refuses to start with them)',
      );
    }),
  );

  return { exitCode: exitCodeOf(steps), steps };
}

type Outcome = Omit<StepResult, 'step' | 'title'>;

async function step(name: StepName, title: string, run: () => Outcome | Promise<Outcome>): Promise<StepResult> {
  try {
    return { step: name, title, ...(await run()) };
  } catch (e) {
    const error = e instanceof SchemaCheckError ? { code: e.code, message: e.message } : { code: 'UNEXPECTED', message: String((e as Error).stack ?? e) };
    return { step: name, title, status: 'error', summary: 'could not run', violations: [], notes: [], error };
  }
}

function outcome(violations: Violation[], passed: string, failed: string, notes: string[] = []): Outcome {
  return violations.length
    ? { status: 'failed', summary: failed, violations, notes }
    : { status: 'passed', summary: passed, violations, notes };
}

const skipped = (why: string): Outcome => ({ status: 'skipped', summary: why, violations: [], notes: [] });

/** A file's text, or undefined when it does not exist. */
function readText(root: string, file: string): string | undefined {
  try {
    return readFileSync(join(root, file), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SchemaCheckError('FILE_UNREADABLE', `cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
}

function readJson(root: string, file: string): unknown {
  const text = readText(root, file);
  try {
    return JSON.parse(text ?? '');
  } catch (e) {
    throw new SchemaCheckError('FILE_UNREADABLE', `${file} is not JSON: ${(e as Error).message}`, { cause: e });
  }
}

/** File names in a folder with the extension, sorted; none when the folder does not exist. */
function listFiles(root: string, dir: string, ext: string): string[] {
  try {
    return readdirSync(join(root, dir)).filter((f) => f.endsWith(ext)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new SchemaCheckError('FILE_UNREADABLE', `cannot list ${dir}: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * The supergraph committed at `ref`. A ref or file that does not exist (first commit, shallow
 * clone, supergraph not yet committed) is `missing`, not an error; any other git failure is.
 * @throws SchemaCheckError `GIT_FAILED`
 */
export function readBaseSupergraph(root: string, ref: string): { sdl: string } | { missing: string } {
  if (ref.startsWith('-')) throw new SchemaCheckError('GIT_FAILED', `not a git ref: ${ref}`);
  const git = (...args: string[]) => {
    const r = spawnSync('git', args, { cwd: root, encoding: 'utf8' });
    if (r.error) throw new SchemaCheckError('GIT_FAILED', `git ${args.join(' ')}: ${r.error.message}`, { cause: r.error });
    return r;
  };
  const rev = git('rev-parse', '--verify', '--quiet', `${ref}^{commit}`);
  // --verify --quiet exits 1 with no output for an unknown revision; other codes (128: not a repository) are failures.
  if (rev.status === 1) return { missing: `${ref} does not exist` };
  if (rev.status !== 0) throw new SchemaCheckError('GIT_FAILED', `git rev-parse ${ref}: ${rev.stderr.trim()}`);
  const spec = `${rev.stdout.trim()}:${paths.supergraph}`;
  if (git('cat-file', '-e', spec).status !== 0) return { missing: `${paths.supergraph} does not exist at ${ref}` };
  const show = git('show', spec);
  if (show.status !== 0) throw new SchemaCheckError('GIT_FAILED', `git show ${ref}:${paths.supergraph}: ${show.stderr.trim()}`);
  return { sdl: show.stdout };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  let args;
  try {
    args = parseArgs({ options: { base: { type: 'string' }, json: { type: 'boolean', default: false } } }).values;
  } catch (e) {
    console.error(`${(e as Error).message}\nusage: pnpm schema:check [--base <git-ref>] [--json]`);
    process.exit(2);
  }
  const report = await runCheck(args.base === undefined ? {} : { base: args.base });
  console.log(args.json ? JSON.stringify(report, null, 2) : formatReport(report));
  process.exitCode = report.exitCode;
}
