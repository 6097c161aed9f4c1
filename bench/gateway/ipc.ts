/** The few messages the benchmark's processes exchange over their IPC channel. */
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export type Message =
  | { type: 'ready'; url?: string; urls?: Record<string, string>; data?: unknown }
  | { type: 'reply'; id: number; value?: unknown; error?: string }
  | { type: 'call'; id: number; name: string; arg?: unknown }
  | { type: 'stop' };

/** Fork a TypeScript entry point (through tsx, as this process runs) and wait for its `ready`. */
export async function start(file: string, args: string[], options: { env?: Record<string, string>; execArgv?: string[]; timeoutMs?: number } = {}): Promise<{ child: ChildProcess; ready: Extract<Message, { type: 'ready' }> }> {
  const child = fork(file, args, {
    execArgv: [...process.execArgv, ...(options.execArgv ?? [])],
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const ready = await new Promise<Extract<Message, { type: 'ready' }>>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${file} ${args.join(' ')} was not ready within ${options.timeoutMs ?? 60_000} ms`));
    }, options.timeoutMs ?? 60_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${file} ${args.join(' ')} exited with ${code ?? signal} before it was ready`));
    });
    child.on('message', (message: Message) => {
      if (message.type !== 'ready') return;
      clearTimeout(timer);
      resolve(message);
    });
  });
  return { child, ready };
}

let nextId = 0;
/** Ask a child to run one of the handlers it serves (see `serve`) and return its value. */
export function call<T>(child: ChildProcess, name: string, arg?: unknown): Promise<T> {
  const id = ++nextId;
  return new Promise<T>((resolve, reject) => {
    const onMessage = (message: Message) => {
      if (message.type !== 'reply' || message.id !== id) return;
      child.off('message', onMessage);
      if (message.error !== undefined) reject(new Error(`${name}: ${message.error}`));
      else resolve(message.value as T);
    };
    child.on('message', onMessage);
    if (!child.send({ type: 'call', id, name, ...(arg !== undefined ? { arg } : {}) } satisfies Message)) reject(new Error('child is gone'));
  });
}

/** In a child: answer calls, and run `stop` then exit on `stop` (or when the parent goes away). */
export function serve(handlers: Record<string, (arg?: any) => unknown>, stop: () => Promise<void>): void {
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    try {
      await stop();
    } finally {
      // process.exit (not a natural end) so that --cpu-prof writes its profile now.
      process.exit(0);
    }
  };
  process.on('message', (message: Message) => {
    if (message.type === 'call') {
      const handler = handlers[message.name];
      void (async () => {
        if (!handler) throw new Error(`no handler "${message.name}"`);
        return handler(message.arg);
      })().then(
        (value) => process.send!({ type: 'reply', id: message.id, value } satisfies Message),
        (error: unknown) => process.send!({ type: 'reply', id: message.id, error: error instanceof Error ? error.message : String(error) } satisfies Message),
      );
    }
    if (message.type === 'stop') void shutdown();
  });
  process.on('disconnect', () => void shutdown());
}

/** Ask a child to stop; SIGKILL after `timeoutMs`. */
export async function stop(child: ChildProcess, timeoutMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.send({ type: 'stop' } satisfies Message);
  });
}

const CLOCK_TICKS_PER_SECOND = 100; // getconf CLK_TCK on Linux

/** User + system CPU seconds a process has used so far (/proc/<pid>/stat utime + stime). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces) start at state, field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/** Resident memory now and its peak so far, MiB (/proc/<pid>/status VmRSS, VmHWM). */
export function memory(pid: number): { rssMiB: number; peakMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rssMiB: kib('VmRSS') / 1024, peakMiB: kib('VmHWM') / 1024 };
}

/**
 * The node flags the gateway ships with: those of its start script (`exec node <flags>
 * dist/main.js`), which the image's CMD repeats, less any `--import` (this process's execArgv,
 * which forked children inherit, has tsx's). bench:gateway gives them to every gateway it compares.
 */
export async function gatewayStartFlags(): Promise<string[]> {
  // Imported when called (by a benchmark's driver): the processes measured import this module too,
  // and must not load the test kit.
  const { readStartScript } = await import('@tributary/core/testing');
  const start = readStartScript(fileURLToPath(new URL('../../gateway/', import.meta.url)));
  if (!start) throw new Error('gateway/package.json: no start script of the form `exec node <flags> <script>`');
  return start.flags;
}
