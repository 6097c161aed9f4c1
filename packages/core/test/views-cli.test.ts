import { describe, expect, it } from 'vitest';
import { loadServiceDefinition, runViewsRebuildCli } from '../src/cli/views-rebuild.ts';
import { ViewsErrorCode } from '../src/views/index.ts';

const SECRET = 'x'.repeat(48);

/** The CLI in-process: its exit code and what it printed. */
async function run(argv: string[], env: Record<string, string | undefined> = {}) {
  const lines: string[] = [];
  const code = await runViewsRebuildCli(argv, env, (line) => lines.push(line));
  return { code, output: lines.join('\n') };
}

describe('pnpm views:rebuild, before it touches anything', () => {
  it('shows the usage: exit 0 with --help, 2 without a service or with an unknown option or a bad --batch', async () => {
    expect(await run(['--help'])).toMatchObject({ code: 0, output: expect.stringContaining('usage: pnpm views:rebuild <service>') });
    expect((await run([])).code).toBe(2);
    expect((await run(['insights', '--nope'])).code).toBe(2);
    expect(await run(['insights', '--batch', '0'])).toMatchObject({ code: 2, output: expect.stringContaining('--batch') });
  });

  it('refuses a service that does not exist (exit 2) and one that declares no views (exit 1, VIEWS_NOT_DECLARED)', async () => {
    expect(await run(['nope'])).toMatchObject({ code: 2, output: expect.stringContaining('no subgraph named "nope"') });
    expect(await run(['../../etc'])).toMatchObject({ code: 2 });
    expect(await run(['jobs'])).toMatchObject({ code: 1, output: expect.stringContaining(ViewsErrorCode.VIEWS_NOT_DECLARED) });
  });

  it('reports every invalid setting of the service (exit 2)', async () => {
    expect(await run(['insights'])).toMatchObject({ code: 2, output: expect.stringContaining('INTERNAL_SIGNING_SECRET') });
  });

  it('opens no PGlite data directory of embedded mode without --embedded (pnpm dev may have it open), and has no log to read on memory://', async () => {
    expect(await run(['insights'], { INTERNAL_SIGNING_SECRET: SECRET, TRIBUTARY_DATA_DIR: '/nonexistent/tributary' })).toMatchObject({
      code: 1,
      output: expect.stringMatching(new RegExp(`${ViewsErrorCode.VIEWS_EMBEDDED_IN_USE}.*stop pnpm dev, then rerun with --embedded`)),
    });
    expect(await run(['insights'], { INTERNAL_SIGNING_SECRET: SECRET, TRIBUTARY_DATA_DIR: 'memory://' })).toMatchObject({ code: 1, output: expect.stringContaining(ViewsErrorCode.VIEWS_LOG_OFF) });
  });

  it('finds the ServiceDefinition a subgraph package exports, with the views it declares', async () => {
    const insights = await loadServiceDefinition('insights');
    expect(insights?.views?.tables).toEqual(['insight_documents', 'theme_stats', 'tenant_stats']);
    expect(await loadServiceDefinition('Not A Name')).toBeUndefined();
  });
});
