import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '@tributary/core/testing';
import { collect, startEmbeddedSystem, type TestSystem } from './fixtures/system.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium && process.env.CI === 'true') throw new Error(`CI=true but there is no browser at ${CHROMIUM}: apt-get install -y chromium`);

const SEEDS = [
  'Battery storage costs keep falling. Grid investment doubled in the north. Renewable growth beats every forecast.',
  'Renewable growth slowed over the winter. Battery storage costs still matter most for utilities.',
];
const OUTPUT = fileURLToPath(new URL('./output/', import.meta.url));
const SCREENSHOTS = fileURLToPath(new URL('../../docs/screenshots/', import.meta.url));

/** The text a Monaco editor shows (its rendered lines, with Monaco's non-breaking spaces made plain). */
async function editorText(page: Page, selector: string): Promise<string> {
  const text = (await page.locator(`${selector} .view-lines`).allInnerTexts()).join('\n');
  return text.replace(/\u00a0/g, ' ');
}

async function waitForEditorText(page: Page, selector: string, expected: string, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = '';
  while (Date.now() < deadline) {
    text = await editorText(page, selector).catch(() => '');
    if (text.includes(expected)) return text;
    await page.waitForTimeout(100);
  }
  const screenshot = join(OUTPUT, `failed-${Date.now()}.png`);
  await page.screenshot({ path: screenshot }).catch(() => {});
  throw new Error(`${selector} never showed ${JSON.stringify(expected)}; it shows ${JSON.stringify(text)} (screenshot: ${screenshot})`);
}

