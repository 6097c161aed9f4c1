/**
 * Where every benchmark writes its JSON: `bench/results/<name>.json`, with what a reader needs to
 * rerun it and judge it — the commit, whether the tree differed from it, Node's version, the CPU
 * count and the date — in front of the benchmark's own figures. The files the docs quote are
 * committed (docs/benchmarks.md names each).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const RESULTS_DIR = join(ROOT, 'bench', 'results');

const git = (args: string[]) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();

/** What every result file opens with. */
export interface RunInfo {
  commit: string;
  /**
   * True when any tracked file differs from `commit` (untracked files are not counted, nor the
   * result files under bench/results/: a run that writes several, as bench:pipeline with
   * BENCH_BROKER=all, must not call its own earlier output a change to the code measured).
   */
  dirty: boolean;
  node: string;
  cpus: number;
  date: string;
}

export function runInfo(): RunInfo {
  return {
    commit: git(['rev-parse', 'HEAD']),
    dirty: git(['status', '--porcelain', '--untracked-files=no', '--', '.', ':(exclude)bench/results']) !== '',
    node: process.version,
    cpus: cpus().length,
    date: new Date().toISOString(),
  };
}

/**
 * Writes `bench/results/<name>.json` (the run's info first, then `figures`) and returns its path.
 * `BENCH_RESULT_NAME` names the file instead, for a run that must not replace the one the docs
 * quote (e.g. a before/after comparison of one setting).
 */
export function writeResult(benchmark: string, figures: Record<string, unknown>, info: RunInfo = runInfo()): string {
  const name = process.env.BENCH_RESULT_NAME || benchmark;
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(name)) throw new Error(`BENCH_RESULT_NAME: "${name}" is not a file name (a-z, 0-9, . _ -)`);
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${name}.json`);
  writeFileSync(file, `${JSON.stringify({ benchmark, ...info, ...figures }, null, 2)}\n`);
  return file;
}

/**
 * The `p`th percentile (0-100) of `sorted`, ascending, by nearest rank: the smallest value with at
 * least p% of them at or below it. `null` for no values: a run that measured nothing has no
 * percentile, and says so in its JSON (where a NaN would be written as null too).
 */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** The median of `values` (NaN for none). */
export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Median, smallest and largest of ratios measured round by round: how a floor-vs-system gap is reported. */
export function ratioSummary(ratios: number[]): { median: number; min: number; max: number; rounds: number } {
  return { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios), rounds: ratios.length };
}

/**
 * On SIGINT or SIGTERM, once: say so, run `cleanup` (stop what the benchmark started, drop its
 * databases and queues) and print the problems it reports, then exit 130; a cleanup that hangs
 * is cut off after 90 s. `interrupted` tells the benchmark's loops to start nothing new.
 */
export function onInterrupt(cleanup: () => Promise<readonly string[] | void>): { readonly interrupted: boolean } {
  const state = { interrupted: false };
  const onSignal = (signal: NodeJS.Signals) => {
    if (state.interrupted) return;
    state.interrupted = true;
    console.error(`\n${signal}: stopping the system and cleaning up`);
    setTimeout(() => process.exit(130), 90_000).unref();
    cleanup()
      .then(
        (problems) => {
          if (problems && problems.length > 0) console.error(problems.join('\n'));
        },
        () => {},
      )
      .finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return state;
}
