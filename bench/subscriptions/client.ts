/**
 * Child process of `pnpm bench:subscriptions`: the subscribers, in a process of their own so
 * that their work does not share the gateway's event loop. graphql-ws multiplexes: the
 * subscriptions are spread round-robin over a few connections. Each message's latency is its
 * receipt time minus the job's `updatedAt` (when the producer committed the change).
 */
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { serve } from '../gateway/ipc.ts';
import { percentile } from '../results.ts';

const QUERY = 'subscription Watch($id: ID!) { jobUpdated(jobId: $id) { id status attempts updatedAt } }';

const clients: Client[] = [];
const disposers: (() => void)[] = [];
let latencies: number[] = [];
/** [ms since reset, latency ms, job id] of each message. */
let timeline: [number, number, string][] = [];
/** [job id, receipt time (epoch ms)] of each message: the bus producer's latencies are matched from these. */
let receipts: [string, number][] = [];
let resetAt = Date.now();
let errors = 0;
let setupErrors = 0;
let completes = 0;
let subscribed = 0;
const firstError: string[] = [];

serve(
  {
    connect: async ({ url, token, connections }: { url: string; token: string; connections: number }) => {
      const started = performance.now();
      await Promise.all(
        Array.from(
          { length: connections },
          () =>
            new Promise<void>((resolve, reject) => {
              const client = createClient({
                url,
                webSocketImpl: WebSocket,
                lazy: false,
                retryAttempts: 0,
                connectionParams: { authorization: `Bearer ${token}` },
                on: {
                  connected: () => resolve(),
                  closed: (event) => reject(new Error(`connection closed: ${JSON.stringify(event)}`)),
                  error: (error) => reject(error instanceof Error ? error : new Error(String(error))),
                },
              });
              clients.push(client);
            }),
        ),
      );
      return { connections: clients.length, ms: performance.now() - started };
    },
    subscribe: ({ jobIds }: { jobIds: string[] }) => {
      for (const id of jobIds) {
        const client = clients[subscribed++ % clients.length]!;
        disposers.push(
          client.subscribe<{ jobUpdated: { updatedAt: string } }>(
            { query: QUERY, variables: { id } },
            {
              next: (message) => {
                const precise = performance.timeOrigin + performance.now();
                receipts.push([id, precise]);
                const received = Date.now();
                const updatedAt = message.data?.jobUpdated?.updatedAt;
                if (message.errors?.length || !updatedAt) {
                  errors++;
                  if (firstError.length < 3) firstError.push(JSON.stringify(message).slice(0, 300));
                  return;
                }
                const latency = received - Date.parse(updatedAt);
                latencies.push(latency);
                timeline.push([received - resetAt, latency, id]);
              },
              error: (error) => {
                errors++;
                if (firstError.length < 3) firstError.push(String(error instanceof Error ? error.message : JSON.stringify(error)).slice(0, 300));
              },
              complete: () => void completes++,
            },
          ),
        );
      }
      return subscribed;
    },
    reset: () => {
      setupErrors += errors;
      latencies = [];
      timeline = [];
      receipts = [];
      errors = 0;
      resetAt = Date.now();
    },
    stats: () => {
      const sorted = [...latencies].sort((a, b) => a - b);
      return {
        messages: latencies.length,
        errors,
        setupErrors,
        slowest: [...timeline].sort((a, b) => b[1] - a[1]).slice(0, 10),
        receipts,
        completes,
        firstErrors: firstError,
        latencyMs: { p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted.at(-1) ?? null, mean: sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length) },
      };
    },
  },
  async () => {
    for (const dispose of disposers) dispose();
    await Promise.all(clients.map((client) => client.dispose()));
  },
);
process.send!({ type: 'ready' });
