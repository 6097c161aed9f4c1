import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { servicesAvailable } from '@tributary/core/testing';
import { TOKEN_STORAGE_KEY } from '@tributary/gateway/ui';
import { collect, SERVICES, startProcessSystem, type TestSystem } from './fixtures/system.ts';

// The built system as its images run it: `pnpm build`'s dist/main.js of the gateway and each
// subgraph, started by their start scripts (no tsx, TypeScript or esbuild loaded), as separate
// processes on PostgreSQL and RabbitMQ. CI runs `pnpm build` first and sets
// TRIBUTARY_SMOKE_PREBUILT=1; otherwise this file builds (scripts/build.ts, without typecheck).

const root = fileURLToPath(new URL('../../', import.meta.url));
const PACKAGES = ['gateway', ...SERVICES.map((s) => `subgraphs/${s}`)];
const available = await servicesAvailable();

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { id } job { id status } } }';
const JOB_COMPLETED = 'subscription($jobId: ID!) { jobCompleted(jobId: $jobId) { id status document { title analysis { summary } } } }';
const TEXT = 'Solar and wind delivered record capacity this year. Battery storage costs fell again, and grid operators plan new transmission lines.';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
const environ = (pid: number) => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** `pid` and every process under it (children of children too), from /proc. */
function processTree(pid: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // pid (comm) state ppid …: comm may hold spaces and parentheses, so read after the last ')'.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) for (const [child, parent] of parents) if (parent === tree[i]) tree.push(child);
  return tree;
}