// The demo page is pnpm dev's (apps/dev, mounted with startGateway's `routes`); GraphiQL is the gateway's.
// That neither carries the development token in production: gateway/test/ui.test.ts, apps/dev/test/demo.test.ts.
describe.skipIf(!hasChromium)('the demo page and GraphiQL in Chromium', () => {
  let system: TestSystem;
  let origin: string;
  let token: string;
  let userDataDir: string;
  let context: BrowserContext;
  let page: Page;
  const external: string[] = [];
  const problems: string[] = [];

  beforeAll(async () => {
    system = await startEmbeddedSystem();
    origin = new URL(system.gateways[0]!).origin;
    token = await system.token({ tenant: 'tenant-ui', sub: 'ui-user' });
    // Two analysed documents already, so the tenant's chart has something to compare.
    for (const content of SEEDS) {
      const uploaded = await system.query('mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { job { id } } }', { input: { title: 'Earlier report', content } }, { token });
      await collect(system.ws({ token }), 'subscription($id: ID!) { jobCompleted(jobId: $id) { status } }', { id: uploaded.data.uploadDocument.job.id });
    }
    await waitFor(async () => (await system.query('{ stats { analyzed } }', {}, { token })).data?.stats.analyzed === SEEDS.length, 10_000, 'the seeds in insights');
    mkdirSync(OUTPUT, { recursive: true });
    userDataDir = mkdtempSync(join(tmpdir(), 'tributary-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
      viewport: { width: 1280, height: 860 },
      colorScheme: 'light',
      reducedMotion: 'reduce',
    });
    // Offline means offline: every request must go to the gateway itself.
    context.on('request', (request) => {
      const url = request.url();
      if (!url.startsWith(origin) && !url.startsWith('data:') && !url.startsWith('blob:')) external.push(url);
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console: ${message.text()}`);
    });
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    await system?.stop();
  });

  it('uploads a document and shows COMPLETED, the analysis and the tenant’s themes without a reload', async () => {
    await page.goto(`${origin}/`);
    // Pre-filled with the development token of `pnpm dev` (the embedded system signs one too).
    expect(await page.getByLabel('Bearer token').inputValue()).not.toBe('');
    await page.getByLabel('Bearer token').fill(token);
    await page.getByLabel('Bearer token').press('Tab');
    await page.getByLabel('Title').fill('Quarterly energy outlook');
    await page.getByLabel('Content type').selectOption('text/markdown');
    await page.getByLabel('Content', { exact: true }).fill('# Energy\n\nSolar and wind capacity grew strongly. Battery storage costs fell sharply.\n\nGrid investment is rising and analysts are optimistic about renewable growth.');
    await page.evaluate(() => ((globalThis as { marker?: string }).marker = 'no reload'));

    await page.getByRole('button', { name: 'Upload and analyse' }).click();
    await page.locator('#job-status[data-status="COMPLETED"]').waitFor({ timeout: 30_000 });
    await page.locator('#chart li').first().waitFor({ timeout: 10_000 });

    expect(await page.evaluate(() => (globalThis as { marker?: string }).marker)).toBe('no reload');
    expect(await page.getByRole('status').innerText()).toContain('COMPLETED');
    expect(await page.locator('#timeline').innerText()).toMatch(/QUEUED[\s\S]*COMPLETED/);
    expect((await page.locator('#summary').innerText()).length).toBeGreaterThan(10);
    const themes = await page.locator('#doc-themes li .name').allInnerTexts();
    expect(themes.length).toBeGreaterThan(0);
    expect(await page.locator('#sentiment').innerText()).toMatch(/POSITIVE|NEUTRAL|NEGATIVE/);
    // The chart shows this tenant's aggregates, the same the API answers.
    const chart = await page.locator('#chart li .name').allInnerTexts();
    const api = await system.query<{ themes: { name: string }[] }>('{ themes(first: 10) { name } }', {}, { token });
    expect(chart).toEqual(api.data!.themes.map((t) => t.name));
    expect(await page.locator('#error').isHidden()).toBe(true);

    await page.screenshot({ path: join(OUTPUT, 'demo.png'), fullPage: true });
  });

  it('shows extensions.code when the token is refused', async () => {
    await page.getByLabel('Bearer token').fill('not-a-token');
    await page.getByLabel('Bearer token').press('Tab');
    await page.getByRole('alert').waitFor();
    expect(await page.getByRole('alert').innerText()).toContain('UNAUTHENTICATED');
    // The browser logs the refused request itself; nothing else may have gone wrong.
    expect(problems.filter((p) => !p.includes('status of 401'))).toEqual([]);
    problems.length = 0;
    await page.getByLabel('Bearer token').fill(token);
    await page.getByLabel('Bearer token').press('Tab');
  });

  it('opens GraphiQL with the token in the headers and runs a query and a subscription', async () => {
    await page.getByRole('link', { name: 'GraphiQL' }).click();
    await page.waitForURL(`${origin}/graphql`);
    await page.locator('.graphiql-execute-button').waitFor({ timeout: 30_000 });
    // The headers editor carries the token typed on the demo page (same tab).
    await waitForEditorText(page, '.graphiql-editor-tool', `"authorization": "Bearer ${token.slice(0, 24)}`);

    await waitForEditorText(page, '.graphiql-query-editor', 'stats');
    await page.locator('.graphiql-execute-button').click();
    const response = await waitForEditorText(page, '.graphiql-response', `"documents": ${SEEDS.length + 1}`);
    expect(response).toContain(`"analyzed": ${SEEDS.length + 1}`);
    await page.screenshot({ path: join(OUTPUT, 'graphiql.png') });

    // A subscription runs over graphql-ws with the header as connectionParams: a completed job
    // answers at once, and only to its own tenant.
    const jobs = await system.query<{ jobs: { edges: { node: { id: string } }[] } }>('{ jobs(first: 1) { edges { node { id } } } }', {}, { token });
    const jobId = jobs.data!.jobs.edges[0]!.node.id;
    await page.locator('.graphiql-query-editor .monaco-editor').first().click();
    await page.keyboard.press('ControlOrMeta+A');
    await page.keyboard.insertText(`subscription Done { jobCompleted(jobId: "${jobId}") { id status } }`);
    // GraphiQL takes the operation name from the editor a moment later (the tab is renamed then).
    await page.locator('.graphiql-session-header').getByText('Done', { exact: true }).waitFor();
    await page.locator('.graphiql-execute-button').click();
    const message = await waitForEditorText(page, '.graphiql-response', '"status": "COMPLETED"');
    expect(message).toContain(jobId);
    await page.screenshot({ path: join(OUTPUT, 'graphiql-subscription.png') });

    expect(external).toEqual([]);
    expect(problems).toEqual([]);
    // The README's screenshots: written when missing or asked for, so a test run leaves the tree clean.
    mkdirSync(SCREENSHOTS, { recursive: true });
    for (const name of ['demo.png', 'graphiql.png']) {
      if (process.env.UPDATE_SCREENSHOTS === '1' || !existsSync(join(SCREENSHOTS, name))) copyFileSync(join(OUTPUT, name), join(SCREENSHOTS, name));
    }
  });

  it('leaves GET /graphql to GraphQL clients and serves the bundles with cache headers', async () => {
    const html = await fetch(`${origin}/graphql`, { headers: { accept: 'text/html' } });
    expect(html.headers.get('content-type')).toContain('text/html');
    expect(html.headers.get('content-security-policy')).toContain("default-src 'self'");
    const page = await html.text();
    expect(page).not.toMatch(/https?:\/\//);
    const script = /src="(\/ui\/graphiql-[^"]+\.js)"/.exec(page)?.[1];
    expect(script).toBeDefined();
    const asset = await fetch(`${origin}${script}`, { headers: { 'accept-encoding': 'gzip' } });
    expect(asset.status).toBe(200);
    expect(asset.headers.get('cache-control')).toContain('immutable');
    const demo = await (await fetch(`${origin}/`, { headers: { accept: 'text/html' } })).text();
    const demoScript = /src="(\/demo\/demo-[^"]+\.js)"/.exec(demo)?.[1];
    expect(demoScript).toBeDefined();
    expect((await fetch(`${origin}${demoScript}`)).headers.get('cache-control')).toContain('immutable');

    const query = await fetch(`${origin}/graphql?query=${encodeURIComponent('{ __typename }')}`, { headers: { accept: 'text/html, application/json', 'apollo-require-preflight': 'true', authorization: `Bearer ${token}` } });
    expect(await query.json()).toEqual({ data: { __typename: 'Query' } });
    const json = await fetch(`${origin}/graphql`, { headers: { accept: 'application/json' } });
    expect(json.headers.get('content-type')).toContain('application/json');
    expect((await fetch(`${origin}/ui/missing.js`)).status).toBe(404);
    expect((await fetch(`${origin}/demo/missing.js`)).status).toBe(404);
  });
});
