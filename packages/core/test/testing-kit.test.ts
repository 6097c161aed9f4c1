import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { namespacedDatabaseEnv, namespacedDatabaseName, namespacedDatabaseUrl, readStartScript, startScriptArgs } from '../src/testing/index.ts';

const dirs: string[] = [];
/** A package folder whose package.json has `start` as its start script (none for undefined). */
function packageWith(start: string | undefined): string {
  const dir = mkdtempSync(join(tmpdir(), 'start-script-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'p', ...(start === undefined ? {} : { scripts: { start } }) }));
  return dir;
}
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('a package’s start script', () => {
  it('reads node’s flags and the script of `exec node <flags> <script>`', () => {
    const dir = packageWith('exec node --enable-source-maps --max-semi-space-size=64 dist/main.js');
    expect(readStartScript(dir)).toEqual({ flags: ['--enable-source-maps', '--max-semi-space-size=64'], script: 'dist/main.js' });
    expect(startScriptArgs(dir)).toEqual(['--enable-source-maps', '--max-semi-space-size=64', join(dir, 'dist/main.js')]);
  });

  it('leaves the loader to the starter, and runs TypeScript through tsx', () => {
    const dir = packageWith('node --import tsx --max-semi-space-size=64 src/main.ts');
    expect(readStartScript(dir)).toEqual({ flags: ['--max-semi-space-size=64'], script: 'src/main.ts' });
    expect(startScriptArgs(dir)).toEqual(['--max-semi-space-size=64', '--import', 'tsx', join(dir, 'src/main.ts')]);
  });

  it('is none for another command, a script that ends in a flag, no start script or no package.json', () => {
    for (const start of ['tsx src/main.ts', 'exec node --inspect', undefined]) expect(readStartScript(packageWith(start)), String(start)).toBeUndefined();
    expect(startScriptArgs(join(tmpdir(), 'no-such-package'))).toBeUndefined();
  });
});

describe('a run’s service databases', () => {
  it('are named tributary_<namespace>_<service> on the server given', () => {
    expect(namespacedDatabaseName('e2e_1234', 'jobs')).toBe('tributary_e2e_1234_jobs');
    expect(namespacedDatabaseUrl('postgres://postgres@127.0.0.1:5432/postgres', 'e2e_1234', 'jobs')).toBe('postgres://postgres@127.0.0.1:5432/tributary_e2e_1234_jobs');
    expect(namespacedDatabaseEnv('postgres://u:p@db/postgres?sslmode=disable', 'b', ['documents', 'jobs'])).toEqual({
      DOCUMENTS_DATABASE_URL: 'postgres://u:p@db/tributary_b_documents?sslmode=disable',
      JOBS_DATABASE_URL: 'postgres://u:p@db/tributary_b_jobs?sslmode=disable',
    });
  });
});
