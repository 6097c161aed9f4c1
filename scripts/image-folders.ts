/**
 * Each image's runtime folder without Docker: the Dockerfile's `pnpm deploy --prod` of every
 * service into a temporary folder laid out as the image's /app (service/ + schema/), after
 * `pnpm build`. Checks that no folder carries tsx, typescript or esbuild and that only
 * analysis carries openai, reports each folder's size (`du -sh`), and starts each service from
 * its folder as the image's CMD does (its start script), outside the repository so nothing
 * resolves from the workspace's node_modules, until /ready answers (embedded PGlite, in-memory
 * bus), then stops it with SIGTERM.
 *
 *   pnpm build && pnpm exec tsx scripts/image-folders.ts [service…]   (IMAGE_FOLDERS_DIR to keep them)
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SERVICE_DIRS } from './build.ts';

const root = fileURLToPath(new URL('../', import.meta.url));
const FORBIDDEN = /^(tsx|typescript|esbuild|@esbuild\+[^@]+)@/;

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });

/** The image's CMD: the package's start script without its shell's `exec`. */
function startCommand(dir: string): string[] {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { scripts?: { start?: string } };
  const [exec, ...command] = (pkg.scripts?.start ?? '').split(/\s+/);
  if (exec !== 'exec' || command[0] !== 'node') throw new Error(`${dir}: start is not \`exec node …\``);
  return command.slice(1);
}

async function startAndStop(name: string, dir: string): Promise<string> {
  const port = await freePort();
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    PORT: String(port),
    TRIBUTARY_DATA_DIR: 'memory://',
    INTERNAL_SIGNING_SECRET: randomBytes(48).toString('base64'),
    AUTH_JWT_SECRET: randomBytes(48).toString('base64'),
  };
  const started = performance.now();
  const child = spawn(process.execPath, startCommand(dir), { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-3000)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}: ${stderr}`);
      if (Date.now() > deadline) throw new Error(`${name}: /ready did not answer 200 within 60 s: ${stderr}`);
      const status = await fetch(`http://127.0.0.1:${port}/ready`).then((r) => r.status, () => 0);
      if (status === 200) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const cmdline = readFileSync(`/proc/${child.pid!}/cmdline`, 'utf8').split('\0').join(' ');
    if (/tsx|typescript|esbuild/.test(cmdline)) throw new Error(`${name}: ${cmdline}`);
    return `ready in ${Math.round(performance.now() - started)} ms`;
  } finally {
    child.kill('SIGTERM');
    const code = await exited;
    if (code !== 0) throw new Error(`${name}: exit ${code} on SIGTERM: ${stderr}`);
  }
}

const wanted = process.argv.slice(2);
const base = process.env.IMAGE_FOLDERS_DIR ?? mkdtempSync(join(tmpdir(), 'tributary-images-'));
const problems: string[] = [];
const rows: string[] = [];
for (const [name, dir] of Object.entries(SERVICE_DIRS)) {
  if (wanted.length > 0 && !wanted.includes(name)) continue;
  if (!existsSync(join(root, dir, 'dist/main.js'))) throw new Error(`${dir}/dist/main.js is missing: pnpm build first`);
  const app = join(base, name);
  rmSync(app, { recursive: true, force: true });
  const service = join(app, 'service');
  // The Dockerfile's build stage, from the deploy on.
  execFileSync('pnpm', ['--fail-if-no-match', '--filter', `@tributary/${name}`, 'deploy', '--prod', '--frozen-lockfile', service], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  mkdirSync(join(app, 'schema'));
  copyFileSync(join(root, 'schema/supergraph.graphql'), join(app, 'schema/supergraph.graphql'));

  const packages = readdirSync(join(service, 'node_modules/.pnpm'));
  const forbidden = packages.filter((p) => FORBIDDEN.test(p));
  if (forbidden.length > 0) problems.push(`${name} carries ${forbidden.join(', ')}`);
  const openai = packages.some((p) => p.startsWith('openai@'));
  if (openai !== (name === 'analysis')) problems.push(`${name} ${openai ? 'carries' : 'lacks'} openai`);
  const top = readdirSync(service).sort();
  const size = execFileSync('du', ['-sh', app], { encoding: 'utf8' }).split('\t')[0];
  let run: string;
  try {
    run = await startAndStop(name, service);
  } catch (error) {
    run = 'FAILED';
    problems.push((error as Error).message);
  }
  rows.push(`${name.padEnd(10)} ${String(size).padStart(6)}  ${String(packages.length - 2).padStart(4)} packages  openai: ${openai ? 'yes' : 'no '}  tsx/typescript/esbuild: ${forbidden.length > 0 ? forbidden.join(',') : 'none'}  [${top.join(' ')}]  ${run}`);
  console.log(rows.at(-1));
}
if (!process.env.IMAGE_FOLDERS_DIR) rmSync(base, { recursive: true, force: true });
if (problems.length > 0) {
  console.error(`image folders:\n  ${problems.join('\n  ')}`);
  process.exitCode = 1;
}
