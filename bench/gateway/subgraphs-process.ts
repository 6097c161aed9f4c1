/**
 * Child process of `pnpm bench:gateway`: the four fixture subgraphs, on free loopback ports.
 * With BENCH_AMQP_URL and BENCH_NAMESPACE, their mutations announce each change on RabbitMQ
 * (an event in Tributary's envelope, confirmed by the broker before the mutation answers).
 */
import { createLogger } from '@tributary/core';
import { createTransport, type Transport } from '@tributary/core/events';
import { randomUUID } from 'node:crypto';
import { BENCH_TENANT, onChange, startSubgraphs } from './fixture.ts';
import { serve } from './ipc.ts';

let transport: Transport | undefined;
if (process.env.BENCH_AMQP_URL && process.env.BENCH_NAMESPACE) {
  transport = createTransport({ AMQP_URL: process.env.BENCH_AMQP_URL, TRIBUTARY_NAMESPACE: process.env.BENCH_NAMESPACE }, createLogger({ service: 'bench-fixture', level: 'warn' }));
  await transport.start();
  const events = transport;
  onChange(async ({ type, data }) => {
    const id = randomUUID();
    const envelope = { id, type, source: 'bench-fixture', specversion: '1.0', time: new Date().toISOString(), dataschema: `${type}/v1`, subject: 'upc' in data ? data.upc : data.id, tenantid: BENCH_TENANT, data };
    await events.publish([{ routingKey: type, messageId: id, body: Buffer.from(JSON.stringify(envelope)) }]);
  });
}

const subgraphs = await startSubgraphs();
serve({ counters: () => subgraphs.counters() }, async () => {
  await subgraphs.close();
  await transport?.close();
});
process.send!({ type: 'ready', urls: subgraphs.urls });
