/**
 * CPU accounting from /proc for the benchmarks: per process tree (a service and its children),
 * the PostgreSQL backends working on one run's databases plus the server's shared processes,
 * the RabbitMQ broker, the benchmark process itself, and the machine as a whole.
 */
import { readdirSync, readFileSync } from 'node:fs';

const CLOCK_TICKS_PER_SECOND = 100; // getconf CLK_TCK on Linux x86-64
const TICK_MS = 1000 / CLOCK_TICKS_PER_SECOND;
interface ProcEntry {
  ppid: number;
  comm: string;
  /** utime + stime + cutime + cstime, clock ticks: its own CPU and that of children it reaped. */
  ticks: number;
  /** utime + stime only. */
  own: number;
}

function readProcs(): Map<number, ProcEntry> {
  const procs = new Map<number, ProcEntry>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // exited between readdir and read
    }
    const close = stat.lastIndexOf(')');
    // Fields after the command name (which may hold spaces and parentheses) start at state, field 3.
    const fields = stat.slice(close + 2).split(' ');
    const own = Number(fields[11]) + Number(fields[12]);
    procs.set(Number(name), { ppid: Number(fields[1]), comm: stat.slice(stat.indexOf('(') + 1, close), own, ticks: own + Number(fields[13]) + Number(fields[14]) });
  }
  return procs;
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
  } catch {
    return '';
  }
}

/** The pids in the trees rooted at `roots`, roots included. */
function descendants(procs: Map<number, ProcEntry>, roots: readonly number[]): Set<number> {
  const children = new Map<number, number[]>();
  for (const [pid, p] of procs) children.set(p.ppid, [...(children.get(p.ppid) ?? []), pid]);
  const out = new Set<number>();
  const stack = roots.filter((pid) => procs.has(pid));
  while (stack.length > 0) {
    const pid = stack.pop()!;
    if (out.has(pid)) continue;
    out.add(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

/**
 * CPU of whole process trees: each live member's own time plus what it reaped from exited
 * children (cutime/cstime), so a PostgreSQL backend or a tsx esbuild helper that exits inside
 * the window still counts.
 */
function treeTicks(procs: Map<number, ProcEntry>, roots: readonly number[]): number {
  let sum = 0;
  for (const pid of descendants(procs, roots)) sum += procs.get(pid)!.ticks;
  return sum;
}

function postmasters(procs: Map<number, ProcEntry>): number[] {
  return [...procs].filter(([, p]) => p.comm === 'postgres' && procs.get(p.ppid)?.comm !== 'postgres').map(([pid]) => pid);
}

function rabbitBrokers(procs: Map<number, ProcEntry>): number[] {
  // Only the broker's VM: `rabbitmqctl` runs a beam.smp of its own for a moment.
  return [...procs].filter(([pid, p]) => p.comm === 'beam.smp' && cmdline(pid).includes('rabbit boot')).map(([pid]) => pid);
}

/** Busy clock ticks of the whole machine (/proc/stat: user nice system irq softirq steal). */
function machineBusyTicks(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return fields[0]! + fields[1]! + fields[2]! + fields[5]! + fields[6]! + fields[7]!;
}

/** PostgreSQL's own processes, which work for every database: the WAL, checkpoints, vacuum. */
const PG_SHARED = /: (checkpointer|background writer|walwriter|autovacuum launcher|logical replication launcher|archiver|stats collector)\s*$/;

export interface CpuSnapshot {
  at: number;
  procs: Map<number, ProcEntry>;
  /**
   * Own ticks of the PostgreSQL processes that work for this run: backends and autovacuum workers
   * whose command line names one of its databases, the shared background processes and the
   * postmaster itself — not another client's backends on a shared server.
   */
  pgRun: Map<number, number>;
  machine: number;
  loadgen: NodeJS.CpuUsage;
}

export function snapshot(namespace: string): CpuSnapshot {
  const procs = readProcs();
  const masters = new Set(postmasters(procs));
  const pgRun = new Map<number, number>();
  for (const [pid, p] of procs) {
    if (p.comm !== 'postgres') continue;
    const command = cmdline(pid);
    if (masters.has(pid) || command.includes(`tributary_${namespace}_`) || PG_SHARED.test(command)) pgRun.set(pid, p.own);
  }
  return { at: performance.now(), procs, pgRun, machine: machineBusyTicks(), loadgen: process.cpuUsage() };
}

export interface CpuFigures {
  /**
   * CPU ms in the window by process group: the services' process trees; `postgres`: the processes
   * working for this run (see {@link CpuSnapshot.pgRun}); `rabbitmq`: the broker's whole tree.
   */
  ms: Record<string, number>;
  /**
   * Every PostgreSQL process, live and exited (the postmaster's reaped children), ms: equal to
   * `ms.postgres` when nobody else uses the server, more when someone does.
   */
  postgresAllMs: number;
  loadgenMs: number;
  machineMs: number;
  /** Machine CPU no group (nor the load generator) accounts for, ms: another user's work. */
  otherMs: number;
  windowMs: number;
}

export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot, pids: Record<string, number>): CpuFigures {
  const ms: Record<string, number> = {};
  const tree = (roots: (procs: Map<number, ProcEntry>) => number[]) => (treeTicks(b.procs, roots(b.procs)) - treeTicks(a.procs, roots(a.procs))) * TICK_MS;
  for (const [name, pid] of Object.entries(pids)) ms[name] = tree(() => [pid]);
  let pg = 0;
  // A backend that opened inside the window counts from zero.
  for (const [pid, ticks] of b.pgRun) pg += ticks - (a.pgRun.get(pid) ?? 0);
  ms.postgres = pg * TICK_MS;
  ms.rabbitmq = tree(rabbitBrokers);
  const loadgen = process.cpuUsage(a.loadgen);
  const loadgenMs = (loadgen.user + loadgen.system) / 1000;
  const machineMs = (b.machine - a.machine) * TICK_MS;
  const attributed = Object.values(ms).reduce((sum, v) => sum + v, 0) + loadgenMs;
  return { ms, postgresAllMs: tree(postmasters), loadgenMs, machineMs, otherMs: Math.max(0, machineMs - attributed), windowMs: b.at - a.at };
}
