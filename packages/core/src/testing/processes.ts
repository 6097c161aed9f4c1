import type { ChildProcess } from 'node:child_process';

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
