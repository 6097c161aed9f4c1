/**
 * The tests a new subgraph starts with, as text: a unit test of its fold, and an integration test
 * of the whole service on PostgreSQL and RabbitMQ (the consumer, the inbox, the query). Both pass
 * as generated; they build events from the contracts' golden samples (schema/events/samples).
 */
import type { SubgraphPlan } from './plan.ts';

export const eventsTs = () => `import { parse, type DataSchema, type ParsedEvent } from '@tributary/contracts';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** The contract's golden sample of \`data\` (schema/events/samples/<type>.<version>.json). */
function sample(dataschema: DataSchema): unknown {
  const [type, version] = dataschema.split('/');
  return JSON.parse(readFileSync(new URL(\`../../../schema/events/samples/\${type}.\${version}.json\`, import.meta.url), 'utf8'));
}

/** An event as its producer publishes it, parsed by its contract as the consumer does. */
export function sampleEvent(dataschema: DataSchema, tenant: string, time = new Date().toISOString(), id: string = randomUUID()): ParsedEvent {
  const type = dataschema.split('/')[0];
  return parse({ id, type, source: 'test', specversion: '1.0', time, dataschema, subject: randomUUID(), tenantid: tenant, data: sample(dataschema) });
}
`;

export function foldTestTs(p: SubgraphPlan): string {
  const other = p.otherEvent
    ? `

  it('leaves out the event versions it does not fold', () => {
    expect(countDeltas([sampleEvent('${p.otherEvent}', 't-a')])).toEqual([]);
  });`
    : '';
  return `import type { DataSchema } from '@tributary/contracts';
import { describe, expect, it } from 'vitest';
import { countDeltas } from '../src/fold.ts';
import { sampleEvent } from './events.ts';

const FOLDED: DataSchema = '${p.consumes[0]}';

describe('the ${p.name} fold', () => {
  it('counts a batch per tenant and event version, in key order, with the latest time', () => {
    const events = [
      sampleEvent(FOLDED, 't-b', '2026-01-01T00:00:02.000Z'),
      sampleEvent(FOLDED, 't-a', '2026-01-01T00:00:01.000Z'),
      // Another offset, a later instant.
      sampleEvent(FOLDED, 't-b', '2026-01-01T01:00:03.000+01:00'),
      sampleEvent(FOLDED, 't-b', '2026-01-01T00:00:01.000Z'),
    ];
    expect(countDeltas(events)).toEqual([
      { tenantId: 't-a', eventType: FOLDED, count: 1, lastSeenAt: '2026-01-01T00:00:01.000Z' },
      { tenantId: 't-b', eventType: FOLDED, count: 3, lastSeenAt: '2026-01-01T01:00:03.000+01:00' },
    ]);
  });

  it('folds nothing from an empty batch', () => {
    expect(countDeltas([])).toEqual([]);
  });${other}
});
`;
}

