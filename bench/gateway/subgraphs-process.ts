/** Child process of `pnpm bench:gateway`: the four fixture subgraphs, on free loopback ports. */
import { startSubgraphs } from './fixture.ts';
import { serve } from './ipc.ts';

const subgraphs = await startSubgraphs();
serve({ counters: () => subgraphs.counters() }, () => subgraphs.close());
process.send!({ type: 'ready', urls: subgraphs.urls });
