import { createLogger } from '@tributary/core';
import { runMain } from '@tributary/core/service';
import cluster from 'node:cluster';
import { startClusterPrimary } from './cluster.ts';
import { loadGatewayConfig } from './config.ts';
import { startGateway } from './gateway.ts';

await runMain('gateway', async () => {
  if (cluster.isWorker) return startGateway();
  const config = loadGatewayConfig();
  if (config.GATEWAY_WORKERS <= 1) return startGateway();
  return startClusterPrimary({ workers: config.GATEWAY_WORKERS, logger: createLogger({ service: 'gateway', level: config.LOG_LEVEL }) });
});
