import { createLogger } from '@tributary/core';
import { dropDatabase, Migration, openDatabase, queryRun } from '@tributary/core/db';
import { EventConsumer, OutboxRelay, publish, RabbitMqTransport, type NewEvent } from '@tributary/core/events';
import { randomBytes, randomUUID } from 'node:crypto';
const DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/postgres';
const AMQP_URL = 'amqp://guest:guest@127.0.0.1:5672';
const logger = createLogger({ service: 'bench', level: 'warn' });
const ns = `bench_${randomBytes(4).toString('hex')}`;
class ViewTable extends Migration { override up(): void { this.addSql('create table bench_view (document_id text primary key, tenant_id text not null)'); } }
const dbName = `tributary_bench_${randomBytes(4).toString('hex')}`;
const open = () => openDatabase({ service: 'bench', target: { kind: 'postgres', url: DATABASE_URL, dbName }, entities: [], migrations: [{ name: '9000-bench-view', class: ViewTable }], logger, poolSize: 4 });
const writerDb = await open(); const relayDb = await open(); const consumerDb = await open();
const rt = new RabbitMqTransport({ url: AMQP_URL, namespace: ns, logger, connectionName: `${ns}-relay` });
const ct = new RabbitMqTransport({ url: AMQP_URL, namespace: ns, logger, connectionName: `${ns}-consumer` });
await rt.start(); await ct.start();
let onStart: (() => void) | undefined; let onDone: (() => void) | undefined;
const consumer = new EventConsumer({ service: 'bench', name: 'view', types: ['document.uploaded'], db: consumerDb, transport: ct, logger, prefetch: 100, maxBatch: 100, concurrency: 4,
  batchHandler: async (events, { em }) => { onStart?.(); for (const e of events) if (e.dataschema === 'document.uploaded/v1') await queryRun(em, 'insert into bench_view values (?, ?)', [e.data.documentId, e.tenantid]); },
  onApplied: () => onDone?.() });
await consumer.start();
const relay = new OutboxRelay({ db: relayDb, transport: rt, logger, batchSize: 500, concurrency: 2, retainSentMs: 3_600_000 });
await relay.start();
let tw = 0, tp = 0, tpd = 0;
const ow = relay.wake.bind(relay); (relay as any).wake = () => { tw = performance.now(); ow(); };
const op = rt.publish.bind(rt); (rt as any).publish = async (m: any) => { tp = performance.now(); const r = await op(m); tpd = performance.now(); return r; };
const w: number[] = [], p: number[] = [], h: number[] = [], cf: number[] = [];
const ev = (): NewEvent<'document.uploaded'> => { const documentId = randomUUID(); return { type: 'document.uploaded', subject: documentId, tenantId: 'bench', data: { documentId, jobId: randomUUID(), title: 't', text: 'hello', contentType: 'text/plain', uploadedAt: new Date().toISOString() } }; };
const a: number[] = [], b: number[] = [], c: number[] = [];
for (let i = 0; i < 150; i++) {
  const started = new Promise<number>((r) => (onStart = () => r(performance.now())));
  const done = new Promise<number>((r) => (onDone = () => r(performance.now())));
  const t0 = performance.now();
  await writerDb.fork().transactional((em) => publish(em, 'bench', [ev()]));
  const t1 = performance.now();
  const t2 = await started; const t3 = await done;
  if (i >= 20) { w.push(tw - t1); p.push(tp - tw); h.push(t2 - tp); cf.push(tpd - tp); a.push(t1 - t0); b.push(t2 - t1); c.push(t3 - t2); }
  await new Promise((r) => setTimeout(r, 20));
}
const med = (x: number[]) => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)]!.toFixed(2);
console.log('commit→wake', med(w), 'wake→publish', med(p), 'publish→handler', med(h), 'confirm', med(cf));
console.log('publish tx', med(a), 'commit→handler', med(b), 'handler→applied', med(c));
await consumer.stop(); await relay.stop();
await ct.deleteQueue({ queue: consumer.queue, retryDelaysMs: consumer.retryDelaysMs }); await ct.deleteExchange();
await rt.close(); await ct.close(); await writerDb.close(); await relayDb.close(); await consumerDb.close();
await dropDatabase(DATABASE_URL, dbName);
