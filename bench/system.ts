/**
 * The system as the benchmarks run it: the gateway and the subgraphs as OS processes
 * started the way each package's `start` script starts it (its built dist/main.js, built by
 * scripts/build.ts first; a baseline from before `pnpm build`: its sources through tsx), or all in one process (`embedded`:
 * PGlite and the in-memory bus, as `pnpm dev`; `embedded-real`: on PostgreSQL and RabbitMQ), on
 * fresh databases and a fresh RabbitMQ namespace, removed again by `stop()`. Shared by
 * `bench:deployed` and `bench:ai`. Run as a script with BENCH_EMBEDDED_CHILD=1, it is the
 * embedded modes' child process.
 */
import { deleteNamespace } from '@tributary/core/events';
import { dropDatabase } from '@tributary/core/db';
import { brokerQueues, freePort, namespacedDatabaseName, namespacedDatabaseUrl, readStartScript, startScriptArgs, stopProcesses } from '@tributary/core/testing';
import { runMain } from '@tributary/core/service';
import { gatewaySubgraphUrls } from '@tributary/embedded/urls';
import { signToken } from '@tributary/gateway';
import { workspaceSubgraphs } from '@tributary/schema/subgraphs';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';

const EMBEDDED_CHILD = 'BENCH_EMBEDDED_CHILD';
export const ROOT = fileURLToPath(new URL('../', import.meta.url));
/** The subgraphs of the workspace. */
export const SERVICES: readonly string[] = workspaceSubgraphs(ROOT).map((s) => s.name);
/** The subgraphs a tree has, its own (a baseline from before the webhooks subgraph has four). */
const servicesOf = (dir: string) => workspaceSubgraphs(dir).filter((s) => existsSync(join(dir, s.dir, 'src/main.ts'))).map((s) => s.name);
export const PROCESSES: readonly string[] = ['gateway', ...SERVICES];
const DEFAULT_NODE_FLAGS = ['--max-semi-space-size=64'];
export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

/**
 * `processes`: the five services as deployed; `embedded`: `pnpm dev`'s one process; `embedded-real`:
 * one process on PostgreSQL and RabbitMQ; `floor`: the same design written by hand (bench/floor.ts).
 */
export type Mode = 'processes' | 'embedded' | 'embedded-real' | 'floor';
export interface Tree {
  name: 'current' | 'baseline';
  dir: string;
  commit: string;
  /** Files with uncommitted changes (the current tree is benchmarked as it is on disk). */
  changedFiles: number;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Resolve `promise`, or reject after `ms` (a bound on every wait the benchmark makes). */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// Processes and clean-up

/** Everything still to undo, so a failure or Ctrl-C leaves nothing behind. */
export const live = {
  children: new Set<ChildProcess>(),
  namespaces: new Set<string>(),
  worktree: undefined as { dir: string; parent: string } | undefined,
};

export interface ChildLog {
  /** Warn/error lines by `level msg`, so an odd run says what went wrong. */
  counts: Map<string, number>;
  tail: string;
  /** Set when the system is being stopped: shutdown lines are not counted. */
  stopping: boolean;
}

function spawnService(name: string, cwd: string, args: string[], env: Record<string, string>, log: Map<string, ChildLog>, profile: boolean): ChildProcess {
  if (profile) {
    const dir = fileURLToPath(new URL('./results/profiles/', import.meta.url));
    mkdirSync(dir, { recursive: true });
    // Default names: each thread (tsx runs its loader in a worker) writes a profile of its own.
    args = ['--cpu-prof', `--cpu-prof-dir=${join(dir, name)}`, ...args];
  }
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.children.add(child);
  child.once('exit', () => live.children.delete(child));
  const entry: ChildLog = { counts: new Map(), tail: '', stopping: false };
  log.set(name, entry);
  const count = (key: string) => {
    if (entry.counts.size < 100 || entry.counts.has(key)) entry.counts.set(key, (entry.counts.get(key) ?? 0) + 1);
  };
  const lines = (stream: NodeJS.ReadableStream) => {
    let rest = '';
    stream.on('data', (chunk: Buffer) => {
      const text = rest + chunk.toString();
      entry.tail = (entry.tail + chunk.toString()).slice(-4000);
      const parts = text.split('\n');
      rest = parts.pop()!.slice(-10_000);
      for (const line of parts) {
        if (!line.trim() || entry.stopping) continue;
        try {
          const parsed = JSON.parse(line) as { level?: unknown; msg?: unknown };
          count(`${String(parsed.level)} ${String(parsed.msg).slice(0, 120)}`);
        } catch {
          count(`raw ${line.slice(0, 120)}`);
        }
      }
    });
  };
  lines(child.stdout!);
  lines(child.stderr!);
  return child;
}

async function waitReady(url: string, child: ChildProcess, name: string, log: Map<string, ChildLog>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) before ready: ${log.get(name)?.tail ?? ''}`);
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await response.arrayBuffer();
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${name} not ready within ${timeoutMs} ms: ${log.get(name)?.tail ?? ''}`);
    await sleep(200);
  }
}

