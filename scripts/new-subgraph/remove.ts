/**
 * `pnpm remove:subgraph <name>`: what `pnpm new:subgraph` added, taken out again: the package
 * folder, its client operations (schema/operations/<name>.graphql), its entries in schema/package.json, docker-compose.yml (its service, the gateway's URL
 * of it and wait for it), docker/postgres-init.sql and the Dockerfile's port map; then
 * `pnpm install` and `pnpm schema:compose` (which deletes its SDL file). The contracts of events it
 * published stay: their events may still be in queues, dead letters or replays (removing a
 * version fails `pnpm schema:check`). Its database and queues stay on your servers.
 * Every edit is worked out before any is written; a file of an unexpected shape writes nothing.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EditError } from './edits.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(join(root, path), 'utf8');
const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function withoutDependency(text: string, name: string): string {
  const pkg = JSON.parse(text) as { dependencies?: Record<string, string> };
  delete pkg.dependencies?.[`@tributary/${name}`];
  return `${JSON.stringify(pkg, null, 2)}\n`;
}

/** docker-compose.yml without the service's block, its SUBGRAPH_URLS entry and the gateway's wait for it. */
export function withoutComposeService(text: string, name: string): string {
  // The block: its key line to the next service key (or the end of `services:`), blank lines included.
  const block = new RegExp(`^ {2}${escape(name)}:\\n(?:(?: {4}.*)?\\n)*?(?=^ {2}[\\w-]+:|^\\S)`, 'm');
  if (!block.test(text)) throw new EditError(`docker-compose.yml has no service ${name}`);
  return text
    .replace(block, '')
    .replace(new RegExp(`,${escape(name)}=http://[^,$\\n]*`), '')
    .replace(new RegExp(`^ {6}${escape(name)}: \\{ condition: service_healthy \\}\\n`, 'm'), '');
}

function main(): void {
  const name = process.argv[2] ?? '';
  if (!/^[a-z][a-z0-9]{1,29}$/.test(name) || process.argv.length !== 3 || !existsSync(join(root, 'subgraphs', name, 'package.json'))) {
    console.error(`pnpm remove:subgraph: nothing was removed: "${name}" is no subgraph made by pnpm new:subgraph (subgraphs/<name>/)\nusage: pnpm remove:subgraph <name>`);
    process.exit(1);
  }
  const port = new RegExp(`, ${escape(name)}: \\d+`);
  const database = new RegExp(`^CREATE DATABASE tributary_${escape(name)};\\n`, 'm');
  let edits: Record<string, string>;
  try {
    const dockerfile = read('Dockerfile');
    const init = read('docker/postgres-init.sql');
    if (!port.test(dockerfile)) throw new EditError(`Dockerfile's port map has no ${name}`);
    edits = {
      'schema/package.json': withoutDependency(read('schema/package.json'), name),
      'docker-compose.yml': withoutComposeService(read('docker-compose.yml'), name),
      'docker/postgres-init.sql': init.replace(database, ''),
      Dockerfile: dockerfile.replace(port, ''),
    };
  } catch (error) {
    if (!(error instanceof EditError)) throw error;
    console.error(`pnpm remove:subgraph: nothing was removed: ${error.message} (see docs/add-a-subgraph.md to remove it by hand)`);
    process.exit(1);
  }
  rmSync(join(root, 'subgraphs', name), { recursive: true, force: true });
  rmSync(join(root, 'schema/operations', `${name}.graphql`), { force: true });
  for (const [path, text] of Object.entries(edits)) writeFileSync(join(root, path), text);
  for (const args of [['install', '--prefer-offline', '--no-frozen-lockfile'], ['schema:compose']]) {
    console.log(`\n$ pnpm ${args.join(' ')}`);
    if (spawnSync('pnpm', args, { cwd: root, stdio: 'inherit' }).status !== 0) {
      console.error(`pnpm remove:subgraph: pnpm ${args.join(' ')} failed; the subgraph's files are removed: run it again once fixed`);
      process.exit(1);
    }
  }
  console.log(`\nRemoved the ${name} subgraph. Its events' contracts stay in packages/contracts (and a client using Query.${name} is a breaking change pnpm schema:check reports).`);
}

main();
