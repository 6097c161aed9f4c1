import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, waitFor } from '@tributary/core/testing';
import { loadGatewayConfig } from '../src/config.ts';
import { signToken } from '../src/auth.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const secret = randomBytes(32).toString('base64url');
const running: ChildProcess[] = [];

/** The gateway's production entry point, alone (in-memory bus; no subgraph is asked anything). */
function gatewayProcess(env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'gateway/src/main.ts'], {
    cwd: root,
    env: { ...process.env, NODE_ENV: 'test', LOG_LEVEL: 'warn', AUTH_JWT_SECRET: secret, INTERNAL_SIGNING_SECRET: secret, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  running.push(child);
  return child;
}
/** The primary's worker processes (not its other children, such as tsx's esbuild service). */
const workersOf = (pid: number) =>
  execFileSync('ps', ['--ppid', String(pid), '-o', 'pid=,args='], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes('gateway/src/main.ts'))
    .map((line) => Number.parseInt(line.trim(), 10));
const exited = (child: ChildProcess) => new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', (code) => resolve(code))));

afterEach(() => {
  for (const child of running.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});

describe('GATEWAY_WORKERS', () => {
  it('accepts a number or auto and refuses anything else', () => {
    const base = { AUTH_JWT_SECRET: secret, INTERNAL_SIGNING_SECRET: secret };
    expect(loadGatewayConfig(base).GATEWAY_WORKERS).toBe(1);
    expect(loadGatewayConfig({ ...base, GATEWAY_WORKERS: '3' }).GATEWAY_WORKERS).toBe(3);
    expect(loadGatewayConfig({ ...base, GATEWAY_WORKERS: 'auto' }).GATEWAY_WORKERS).toBeGreaterThanOrEqual(1);
    expect(() => loadGatewayConfig({ ...base, GATEWAY_WORKERS: '0' })).toThrow(/GATEWAY_WORKERS/);
  });

  it('runs workers on one port, replaces one that dies, and stops them all on SIGTERM', async () => {
    const port = await freePort();
    const primary = gatewayProcess({ GATEWAY_WORKERS: '2', PORT: String(port) });
    const url = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${url}/ready`).catch(() => null))?.status === 200 && workersOf(primary.pid!).length === 2, 60_000, 'two ready workers');
    const token = await signToken(secret, { tenant: 't', sub: 'u', expiresIn: '5m' });
    const answer = await fetch(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ query: '{ __typename }' }) });
    expect(await answer.json()).toEqual({ data: { __typename: 'Query' } });

    const [first] = workersOf(primary.pid!);
    process.kill(first!, 'SIGKILL');
    await waitFor(async () => {
      const workers = workersOf(primary.pid!);
      return workers.length === 2 && !workers.includes(first!);
    }, 30_000, 'a replacement worker');
    await waitFor(async () => (await fetch(`${url}/ready`).catch(() => null))?.status === 200, 30_000, 'ready again');

    const workers = workersOf(primary.pid!);
    primary.kill('SIGTERM');
    expect(await exited(primary)).toBe(0);
    for (const pid of workers) expect(() => process.kill(pid, 0), `worker ${pid} is gone`).toThrow();
  }, 120_000);
});
