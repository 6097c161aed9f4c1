/**
 * `pnpm new:subgraph <name> [--consumes analysis.completed/v1,…] [--publishes <type>] [--port N]`:
 * a new subgraph in house style under subgraphs/<name>/ (a view folded from the events it
 * consumes, a query of it, its tests), added to the few files that cannot derive it (see
 * edits.ts), then `pnpm install` (to link the package) and `pnpm schema:compose`.
 *
 * Everything is checked before anything is written: an invalid or taken name, an unknown event
 * type or a taken port is refused with every reason at once (exit 1; a malformed command line
 * exits 2), and nothing is written. The package is written to a temporary folder and moved into
 * place; if a later step fails, every file is put back as it was. Guide: docs/add-a-subgraph.md.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadSubgraphServices } from '../../schema/src/subgraphs.ts';
import { contractSample, contractsEvents, dockerCompose, dockerfile, EditError, operations, postgresInit, schemaPackageJson } from './edits.ts';
import { otherNames, parseArgs, planSubgraph, supergraphNames, USAGE, type SubgraphPlan } from './plan.ts';
import { entitiesTs, foldTs, indexTs, mainTs, packageJson, schemaTs, serviceTs } from './templates.ts';
import { eventsTs, foldTestTs, viewIntTestTs } from './test-templates.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(join(root, path), 'utf8');

/** The package's files, relative to subgraphs/<name>/. */
function packageFiles(p: SubgraphPlan): Record<string, string> {
  return {
    'package.json': packageJson(p),
    'src/index.ts': indexTs(p),
    'src/main.ts': mainTs(p),
    'src/schema.ts': schemaTs(p),
    'src/entities.ts': entitiesTs(p),
    'src/fold.ts': foldTs(p),
    'src/service.ts': serviceTs(p),
    'test/events.ts': eventsTs(),
    'test/fold.test.ts': foldTestTs(p),
    'test/view.int.test.ts': viewIntTestTs(p),
  };
}

/** The repository files the subgraph is added to, by path: their new text (throws EditError). */
function repoEdits(p: SubgraphPlan): Record<string, string> {
  const edits: Record<string, string> = {
    'schema/package.json': schemaPackageJson(read('schema/package.json'), p),
    'docker-compose.yml': dockerCompose(read('docker-compose.yml'), p),
    'docker/postgres-init.sql': postgresInit(read('docker/postgres-init.sql'), p),
    Dockerfile: dockerfile(read('Dockerfile'), p),
  };
  const ops = `schema/operations/${p.name}.graphql`;
  const names = readdirSync(join(root, 'schema/operations')).flatMap((f) => [...read(`schema/operations/${f}`).matchAll(/^(?:query|mutation|subscription)\s+(\w+)/gm)].map((m) => m[1]));
  for (const name of [`${p.pascal}View`, `${p.pascal}Updated`]) if (names.includes(name)) throw new EditError(`schema/operations has an operation named ${name} already`);
  if (existsSync(join(root, ops))) throw new EditError(`${ops} exists already`);
  edits[ops] = operations(p);
  if (p.publishes) {
    edits['packages/contracts/src/events.ts'] = contractsEvents(read('packages/contracts/src/events.ts'), p);
    const sample = `schema/events/samples/${p.publishes}.v1.json`;
    if (existsSync(join(root, sample))) throw new EditError(`${sample} exists already`);
    edits[sample] = contractSample(p);
  }
  return edits;
}

/** Puts back what {@link write} changed: files as they were, new ones removed. */
type Undo = () => void;

function write(p: SubgraphPlan, files: Record<string, string>, edits: Record<string, string>): Undo {
  const before = new Map<string, string | undefined>();
  const target = join(root, 'subgraphs', p.name);
  // The lockfile and the generated schema files change in the steps after this one.
  const touched = [...Object.keys(edits), 'pnpm-lock.yaml', 'schema/supergraph.graphql', `schema/subgraphs/${p.name}.graphql`];
  if (p.publishes) touched.push(`schema/events/${p.publishes}.v1.json`);
  for (const path of touched) before.set(path, existsSync(join(root, path)) ? read(path) : undefined);
  const undo: Undo = () => {
    rmSync(target, { recursive: true, force: true });
    for (const [path, text] of before) {
      if (text === undefined) rmSync(join(root, path), { force: true });
      else writeFileSync(join(root, path), text);
    }
  };
  // Built beside its place and moved in whole: the workspace never sees half a package.
  const staging = mkdtempSync(join(root, 'subgraphs', `.new-${p.name}-`));
  try {
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(dirname(join(staging, path)), { recursive: true });
      writeFileSync(join(staging, path), text);
    }
    renameSync(staging, target);
    for (const [path, text] of Object.entries(edits)) writeFileSync(join(root, path), text);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    undo();
    throw error;
  }
  return undo;
}

function run(command: string, args: string[]): void {
  console.log(`\n$ ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.error?.message ?? `exit ${result.status ?? result.signal}`})`);
}

function refuse(problems: string[], code: number): never {
  console.error(`pnpm new:subgraph: nothing was written:\n  ${problems.join('\n  ')}${code === 2 ? `\n${USAGE}` : ''}`);
  process.exit(code);
}

async function main(): Promise<void> {
  const { request, problems } = parseArgs(process.argv.slice(2));
  if (problems.length > 0) refuse(problems, 2);
  const subgraphs = (await loadSubgraphServices()).map((d) => ({ name: d.name, defaultPort: d.defaultPort }));
  const { plan, problems: refused } = planSubgraph(request, { subgraphs, otherNames: otherNames(root), ...supergraphNames(read('schema/supergraph.graphql')) });
  if (!plan) return refuse(refused, 1);

  let edits: Record<string, string>;
  try {
    edits = repoEdits(plan);
  } catch (error) {
    if (error instanceof EditError) return refuse([error.message], 1);
    throw error;
  }
  const files = packageFiles(plan);
  const undo = write(plan, files, edits);
  try {
    // Explicitly: under CI=true pnpm would refuse to update the lockfile, which the new package must enter.
    run('pnpm', ['install', '--prefer-offline', '--no-frozen-lockfile']);
    run('pnpm', ['schema:compose']);
  } catch (error) {
    undo();
    console.error(`\npnpm new:subgraph: ${(error as Error).message}; every file is back as it was (run \`pnpm install\` to drop the package's link).`);
    process.exit(1);
  }
  const written = [...Object.keys(files).map((f) => `subgraphs/${plan.name}/${f}`), ...Object.keys(edits)];
  console.log(`
The ${plan.name} subgraph (port ${plan.port}) folds ${plan.consumes.join(', ')}${plan.publishes ? ` and publishes ${plan.publishes}/v1` : ''}.
Written: ${written.join(', ')}; composed into schema/supergraph.graphql.
Next: pnpm typecheck && pnpm exec vitest run subgraphs/${plan.name}; then pnpm dev and query { ${plan.name} { events byType { type count } } }.
What each file is for, how to evolve its events and how to remove it: docs/add-a-subgraph.md.`);
}

await main();
