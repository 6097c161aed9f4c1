import { createLogger, errorMessage } from '@tributary/core';
import { runMain } from '@tributary/core/service';
import cluster from 'node:cluster';
import { startClusterPrimary } from './cluster.ts';
import { loadGatewayConfig } from './config.ts';
import { startGateway } from './gateway.ts';

/** A gateway that reloads SUPERGRAPH_PATH on SIGHUP (a failed reload keeps serving the old supergraph). */
async function reloadingGateway() {
  const gateway = await startGateway();
  process.on('SIGHUP', () => {
    gateway.reload().catch((error: unknown) => process.stderr.write(`gateway: reload refused, still serving the previous supergraph: ${errorMessage(error)}\n`));
  });
  return gateway;
}

await runMain('gateway', async () => {
  if (cluster.isWorker) return reloadingGateway();
  const config = loadGatewayConfig();
  if (config.GATEWAY_WORKERS <= 1) return reloadingGateway();
  const primary = await startClusterPrimary({ workers: config.GATEWAY_WORKERS, logger: createLogger({ service: 'gateway', level: config.LOG_LEVEL }) });
  // Each worker reloads on its own.
  process.on('SIGHUP', () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGHUP');
  });
  return primary;
});
