/**
 * `pnpm new:subgraph` as a team would use it (issue 28), in a copy of the repository so this one
 * is never touched: refusals write nothing; a generated subgraph typechecks, composes, passes
 * `schema:check`, its own tests and the deployment checks (docker-compose.yml, the Dockerfile);
 * `pnpm dev` runs it, and an upload reaches its view through the gateway; its built dist/main.js
 * runs on PostgreSQL and RabbitMQ, alone and beside the others' (fixtures/deployed-view.ts);
 * `pnpm remove:subgraph` takes it out again. The copy is the working tree's files (what a clone has in CI)
 * with its own `pnpm install --offline`, removed at the end.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '@tributary/core';
import { dropDatabase } from '@tributary/core/db';
import { createTransport, deleteNamespace } from '@tributary/core/events';
import { signIdentity } from '@tributary/core/identity';
import { brokerQueues, freePort, namespacedDatabaseName, namespacedDatabaseUrl, servicesAvailable, startScriptArgs, stopProcesses, TEST_AMQP_URL, TEST_DATABASE_URL, testNamespace, waitFor } from '@tributary/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
// The commands run as a user's would: not inside this vitest (its reporter settings among them).
const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('VITEST') && key !== 'NODE_OPTIONS' && key !== 'TEST'));

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a command in `cwd` to its end; a non-zero exit fails unless `allowFailure`. */
function run(cwd: string, command: string, args: string[], options: { allowFailure?: boolean; extraEnv?: Record<string, string> } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: { ...env, ...options.extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code !== 0 && !options.allowFailure) reject(new Error(`${command} ${args.join(' ')} exited with ${code}:\n${stdout.slice(-4000)}\n${stderr.slice(-4000)}`));
      else resolve({ code, stdout, stderr });
    });
  });
}

/** Changed and new files of the copy, as `git status --porcelain` lists them. */
const changes = async (copy: string) => (await run(copy, 'git', ['status', '--porcelain', '--untracked-files=all'])).stdout.trim();