/** SIGTERM, then SIGKILL after 10 s; resolves with the children that needed the kill. */
export const stopChildren = async (children: readonly ChildProcess[]) => (await stopProcesses(children)).killed;

export async function cleanupNamespace(namespace: string): Promise<string[]> {
  const problems: string[] = [];
  try {
    await within(
      (async () => deleteNamespace(AMQP_URL, namespace, await brokerQueues(`${namespace}.`)))(),
      60_000,
      'delete RabbitMQ namespace',
    );
  } catch (error) {
    problems.push(`namespace ${namespace}: ${(error as Error).message}`);
  }
  for (const service of SERVICES) {
    try {
      await within(dropDatabase(DATABASE_URL, namespacedDatabaseName(namespace, service)), 30_000, 'drop database');
    } catch (error) {
      problems.push(`database ${namespacedDatabaseName(namespace, service)}: ${(error as Error).message}`);
    }
  }
  live.namespaces.delete(namespace);
  return problems;
}

const databaseUrl = (namespace: string, service: string) => namespacedDatabaseUrl(DATABASE_URL, namespace, service);

/** Node flags of a package's start script, for a process that runs sources through tsx (a tree with none: the flags every service had). */
function startFlags(packageDir: string): string[] {
  return readStartScript(packageDir)?.flags ?? DEFAULT_NODE_FLAGS;
}

/**
 * The node arguments that start a package as its start script does: its built JavaScript, or
 * (a tree from before `pnpm build`, with no start script of that form) its TypeScript sources
 * through tsx, as every service shipped then.
 */
function startArgs(packageDir: string): string[] {
  return startScriptArgs(packageDir) ?? [...DEFAULT_NODE_FLAGS, '--import', 'tsx', join(packageDir, 'src/main.ts')];
}

/** Trees built in this run (their dist/ is fresh). */
const builtTrees = new Set<string>();

/**
 * Builds a tree whose start scripts run dist/main.js (scripts/build.ts, the bundling half of
 * `pnpm build`; typecheck is CI's), once per run, so every process runs the tree's current code.
 */
