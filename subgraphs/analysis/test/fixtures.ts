/** One analysis test's world on PostgreSQL and RabbitMQ, shared by the analysis stage's tests. */
import type { Analyzer } from '@tributary/ai';
import { createLogger, signIdentity } from '@tributary/core';
import { dropDatabase, queryRows, type Database } from '@tributary/core/db';
import { deleteNamespace, RabbitMqTransport, type Delivery } from '@tributary/core/events';
import { startService, type RunningService } from '@tributary/core/service';
import { brokerQueues, freePort, openTestDatabase, stopProcesses, TEST_AMQP_URL, TEST_DATABASE_URL, testNamespace, waitFor } from '@tributary/core/testing';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { createAnalysisService } from '../src/service.ts';

export const silent = createLogger({ service: 'test', level: 'silent' });
const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));

/** A `document.uploaded` envelope as the relay puts it on the wire (tenant-a's, NORMAL, titled `Report <n>`, unless told). */
export function uploaded(n: number, options: { tenant?: string; priority?: 'HIGH' | 'NORMAL' | 'LOW' } = {}) {
  const documentId = randomUUID();
  const jobId = randomUUID();
  const tenant = options.tenant ?? 'tenant-a';
  const title = options.tenant ? `Report ${n} of ${tenant}` : `Report ${n}`;
  const envelope = {
    id: randomUUID(),
    type: 'document.uploaded',
    source: 'documents',
    specversion: '1.0',
    time: new Date().toISOString(),
    dataschema: 'document.uploaded/v1',
    subject: documentId,
    tenantid: tenant,
    data: {
      documentId,
      jobId,
      title,
      text: `${title}: revenue grew and costs fell in every region.`,
      contentType: 'text/plain',
      uploadedAt: new Date().toISOString(),
      ...(options.priority ? { priority: options.priority } : {}),
    },
  };
  return { documentId, jobId, tenant, title, message: { routingKey: 'document.uploaded', messageId: envelope.id, body: Buffer.from(JSON.stringify(envelope)) } };
}

/** One test's world: a database and a namespace of its own, analysis processes, an observer of analysis.* events. */
export class World {
  readonly namespace = testNamespace('an');
  readonly dbName = `tributary_test_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  readonly events: Delivery[] = [];
  private transport: RabbitMqTransport | undefined;
  private readonly services: RunningService[] = [];
  private readonly children: ChildProcess[] = [];
  private readonly dbs: Database[] = [];

  env(extra: Record<string, string> = {}): Record<string, string> {
    return {
      ANALYSIS_DATABASE_URL: `${TEST_DATABASE_URL.replace(/\/[^/]*$/, '')}/${this.dbName}`,
      AMQP_URL: TEST_AMQP_URL,
      TRIBUTARY_NAMESPACE: this.namespace,
      INTERNAL_SIGNING_SECRET: 'lease-test-secret-lease-test-secret-0123',
      LOG_LEVEL: 'silent',
      ANALYSIS_RETRY_DELAYS_MS: '50,100',
      ...extra,
    };
  }

  /** An analysis service in this process (its analyzer from `env` unless given). */
  async service(env: Record<string, string>, analyzer?: Analyzer): Promise<RunningService> {
    const running = await startService(createAnalysisService(analyzer ? { analyzer } : {}), { env: this.env(env), port: 0, logger: silent });
    this.services.push(running);
    return running;
  }

  /** A GraphQL request to an analysis service as `tenant` (signed as the gateway signs it). */
  async graphql<T = any>(url: string, tenant: string, query: string, variables: Record<string, unknown> = {}): Promise<{ data?: T; errors?: { message: string; extensions?: { code?: string } }[] }> {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signIdentity(this.env().INTERNAL_SIGNING_SECRET!, { tenantId: tenant, userId: 'test-user' }) },
      body: JSON.stringify({ query, variables }),
    });
    return (await response.json()) as { data?: T };
  }

  /** An analysis service in a process of its own, started as the image starts it; resolves once ready. */
  async process(env: Record<string, string>): Promise<ChildProcess & { url: string }> {
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN], { env: { ...process.env, ...this.env({ ...env, PORT: String(port) }) }, stdio: 'ignore' });
    this.children.push(child);
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/ready`).catch(() => undefined))?.status === 200, 60_000, 'analysis process ready');
    return Object.assign(child, { url: `http://127.0.0.1:${port}/graphql` });
  }

  /** Record every analysis.* event (started once the queue exists: declare it after the services). */
  async observe(): Promise<void> {
    this.transport = new RabbitMqTransport({ url: TEST_AMQP_URL, namespace: this.namespace, logger: silent, connectionName: `${this.namespace}-test` });
    await this.transport.start();
    await this.transport.consume({ queue: `${this.namespace}.test.observer`, bindings: ['analysis.*'], prefetch: 1000, retryDelaysMs: [] }, (d) => {
      this.events.push(d);
      void d.ack();
    });
  }

  publish(messages: ReturnType<typeof uploaded>['message'][]): Promise<void> {
    return this.transport!.publish(messages);
  }

  /**
   * Events of a type about a document, by event id. The outbox publishes at least once: a process
   * SIGKILLed after the broker confirmed a row but before the row was marked sent leaves it to be
   * published again, under the same id, which every consumer's inbox then ignores. An event is
   * one id, however many deliveries carried it.
   */
  count(type: string, documentId: string): number {
    const ids = new Set<string>();
    for (const d of this.events) {
      const event = JSON.parse(d.body.toString()) as { id: string; data: { documentId?: string } };
      if (d.routingKey === type && event.data.documentId === documentId) ids.add(event.id);
    }
    return ids.size;
  }

  /** Terminal events (completed, failed, cancelled) about a document, by event id. */
  terminal(documentId: string): number {
    return this.count('analysis.completed', documentId) + this.count('analysis.failed', documentId) + this.count('analysis.cancelled', documentId);
  }

  /** A connection pool of the test's own onto the service's database. */
  async probe(): Promise<Database> {
    const db = await openTestDatabase({ kind: 'postgres', url: TEST_DATABASE_URL, dbName: this.dbName }, { logger: silent, poolSize: 1 });
    this.dbs.push(db);
    return db;
  }

  async cleanup(): Promise<void> {
    await stopProcesses(this.children, 5_000);
    for (const service of this.services) await service.stop().catch(() => {});
    for (const db of this.dbs) await db.close().catch(() => {});
    await this.transport?.close().catch(() => {});
    await deleteNamespace(TEST_AMQP_URL, this.namespace, await brokerQueues(`${this.namespace}.`)).catch(() => {});
    await dropDatabase(TEST_DATABASE_URL, this.dbName).catch(() => {});
  }
}

/** Backends of the service's database that are inside a statement or a transaction, other than the probe's own. */
export async function busyConnections(probe: Database, dbName: string): Promise<number> {
  const [row] = await queryRows<{ n: number | string }>(
    probe.fork(),
    `select count(*) as n from pg_stat_activity where datname = ? and pid <> pg_backend_pid() and state in ('active', 'idle in transaction', 'idle in transaction (aborted)')`,
    [dbName],
  );
  return Number(row!.n);
}