describe.skipIf(!(await servicesAvailable()))('pnpm new:subgraph in a copy of the repository', () => {
  let copy = '';
  const log = createLogger({ service: 'test', level: 'silent' });

  beforeAll(async () => {
    copy = mkdtempSync(join(tmpdir(), 'tributary-new-subgraph-'));
    const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root }).toString().split('\0').filter(Boolean);
    for (const file of files) {
      if (!existsSync(join(root, file))) continue; // deleted in the working tree
      mkdirSync(dirname(join(copy, file)), { recursive: true });
      copyFileSync(join(root, file), join(copy, file));
    }
    // A repository of its own, so `git status` shows what the generator wrote.
    await run(copy, 'git', ['init', '-q']);
    await run(copy, 'git', ['add', '-A']);
    await run(copy, 'git', ['-c', 'user.name=test', '-c', 'user.email=test@example.com', 'commit', '-qm', 'base']);
    // Not frozen: CI's own install checks the lockfile; here a package.json being edited in the checkout must not stop the test.
    await run(copy, 'pnpm', ['install', '--offline', '--no-frozen-lockfile']);
  }, 300_000);
  afterAll(() => {
    if (copy) rmSync(copy, { recursive: true, force: true });
  });

  it('refuses a taken name, an invalid name and an unknown event type with a clear message, writing nothing', async () => {
    const refusals: [string[], RegExp][] = [
      [['insights'], /the name "insights" is taken/],
      [['Word-Count'], /invalid name "Word-Count"/],
      [['wordcount', '--consumes', 'analysis.finished/v1'], /unknown event type "analysis\.finished\/v1"/],
      [['wordcount', '--publishes', 'analysis.completed'], /exists already/],
    ];
    for (const [args, message] of refusals) {
      const result = await run(copy, 'pnpm', ['new:subgraph', ...args], { allowFailure: true });
      expect(result.code, args.join(' ')).toBe(1);
      expect(result.stderr, args.join(' ')).toMatch(message);
      expect(result.stderr, args.join(' ')).toMatch(/nothing was written/);
      expect(await changes(copy), args.join(' ')).toBe('');
    }
  }, 180_000);

  it('generates subgraphs that typecheck, compose, pass schema:check, their own tests and the deployment checks', async () => {
    await run(copy, 'pnpm', ['new:subgraph', 'wordcount', '--consumes', 'analysis.completed/v1']);
    // And one that publishes: its contract, sample, @eventSubscription and @changedBy.
    await run(copy, 'pnpm', ['new:subgraph', 'wordtally', '--consumes', 'analysis.completed/v1,document.uploaded/v1', '--publishes', 'wordtally.updated']);
    const changed = await changes(copy);
    for (const path of ['subgraphs/wordcount/src/fold.ts', 'schema/subgraphs/wordcount.graphql', 'schema/supergraph.graphql', 'docker-compose.yml', 'pnpm-lock.yaml', 'schema/events/wordtally.updated.v1.json']) {
      expect(changed, path).toContain(path);
    }
    // Taken now.
    const again = await run(copy, 'pnpm', ['new:subgraph', 'wordcount'], { allowFailure: true });
    expect(again.stderr).toMatch(/the name "wordcount" is taken/);

    await run(copy, 'pnpm', ['typecheck']);
    // Breaking changes against the copy's own commit: the supergraph before the two subgraphs.
    await run(copy, 'pnpm', ['schema:check', '--base', 'HEAD']);
    const tests = await run(copy, 'pnpm', ['exec', 'vitest', 'run', 'subgraphs/wordcount', 'subgraphs/wordtally', 'gateway/test/deploy.test.ts', 'schema/test/subgraphs.test.ts'], { extraEnv: { CI: 'true' } });
    expect(tests.stdout.replace(/\x1b\[[0-9;]*m/g, '')).toMatch(/Test Files\s+6 passed \(6\)/);
  }, 900_000);

  it('runs them in pnpm dev: an upload is folded into the tenant\'s views, read through the gateway', async () => {
    const dev = spawn('pnpm', ['dev'], { cwd: copy, env: { ...env, PORT: '0', TRIBUTARY_DATA_DIR: 'memory://', LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let output = '';
    dev.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    dev.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      await waitFor(() => /export TOKEN=\S+/.test(output) || dev.exitCode !== null, 120_000, 'pnpm dev to start');
      const url = /Tributary is running: (\S+)/.exec(output)?.[1];
      const token = /export TOKEN=(\S+)/.exec(output)?.[1];
      expect(url, output).toBeDefined();
      expect(output).toMatch(/wordcount http:/);
      const query = async (text: string) => {
        const response = await fetch(url!, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token!}` }, body: JSON.stringify({ query: text }) });
        return (await response.json()) as { data?: Record<string, { events: number; byType: { type: string; count: number }[] }>; errors?: unknown };
      };
      const upload = await query('mutation { uploadDocument(input: { title: "Words", content: "Solar and wind capacity grew strongly. Storage costs fell." }) { job { id } } }');
      expect(upload.errors).toBeUndefined();
      const views = () => query('{ wordcount { events byType { type count } } wordtally { events byType { type count } } }');
      await waitFor(async () => ((await views()).data?.wordcount?.events ?? 0) >= 1, 60_000, 'the upload to be folded');
      const { data } = await views();
      expect(data!.wordcount).toEqual({ events: 1, byType: [{ type: 'analysis.completed/v1', count: 1 }] });
      await waitFor(async () => ((await views()).data?.wordtally?.events ?? 0) >= 2, 30_000, 'both events in wordtally');
    } finally {
      await stopGroup(dev);
    }
  }, 240_000);

  it('runs one as deployed: its built dist/main.js on PostgreSQL and RabbitMQ folds an event published to the broker', async () => {
    await run(copy, 'pnpm', ['exec', 'tsx', 'scripts/build.ts', 'wordcount']);
    const dir = join(copy, 'subgraphs/wordcount');
    const namespace = testNamespace('newsub');
    const secret = randomBytes(32).toString('base64url');
    const port = await freePort();
    const child = spawn(process.execPath, startScriptArgs(dir)!, {
      cwd: dir,
      env: { ...env, NODE_ENV: 'production', LOG_LEVEL: 'warn', PORT: String(port), AMQP_URL: TEST_AMQP_URL, TRIBUTARY_NAMESPACE: namespace, INTERNAL_SIGNING_SECRET: secret, WORDCOUNT_DATABASE_URL: namespacedDatabaseUrl(TEST_DATABASE_URL, namespace, 'wordcount') },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const transport = createTransport({ AMQP_URL: TEST_AMQP_URL, TRIBUTARY_NAMESPACE: namespace }, log);
    try {
      const ready = () => fetch(`http://127.0.0.1:${port}/ready`).then((r) => r.status === 200, () => false);
      await waitFor(async () => child.exitCode === null && (await ready()), 60_000, 'dist/main.js to be ready');
      await transport.start();
      const at = new Date().toISOString();
      const data = JSON.parse(readFileSync(join(copy, 'schema/events/samples/analysis.completed.v1.json'), 'utf8')) as unknown;
      const event = { id: randomUUID(), type: 'analysis.completed', source: 'test', specversion: '1.0', time: at, dataschema: 'analysis.completed/v1', subject: randomUUID(), tenantid: 'tenant-x', data };
      await transport.publish([{ routingKey: event.type, messageId: event.id, body: Buffer.from(JSON.stringify(event)) }]);
      const view = async () => {
        const response = await fetch(`http://127.0.0.1:${port}/graphql`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...signIdentity(secret, { tenantId: 'tenant-x', userId: 'u' }) },
          body: JSON.stringify({ query: '{ wordcount { events } }' }),
        });
        return ((await response.json()) as { data?: { wordcount: { events: number } } }).data?.wordcount.events;
      };
      await waitFor(async () => (await view()) === 1, 30_000, 'the event to be folded');
    } finally {
      await transport.close().catch(() => {});
      const { killed, failed } = await stopProcesses([child]);
      await deleteNamespace(TEST_AMQP_URL, namespace, await brokerQueues(`${namespace}.`).catch(() => [])).catch(() => {});
      await dropDatabase(TEST_DATABASE_URL, namespacedDatabaseName(namespace, 'wordcount')).catch(() => {});
      expect([...killed, ...failed], 'stopped gracefully on SIGTERM').toEqual([]);
    }
  }, 180_000);

  it('runs it as deployed beside the others: every dist/main.js behind a gateway, an upload folded into its view', async () => {
    await run(copy, 'pnpm', ['exec', 'tsx', 'scripts/build.ts']);
    const { stdout } = await run(copy, 'pnpm', ['exec', 'tsx', 'e2e/test/fixtures/deployed-view.ts', 'wordcount']);
    expect(JSON.parse(stdout.trim().split('\n').at(-1)!)).toEqual({ wordcount: { events: 1, byType: [{ type: 'analysis.completed/v1', count: 1 }] } });
  }, 180_000);

  it('removes one with pnpm remove:subgraph, leaving no trace of it in the repository', async () => {
    const refused = await run(copy, 'pnpm', ['remove:subgraph', 'nosuch'], { allowFailure: true });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/nothing was removed/);
    await run(copy, 'pnpm', ['remove:subgraph', 'wordcount']);
    expect(await changes(copy)).not.toMatch(/wordcount/);
    expect((await run(copy, 'git', ['diff'])).stdout).not.toMatch(/wordcount/);
    // The other one is still there, whole.
    expect(await changes(copy)).toMatch(/subgraphs\/wordtally\//);
  }, 180_000);
});

/** SIGTERM a detached command's whole process group (pnpm → sh → node), SIGKILL after 10 s. */
async function stopGroup(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.pid === undefined) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  process.kill(-child.pid, 'SIGTERM');
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }, 10_000);
  await exited;
  clearTimeout(timer);
}
