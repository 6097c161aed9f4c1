import { runMain } from '@tributary/core/service';
import { startGateway } from './gateway.ts';

await runMain('gateway', () => startGateway());