function buildTree(dir: string, services: readonly string[]): void {
  if (builtTrees.has(dir)) return;
  const built = ['gateway', ...services.map((s) => `subgraphs/${s}`)].some((pkg) => readStartScript(join(dir, pkg))?.script.endsWith('.js'));
  if (built) {
    const started = performance.now();
    execFileSync(process.execPath, ['--import', 'tsx', 'scripts/build.ts'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
    console.error(`built ${dir} (scripts/build.ts) in ${Math.round(performance.now() - started)} ms`);
  }
  builtTrees.add(dir);
}

/** The children's environment: the caller's, minus what would change what is measured. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || key === EMBEDDED_CHILD) continue;
    // A model API key would put a remote model's latency in the figures; the rest would point the
    // children at someone else's databases, queues, ports or token issuer.
    if (/^(OPENAI_|AUTH_|NODE_OPTIONS$|PORT$|HOST$|TRIBUTARY_|INTERNAL_SIGNING_SECRET$)/.test(key) || /_URL$/.test(key)) continue;
    env[key] = value;
  }
  return env;
}

export interface RunningSystem {
  httpUrl: string;
  wsUrl: string;
  /** Pid per process group measured (`gateway`, `documents`, … or `system`). */
  pids: Record<string, number>;
  namespace: string;
  /** A token for tenant `bench`, user `bench`. */
  token: string;
  /** A token for another tenant (user named like it), signed with the same secret. */
  tokenFor(tenant: string): Promise<string>;
  log: Map<string, ChildLog>;
  /** Children that died on their own while the system ran. */
  exits: string[];
  stop(): Promise<string[]>;
}

export interface StartSystemOptions {
  /** Settings on top of the benchmark's own (e.g. a model endpoint for bench:ai). */
  env?: Record<string, string>;
  /** Processes of the current tree to run under --cpu-prof (`gateway`, `jobs`, …, or `all`). */
  profile?: ReadonlySet<string>;
  /** Per process to be ready. Default 90 s. */
  startTimeoutS?: number;
}

/** A fresh system: new databases, RabbitMQ namespace and processes. */
export async function startSystem(tree: Tree, mode: Mode, options: StartSystemOptions = {}): Promise<RunningSystem> {
  const profiled = (name: string) => tree.dir === ROOT && (options.profile?.has(name) === true || options.profile?.has('all') === true);
  const namespace = `bench_${randomBytes(4).toString('hex')}`;
  const authSecret = randomBytes(32).toString('base64url');
  const tokenFor = (tenant: string) => signToken(authSecret, { sub: tenant, tenant, expiresIn: '12h' });
  const token = await tokenFor('bench');
  const common: Record<string, string> = {
    ...baseEnv(),
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    TRIBUTARY_NAMESPACE: namespace,
    AUTH_JWT_SECRET: authSecret,
    INTERNAL_SIGNING_SECRET: randomBytes(32).toString('base64url'),
    // One benchmark user uploads far more than a person would.
    UPLOAD_RATE_LIMIT_PER_MINUTE: '100000000',
    ...options.env,
  };
  if (mode !== 'embedded') {
    common.AMQP_URL = AMQP_URL;
    for (const service of SERVICES) common[`${service.toUpperCase()}_DATABASE_URL`] = databaseUrl(namespace, service);
    live.namespaces.add(namespace);
  }
  const log = new Map<string, ChildLog>();
  const children: ChildProcess[] = [];
  const exits: string[] = [];
  let stopping = false;
  const watch = (name: string, child: ChildProcess) => {
    children.push(child);
    child.once('exit', (code, signal) => {
      if (!stopping) exits.push(`${name} exited (${code ?? signal}): ${log.get(name)?.tail.slice(-1500) ?? ''}`);
    });
  };
  const stop = async () => {
    stopping = true;
    for (const entry of log.values()) entry.stopping = true;
    const problems = (await stopChildren(children)).map((c) => `not stopped by SIGTERM within 10 s: ${c}`);
    if (mode !== 'embedded') problems.push(...(await cleanupNamespace(namespace)));
    return problems;
  };
  try {
    const pids: Record<string, number> = {};
    const startMs = (options.startTimeoutS ?? 90) * 1000;
    // The system behind a gateway on `port`, its processes ordered as reported.
    const running = (port: number): RunningSystem => {
      const ordered = Object.fromEntries(PROCESSES.filter((p) => pids[p] !== undefined).map((p) => [p, pids[p]!]));
      return { httpUrl: `http://127.0.0.1:${port}/graphql`, wsUrl: `ws://127.0.0.1:${port}/graphql`, pids: ordered, namespace, token, tokenFor, log, exits, stop };
    };
    if (mode === 'processes') {
      buildTree(tree.dir, servicesOf(tree.dir));
      const urls: Record<string, string> = {};
      await Promise.all(
        servicesOf(tree.dir).map(async (service) => {
          const port = await freePort();
          const dir = join(tree.dir, 'subgraphs', service);
          const child = spawnService(service, tree.dir, startArgs(dir), { ...common, PORT: String(port) }, log, profiled(service));
          watch(service, child);
          pids[service] = child.pid!;
          urls[service] = `http://127.0.0.1:${port}/graphql`;
          await waitReady(`http://127.0.0.1:${port}/ready`, child, service, log, startMs);
        }),
      );
      const port = await freePort();
      const dir = join(tree.dir, 'gateway');
      const child = spawnService('gateway', tree.dir, startArgs(dir), { ...common, ...gatewaySubgraphUrls(urls), PORT: String(port) }, log, profiled('gateway'));
      watch('gateway', child);
      pids.gateway = child.pid!;
      await waitReady(`http://127.0.0.1:${port}/ready`, child, 'gateway', log, startMs);
      return running(port);
    }
    if (mode === 'floor') {
      // A process of bench/floor.ts per process of the system (PROCESSES), on the run's databases
      // and namespace: the subgraphs' roles at once, as the services start, then the gateway.
      const script = fileURLToPath(new URL('./floor.ts', import.meta.url));
      const urls: Record<string, string> = {};
      const start = async (role: string) => {
        const port = await freePort();
        const env = { ...common, ...urls, FLOOR_ROLE: role, FLOOR_DISPATCH: process.env.BENCH_FLOOR_DISPATCH ?? 'relay', PORT: String(port), ...(role === 'gateway' ? {} : { FLOOR_DATABASE_URL: databaseUrl(namespace, role) }) };
        // The node flags of the service the role stands in for (its start script's), as the system's process has them.
        const flags = startFlags(join(ROOT, role === 'gateway' ? 'gateway' : join('subgraphs', role)));
        const child = spawnService(role, ROOT, [...flags, '--import', 'tsx', script], env, log, profiled(role));
        watch(role, child);
        pids[role] = child.pid!;
        await waitReady(`http://127.0.0.1:${port}/ready`, child, role, log, startMs);
        urls[`FLOOR_${role.toUpperCase()}_URL`] = `http://127.0.0.1:${port}`;
        return port;
      };
      await Promise.all(SERVICES.map(start));
      return running(await start('gateway'));
    }
    const port = await freePort();
    const env: Record<string, string> = { ...common, PORT: String(port), [EMBEDDED_CHILD]: '1' };
    if (mode === 'embedded') env.TRIBUTARY_DATA_DIR = 'memory://';
    // The embedded modes run the sources through tsx (as `pnpm dev`), with the gateway's node flags.
    const child = spawnService('system', ROOT, [...startFlags(join(ROOT, 'gateway')), '--import', 'tsx', fileURLToPath(import.meta.url)], env, log, profiled('system'));
    watch('system', child);
    pids.system = child.pid!;
    await waitReady(`http://127.0.0.1:${port}/ready`, child, 'system', log, startMs);
    return { httpUrl: `http://127.0.0.1:${port}/graphql`, wsUrl: `ws://127.0.0.1:${port}/graphql`, pids, namespace, token, tokenFor, log, exits, stop };
  } catch (error) {
    const problems = await stop();
    if (problems.length > 0) console.error(problems.join('\n'));
    throw error;
  }
}

/** Embedded modes' child: the whole system in this one process, as `pnpm dev` starts it. */
async function embeddedChild(): Promise<void> {
  const { startEmbedded } = await import('@tributary/embedded');
  await runMain('embedded', () => startEmbedded({ env: process.env, port: Number(process.env.PORT) }));
}

/** `count` graphql-ws clients, connected, authenticated with `token`. */
export async function openClients(wsUrl: string, token: string, count: number): Promise<Client[]> {
  const clients: Client[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const client = createClient({
        url: wsUrl,
        webSocketImpl: WebSocket,
        // Not lazy: a lazy client closes its socket whenever no subscription is active, and a
        // subscription started during that close is completed unanswered.
        lazy: false,
        retryAttempts: 0,
        connectionParams: { authorization: `Bearer ${token}` },
      });
      clients.push(client);
      await within(
        new Promise<void>((resolve, reject) => {
          const offConnected = client.on('connected', () => {
            offConnected();
            offClosed();
            resolve();
          });
          const offClosed = client.on('closed', (event) => {
            offConnected();
            offClosed();
            reject(new Error(`graphql-ws socket closed before connecting: ${(event as { code?: number }).code}`));
          });
        }),
        10_000,
        'graphql-ws connect',
      );
    }
    return clients;
  } catch (error) {
    await disposeAll(clients);
    throw error;
  }
}

export async function disposeAll(clients: readonly Client[]): Promise<void> {
  await Promise.all(clients.map((c) => within(Promise.resolve(c.dispose()), 5_000, 'graphql-ws dispose').catch(() => {})));
}

/** Stop every child still running and remove every namespace still there; what could not be undone. */
export async function cleanupLive(): Promise<string[]> {
  const problems = (await stopChildren([...live.children])).map((c) => `killed: ${c}`);
  for (const namespace of [...live.namespaces]) problems.push(...(await cleanupNamespace(namespace)));
  return problems;
}

/**
 * Run a benchmark's `main`: an uncaught error cleans up (`cleanup`, default {@link cleanupLive})
 * before exiting 1; then the process exits, whatever a library left open (sockets, timers).
 */
export async function runBenchmark(main: () => Promise<void>, cleanup: () => Promise<unknown> = cleanupLive): Promise<never> {
  process.on('uncaughtException', (error) => {
    console.error(error);
    cleanup().finally(() => process.exit(1));
  });
  try {
    await main();
  } catch (error) {
    console.error(error);
    process.exitCode = 1;
  }
  process.exit(process.exitCode ?? 0);
}

if (process.env[EMBEDDED_CHILD] === '1' && process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await embeddedChild();
