import type { Logger } from '@tributary/core';
import cluster, { type Worker } from 'node:cluster';

export interface ClusterOptions {
  workers: number;
  logger: Logger;
  /** Delay before a worker that died is replaced; doubles while workers keep dying young, up to 30 s. */
  restartDelayMs?: number;
}

/**
 * The primary of a gateway cluster: forks `workers` copies of this process (each runs the
 * gateway: `cluster.isWorker`), which share the listening port (node:cluster hands connections
 * out round-robin), and replaces a worker that dies. `stop()` stops every worker gracefully
 * (SIGTERM) and resolves once all have exited, or rejects if one did not exit cleanly.
 *
 * Each worker is a whole gateway: its own event queue (so every worker sees every event for its
 * own subscribers and cache), its own cache and rate limiter. Nothing is shared but the port.
 */
export function startClusterPrimary(options: ClusterOptions): { stop(): Promise<void> } {
  const { logger } = options;
  const baseDelay = options.restartDelayMs ?? 1_000;
  let delay = baseDelay;
  let stopped: ((failed: boolean) => void) | undefined;
  let failed = false;
  const started = new Map<Worker, number>();

  const fork = () => started.set(cluster.fork(), Date.now());
  cluster.on('exit', (worker, code, signal) => {
    const lived = Date.now() - (started.get(worker) ?? Date.now());
    started.delete(worker);
    if (stopped) {
      // A worker still starting has no handler yet: SIGTERM ends it at once, which is no failure.
      failed ||= code !== 0 && signal !== 'SIGTERM';
      if (started.size === 0) stopped(failed);
      return;
    }
    // A worker that lived a while resets the back-off; one that dies at once (a port taken, a
    // broker refusing it) is retried ever more slowly rather than in a tight loop.
    delay = lived > 30_000 ? baseDelay : Math.min(delay * 2, 30_000);
    logger.error({ pid: worker.process.pid, code, signal, restartInMs: delay }, 'gateway worker died; replacing it');
    setTimeout(() => {
      if (!stopped) fork();
    }, delay).unref();
  });
  for (let i = 0; i < options.workers; i++) fork();
  logger.info({ workers: options.workers }, 'gateway cluster started');

  return {
    stop: () =>
      new Promise<void>((resolve, reject) => {
        stopped = (anyFailed) => (anyFailed ? reject(new Error('a gateway worker did not stop cleanly')) : resolve());
        if (started.size === 0) return resolve();
        for (const worker of started.keys()) worker.process.kill('SIGTERM');
      }),
  };
}
