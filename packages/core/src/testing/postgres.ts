import { execFile } from 'node:child_process';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './services.ts';

const run = promisify(execFile);

/**
 * A PostgreSQL server of a test's own, on a free port, that the test may restart: what the
 * machine's shared server must never be, since other tests use it at the same time. Trust
 * authentication, user `postgres`, no fsync (a test's data need not survive a power cut, only a
 * restart, which a clean shutdown writes out).
 */
export interface TestPostgres {
  /** `postgres://postgres@127.0.0.1:<port>/postgres`. */
  readonly url: string;
  readonly port: number;
  /** Shut down (fast: open transactions aborted, connections closed), stay down `downMs`, start again. */
  restart(downMs?: number): Promise<void>;
  /** Shut down and remove its data. */
  stop(): Promise<void>;
}

/**
 * Start one with the machine's PostgreSQL binaries (`pg_config --bindir`). PostgreSQL refuses to
 * run as root: as root, the server runs as the `postgres` system user.
 */
export async function startPostgresServer(): Promise<TestPostgres> {
  const bin = (await run('pg_config', ['--bindir'])).stdout.trim();
  const dir = await mkdtemp(join(tmpdir(), 'tributary-pg-'));
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: gid } = await run('id', ['-g', 'postgres']);
    await chown(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const pg = (tool: string, args: string[]) => (asRoot ? run('runuser', ['-u', 'postgres', '--', join(bin, tool), ...args]) : run(join(bin, tool), args));
  const data = join(dir, 'data');
  const port = await freePort();
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300`;
  await pg('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  const start = () => pg('pg_ctl', ['-D', data, '-o', options, '-l', join(dir, 'log'), '-w', 'start']);
  const stop = () => pg('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
  await start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    restart: async (downMs = 0) => {
      await stop();
      await new Promise((resolve) => setTimeout(resolve, downMs));
      await start();
    },
    stop: async () => {
      await stop().catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
}
