import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runViewsRebuildCli } from '@tributary/core/views/cli';
import { waitFor } from '@tributary/core/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { startEmbeddedSystem, TEST_SECRETS, type TestSystem } from './fixtures/system.ts';

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { job { id } } }';
const READ = '{ stats { documents analyzed failed } themes(first: 100) { name documentCount } }';
const TEXTS = [
  'Solar panels and wind turbines cut the energy bill of the factory while the grid operator raised its prices.',
  'Customer support tickets about onboarding fell sharply after the new tutorial videos were published.',
  'Heavy rain flooded the railway tunnel, delaying commuters and forcing the city to reroute buses downtown.',
];
const UPLOADS = 30;

describe('pnpm views:rebuild insights --embedded, pnpm dev stopped (PGlite data directory, the log in its events database)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'tributary-rebuild-'));
  const env = { TRIBUTARY_DATA_DIR: dataDir, UPLOAD_RATE_LIMIT_PER_MINUTE: '100000' };
  let system: (TestSystem & { services: { name: string; db: { fork(): { execute(sql: string): Promise<unknown> } } }[] }) | undefined;
  afterAll(async () => {
    await system?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it('refuses without --embedded, then rebuilds views a broken fold left wrong, and pnpm dev serves the rebuilt ones', async () => {
    system = await startEmbeddedSystem({ env });
    for (let i = 0; i < UPLOADS; i++) {
      const r = await system.query(UPLOAD, { input: { title: `Embedded ${i}`, content: `${TEXTS[i % TEXTS.length]} Item ${i}.` } });
      expect(r.errors).toBeUndefined();
    }
    await waitFor(async () => (await system!.query(READ)).data?.stats.documents === UPLOADS, 60_000, 'every upload folded');
    const right = (await system.query(READ)).data;
    // What a broken fold would have left: wrong counts, themes lost.
    const insights = system.services.find((s) => s.name === 'insights')!;
    await insights.db.fork().execute('update tenant_stats set analyzed = analyzed + 1000');
    await insights.db.fork().execute('delete from theme_stats');
    expect((await system.query(READ)).data).not.toEqual(right);
    await system.stop();
    system = undefined;

    const lines: string[] = [];
    const cliEnv = { ...env, INTERNAL_SIGNING_SECRET: TEST_SECRETS.internal, LOG_LEVEL: 'silent' };
    const progress = { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream;
    expect(await runViewsRebuildCli(['insights'], cliEnv, (l) => lines.push(l), progress)).toBe(1);
    expect(lines.join('\n')).toContain('VIEWS_EMBEDDED_IN_USE');
    lines.length = 0;
    expect(await runViewsRebuildCli(['insights', '--embedded'], cliEnv, (l) => lines.push(l), progress)).toBe(0);
    expect(lines.join('\n')).toContain('rebuilt from');

    system = await startEmbeddedSystem({ env });
    expect((await system.query(READ)).data).toEqual(right);
  }, 180_000);
});