describe.skipIf(!available)('the built system (pnpm build), as separate processes', () => {
  let system: TestSystem;
  let pids: Record<string, number>;
  let origin: string;

  beforeAll(async () => {
    if (process.env.TRIBUTARY_SMOKE_PREBUILT !== '1') execFileSync(process.execPath, ['--import', 'tsx', 'scripts/build.ts'], { cwd: root, stdio: 'inherit' });
    for (const dir of PACKAGES) expect(existsSync(join(root, dir, 'dist/main.js')), `${dir}/dist/main.js`).toBe(true);
    system = await startProcessSystem({ built: true });
    pids = system.pids!;
    origin = new URL(system.gateways[0]!).origin;
  }, 180_000);
  afterAll(async () => {
    await system?.stop();
  }, 60_000);

  it('answers the first request for GraphiQL in under 200 ms, from the files pnpm build wrote, and has no page of its own on /', async () => {
    const timed = async (url: string, headers: Record<string, string> = {}) => {
      const started = performance.now();
      const response = await fetch(url, { headers });
      const body = await response.text();
      return { status: response.status, body, ms: performance.now() - started };
    };
    const graphiql = await timed(`${origin}/graphql`, { accept: 'text/html' });
    console.log(`first GET /graphql (GraphiQL) ${graphiql.ms.toFixed(1)} ms`);
    expect(graphiql.status).toBe(200);
    expect(graphiql.ms).toBeLessThan(200);
    expect(graphiql.body).toContain('id="graphiql"');
    // The demo page is pnpm dev's (apps/dev), not the built gateway's.
    expect((await timed(`${origin}/`, { accept: 'text/html' })).status).toBe(404);
    // The page's script, gzipped as built.
    const script = /<script type="module" src="([^"]+)"/.exec(graphiql.body)?.[1];
    expect(script).toBeDefined();
    const asset = await fetch(`${origin}${script!}`, { headers: { 'accept-encoding': 'gzip' } });
    expect(asset.status).toBe(200);
    expect(asset.headers.get('content-type')).toMatch(/^text\/javascript/);
    // Every file the build wrote is served as written (Monaco's workers and fonts included).
    const ui = join(root, 'gateway/dist/ui');
    const manifest = JSON.parse(readFileSync(join(ui, 'manifest.json'), 'utf8')) as { assets: Record<string, { file: string; type: string }>; workers: Record<string, string> };
    expect(Object.keys(manifest.workers).sort()).toEqual(['editor', 'graphql', 'json']);
    for (const [url, { file, type }] of Object.entries(manifest.assets)) {
      const response = await fetch(`${origin}${url}`, { headers: { 'accept-encoding': 'identity' } });
      expect(response.status, url).toBe(200);
      expect(response.headers.get('content-type'), url).toBe(type);
      expect(Buffer.from(await response.arrayBuffer()).equals(readFileSync(join(ui, file))), url).toBe(true);
    }
  });

  it.skipIf(!existsSync(CHROMIUM))('runs GraphiQL from the built files in Chromium: editors, workers, a query with the token kept in the tab', async () => {
    const userDataDir = mkdtempSync(join(tmpdir(), 'tributary-smoke-chromium-'));
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    try {
      const problems: string[] = [];
      const failed: string[] = [];
      const page = context.pages()[0] ?? (await context.newPage());
      page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
      page.on('response', (response) => {
        if (response.url().startsWith(`${origin}/ui/`) && response.status() !== 200) failed.push(`${response.status()} ${response.url()}`);
      });
      const token = await system.token({ tenant: 'tenant-smoke', sub: 'smoke' });
      // The token kept in the tab, as a page beside GraphiQL (pnpm dev's demo page) leaves it.
      await page.goto(`${origin}/graphql`);
      await page.evaluate(([key, value]) => sessionStorage.setItem(key, value), [TOKEN_STORAGE_KEY, token] as const);
      await page.reload();
      await page.locator('.graphiql-execute-button').waitFor({ timeout: 30_000 });
      const text = async (selector: string, expected: string) => {
        const deadline = Date.now() + 20_000;
        let shown = '';
        while (Date.now() < deadline) {
          shown = (await page.locator(`${selector} .view-lines`).allInnerTexts().catch(() => [])).join('\n').replace(/\u00a0/g, ' ');
          if (shown.includes(expected)) return shown;
          await page.waitForTimeout(100);
        }
        throw new Error(`${selector} never showed ${expected}: ${shown}`);
      };
      await text('.graphiql-editor-tool', `"authorization": "Bearer ${token.slice(0, 24)}`);
      // The built gateway's own first query: generic, with no embedder to give one.
      await text('.graphiql-query-editor', '__typename');
      await page.locator('.graphiql-execute-button').click();
      await text('.graphiql-response', '"__typename": "Query"');
      expect(problems).toEqual([]);
      expect(failed).toEqual([]);
    } finally {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    }
  }, 90_000);

  it('runs each service as one node process of its dist/main.js, with source maps and no tsx anywhere in its tree', () => {
    expect(Object.keys(pids).sort()).toEqual(['gateway 0', ...SERVICES].sort());
    for (const [name, pid] of Object.entries(pids)) {
      const dir = name.startsWith('gateway') ? 'gateway' : `subgraphs/${name}`;
      const args = cmdline(pid);
      expect(args.slice(1), name).toEqual(['--enable-source-maps', '--max-semi-space-size=64', join(root, dir, 'dist/main.js')]);
      for (const p of processTree(pid)) {
        const line = cmdline(p).join(' ');
        expect(line, `${name}: process ${p}`).not.toMatch(/tsx|typescript|esbuild|\.ts\b/);
        const nodeOptions = environ(p).find((e) => e.startsWith('NODE_OPTIONS=')) ?? '';
        expect(nodeOptions, `${name}: process ${p} NODE_OPTIONS`).not.toMatch(/tsx/);
      }
    }
    // Stack traces name the TypeScript: the map holds the sources.
    const map = JSON.parse(readFileSync(join(root, 'gateway/dist/main.js.map'), 'utf8')) as { sources: string[] };
    expect(map.sources).toContain('../src/main.ts');
  });

  it('takes an upload through the gateway to its jobCompleted', async () => {
    const uploaded = await system.query(UPLOAD, { input: { title: 'Smoke test', content: TEXT } });
    expect(uploaded.errors).toBeUndefined();
    expect(uploaded.data.uploadDocument.job.status).toBe('QUEUED');
    const messages = await collect(system.ws(), JOB_COMPLETED, { jobId: uploaded.data.uploadDocument.job.id });
    expect(messages).toHaveLength(1);
    const job = messages[0]!.data!.jobCompleted;
    expect(job.status).toBe('COMPLETED');
    expect(job.document.title).toBe('Smoke test');
    expect(job.document.analysis.summary).toBeTruthy();
  });

  it('answers /ready and /metrics on every service', async () => {
    for (const [name, url] of Object.entries({ gateway: system.gateways[0]!, ...system.subgraphs })) {
      const ready = await fetch(new URL('/ready', url));
      expect(ready.status, `${name} /ready`).toBe(200);
      const metrics = await fetch(new URL('/metrics', url));
      expect(metrics.status, `${name} /metrics`).toBe(200);
      expect(await metrics.text(), `${name} /metrics`).toMatch(/^# HELP /m);
    }
  });

  it('stops every process on SIGTERM, leaving none behind', async () => {
    const everyPid = Object.values(pids).flatMap(processTree);
    // stop() SIGTERMs each and fails if one needed SIGKILL or exited with another code than 0.
    const stopping = system;
    system = undefined as unknown as TestSystem;
    await stopping.stop();
    expect(everyPid.filter(alive)).toEqual([]);
  }, 60_000);
});