export function viewIntTestTs(p: SubgraphPlan): string {
  const announced = p.publishes
    ? `

  it('announces each fold that changed a tenant\\'s view as ${p.publishes}, in the fold\\'s transaction', async () => {
    const tenant = \`t-\${randomUUID()}\`;
    await publish([sampleEvent(FOLDED, tenant)]);
    await waitFor(async () => (await announced(tenant)).length > 0, 20_000, 'the announcement');
    expect((await announced(tenant))[0]).toMatchObject({ type: '${p.publishes}', source: '${p.name}', subject: tenant, tenantid: tenant, data: { counts: [{ type: FOLDED, count: 1 }] } });
  });`
    : '';
  const announcedHelper = p.publishes
    ? `
  /** The ${p.publishes} events in the outbox for a tenant, oldest first. */
  const announced = async (tenant: string) =>
    (await service.db.fork().execute<{ payload: string }[]>(\`select payload from tributary_outbox where type = '${p.publishes}' and tenant_id = ? order by id\`, [tenant])).map(
      (r) => JSON.parse(r.payload) as Envelope,
    );`
    : '';
  return `/**
 * The ${p.name} service on PostgreSQL and RabbitMQ, as deployed: events published to the broker
 * reach its consumer, are folded once each (the inbox drops a redelivery), and the query answers
 * each tenant its own view.
 */
import type { DataSchema${p.publishes ? ', Envelope' : ''}, ParsedEvent } from '@tributary/contracts';
import { createLogger } from '@tributary/core';
import { deleteNamespace } from '@tributary/core/events';
import { signIdentity } from '@tributary/core/identity';
import { startService, type RunningService } from '@tributary/core/service';
import { brokerQueues, dropTestDatabase, randomDatabaseTarget, servicesAvailable, TEST_AMQP_URL, testNamespace, waitFor } from '@tributary/core/testing';
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ${p.name}Service } from '../src/service.ts';
import { sampleEvent } from './events.ts';

const FOLDED: DataSchema = '${p.consumes[0]}';
const log = createLogger({ service: 'test', level: 'silent' });

describe.skipIf(!(await servicesAvailable()))('the ${p.name} view on PostgreSQL and RabbitMQ', () => {
  const target = randomDatabaseTarget();
  const namespace = testNamespace('${p.name}');
  const secret = randomBytes(32).toString('base64url');
  let service: RunningService;

  beforeAll(async () => {
    service = await startService(${p.name}Service, {
      env: {
        ${p.constant}_DATABASE_URL: \`\${target.url.replace(/\\/[^/]*$/, '')}/\${target.dbName}\`,
        AMQP_URL: TEST_AMQP_URL,
        TRIBUTARY_NAMESPACE: namespace,
        INTERNAL_SIGNING_SECRET: secret,
        LOG_LEVEL: 'silent',
      },
      port: 0,
      host: '127.0.0.1',
      logger: log,
    });
  });
  afterAll(async () => {
    await service?.stop();
    await deleteNamespace(TEST_AMQP_URL, namespace, await brokerQueues(\`\${namespace}.\`).catch(() => [])).catch(() => {});
    await dropTestDatabase(target);
  });

  /** Publish events to the broker, as their producers' relays do. */
  const publish = (events: ParsedEvent[]) =>
    service.transport.publish(events.map((event) => ({ routingKey: event.type, messageId: event.id, body: Buffer.from(JSON.stringify(event)) })));
  /** The query, through the service as the gateway calls it (the caller's identity signed). */
  const view = async (tenantId: string) => {
    const response = await fetch(service.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signIdentity(secret, { tenantId, userId: 'u' }) },
      body: JSON.stringify({ query: '{ ${p.name} { events byType { type count lastSeenAt } } }' }),
    });
    const body = (await response.json()) as { data?: { ${p.name}: { events: number; byType: { type: string; count: number }[] } }; errors?: unknown };
    expect(body.errors).toBeUndefined();
    return body.data!.${p.name};
  };${announcedHelper}

  it('folds each event once into its tenant\\'s view, a redelivery included', async () => {
    const [a, b] = [\`t-a-\${randomUUID()}\`, \`t-b-\${randomUUID()}\`];
    const first = sampleEvent(FOLDED, a);
    // The same event twice (one id): the inbox lets the second copy through without effect.
    await publish([first, first, sampleEvent(FOLDED, a), sampleEvent(FOLDED, b)]);
    await waitFor(async () => (await view(a)).events >= 2 && (await view(b)).events >= 1, 20_000, 'the fold');
    await sleep(300);
    expect(await view(a)).toMatchObject({ events: 2, byType: [{ type: FOLDED, count: 2 }] });
    expect(await view(b)).toMatchObject({ events: 1, byType: [{ type: FOLDED, count: 1 }] });
    expect(await view(\`t-nobody-\${randomUUID()}\`)).toEqual({ events: 0, byType: [] });
  });${announced}
});
`;
}
