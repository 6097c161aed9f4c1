import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * SIGTERM every child and wait for it to exit; one still running after `graceMs` is SIGKILLed.
 * Returns the children (by their last argument, the script) that were killed, and those that
 * exited on their own with a code other than 0: a service must stop gracefully on SIGTERM.
 */
export async function stopProcesses(children: readonly ChildProcess[], graceMs = 10_000): Promise<{ killed: string[]; failed: string[] }> {
  const killed: string[] = [];
  const failed: string[] = [];
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const name = child.spawnargs.at(-1) ?? String(child.pid);
          let wasKilled = false;
          const timer = setTimeout(() => {
            wasKilled = true;
            killed.push(name);
            child.kill('SIGKILL');
          }, graceMs);
          child.once('exit', (code) => {
            clearTimeout(timer);
            if (!wasKilled && code !== 0) failed.push(`${name} (exit ${code})`);
            resolve();
          });
          child.kill('SIGTERM');
        }),
    ),
  );
  return { killed, failed };
}

/** How a package's `start` script runs it: `exec node <flags> <script>`. */
export interface StartScript {
  /** Node flags (`--…`) without a loader (`--import <module>`), which is the starter's choice. */
  flags: string[];
  /** What node runs, relative to the package folder: `dist/main.js` (a tree from before `pnpm build`: `src/main.ts`). */
  script: string;
}

/**
 * A package's start script, `[exec] node <flags> <script>` in its package.json (how its image
 * starts it); undefined when it has none of that form, or no package.json.
 */
export function readStartScript(packageDir: string): StartScript | undefined {
  let start: unknown;
  try {
    start = (JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8')) as { scripts?: { start?: unknown } }).scripts?.start;
  } catch {
    return undefined;
  }
  if (typeof start !== 'string') return undefined;
  const [node, ...args] = start.trim().replace(/^exec\s+/, '').split(/\s+/);
  const script = args.at(-1);
  if (node !== 'node' || script === undefined || script.startsWith('-')) return undefined;
  const flags = args.slice(0, -1).filter((arg, i, all) => arg.startsWith('--') && arg !== '--import' && all[i - 1] !== '--import');
  return { flags, script };
}

/**
 * The node arguments that start a package as its start script does, the script made absolute
 * (TypeScript through tsx); undefined as for {@link readStartScript}.
 */
export function startScriptArgs(packageDir: string): string[] | undefined {
  const start = readStartScript(packageDir);
  if (!start) return undefined;
  return [...start.flags, ...(start.script.endsWith('.ts') ? ['--import', 'tsx'] : []), join(packageDir, start.script)];
}
