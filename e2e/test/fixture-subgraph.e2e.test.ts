/**
 * A team adds a subgraph of its own, with its entity, its event and its subscription declared in
 * its SDL, and the gateway serves it with no code of it: the subscription (current state first,
 * then changes, completion on its condition, tenant filtering) and the cache's invalidation by the
 * fixture's events. The supergraph gains the subgraph by a reload, as a running gateway would.
 */
import { composeSubgraphs, subgraphs } from '@tributary/schema/compose';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse, type DocumentNode } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect, startEmbeddedSystem, TEST_SECRETS, type GraphQLResponse } from './fixtures/system.ts';
import { startTickets, ticketsTypeDefs, type TicketsSubgraph } from './fixtures/tickets.ts';

const TICKET_UPDATED = 'subscription Watch($id: ID!) { ticketUpdated(ticketId: $id) { id title status assignee } }';
const TICKET = 'query Ticket($id: ID!) { ticket(id: $id) { id title status } }';

function supergraph(extra: { name: string; url: string; typeDefs: typeof ticketsTypeDefs }[]): string {
  const { result } = composeSubgraphs([...subgraphs, ...extra]);
  if (result.errors) throw new Error(result.errors.map((e) => e.message).join('\n'));
  return result.supergraphSdl;
}

/**
 * The embedded system over a supergraph file of its own, and the tickets subgraph; `withTickets`
 * says whether the file composes it from the start. Registers its own start and clean-up.
 */
function ticketsSystem(withTickets: boolean, env: Record<string, string> = {}) {
  const handle = {} as { system: Awaited<ReturnType<typeof startEmbeddedSystem>>; tickets: TicketsSubgraph; path: string; ticketsSupergraph(typeDefs?: DocumentNode): string };
  const dir = mkdtempSync(join(tmpdir(), 'tributary-fixture-'));
  handle.path = join(dir, 'supergraph.graphql');
  handle.ticketsSupergraph = (typeDefs = ticketsTypeDefs) => supergraph([{ name: 'tickets', url: handle.tickets.url, typeDefs }]);
  beforeAll(async () => {
    handle.tickets = await startTickets({ secret: TEST_SECRETS.internal, transport: () => handle.system.services[0]!.transport });
    writeFileSync(handle.path, withTickets ? handle.ticketsSupergraph() : supergraph([]));
    handle.system = await startEmbeddedSystem({ env: { SUPERGRAPH_PATH: handle.path, ...env } });
  }, 120_000);
  afterAll(async () => {
    await handle.system?.stop();
    await handle.tickets?.stop();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);
  return handle;
}

describe('a fifth subgraph declared only in its SDL', () => {
  const fixture = ticketsSystem(true, { GATEWAY_CACHE_TYPES: 'Ticket,Job,Document' });

  it('sends the current state first, then each change, and completes on its condition', async () => {
    const id = randomUUID();
    fixture.tickets.add('tenant-a', { id, title: 'Printer on fire', status: 'OPEN', assignee: null });
    // Another tenant's ticket of the same id: its events must not reach tenant-a.
    fixture.tickets.add('tenant-b', { id, title: 'Other tenant', status: 'OPEN', assignee: null });
    const messages: GraphQLResponse[] = [];
    const done = new Promise<void>((resolve, reject) => {
      fixture.system.ws().subscribe({ query: TICKET_UPDATED, variables: { id } }, { next: (m) => void messages.push(m as GraphQLResponse), error: reject, complete: resolve });
    });
    const count = (n: number) => waitForCondition(async () => messages.length >= n);
    // The first message is the current state, read after the listener was registered.
    await count(1);
    await fixture.tickets.change('tenant-b', id, { status: 'CLOSED' });
    await fixture.tickets.change('tenant-a', id, { assignee: 'ana' });
    await count(2);
    // An event that changes nothing the state compares sends nothing; nor does tenant-b's.
    await fixture.tickets.announce('tenant-a', id);
    await sleep(300);
    expect(messages).toHaveLength(2);
    await fixture.tickets.change('tenant-a', id, { status: 'PENDING' });
    await count(3);
    await fixture.tickets.change('tenant-a', id, { status: 'CLOSED' });
    await done;
    expect(messages.map((m) => m.data.ticketUpdated)).toEqual([
      { id, title: 'Printer on fire', status: 'OPEN', assignee: null },
      { id, title: 'Printer on fire', status: 'OPEN', assignee: 'ana' },
      { id, title: 'Printer on fire', status: 'PENDING', assignee: 'ana' },
      { id, title: 'Printer on fire', status: 'CLOSED', assignee: 'ana' },
    ]);
  });

  it('sends a closed ticket once and completes; an unknown one is NOT_FOUND at once', async () => {
    const id = randomUUID();
    fixture.tickets.add('tenant-a', { id, title: 'Done already', status: 'CLOSED', assignee: null });
    const closed = await collect(fixture.system.ws(), TICKET_UPDATED, { id }, 5_000);
    expect(closed.map((m) => m.data.ticketUpdated.status)).toEqual(['CLOSED']);
    const started = Date.now();
    const unknown = await collect(fixture.system.ws(), TICKET_UPDATED, { id: randomUUID() }, 5_000);
    expect(unknown).toHaveLength(1);
    expect(unknown[0]!.errors?.[0]?.extensions).toMatchObject({ code: 'NOT_FOUND', type: 'Ticket' });
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it('caches the entity and drops it on the fixture’s event', async () => {
    const id = randomUUID();
    fixture.tickets.add('tenant-a', { id, title: 'Cached', status: 'OPEN', assignee: null });
    const read = async () => {
      const response = await fetch(fixture.system.gateways[0]!, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${await fixture.system.token()}` },
        body: JSON.stringify({ query: TICKET, variables: { id } }),
      });
      return { body: (await response.json()) as GraphQLResponse, cache: response.headers.get('x-tributary-cache') };
    };
    expect((await read()).cache).toBe('miss');
    const reads = fixture.tickets.reads;
    expect(await read()).toMatchObject({ cache: 'hit', body: { data: { ticket: { status: 'OPEN' } } } });
    expect(fixture.tickets.reads).toBe(reads);
    // Changed without its event: the cache may still serve the old state (nothing told it).
    await fixture.tickets.change('tenant-a', id, { status: 'PENDING' }, false);
    expect((await read()).body.data.ticket.status).toBe('OPEN');
    await fixture.tickets.announce('tenant-a', id);
    await waitForCondition(async () => (await read()).body.data.ticket.status === 'PENDING');
  });
});

async function waitForCondition(check: () => Promise<boolean>, timeoutMs = 5_000) {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await sleep(20);
  }
}

describe('a gateway reloading its supergraph', () => {
  const fixture = ticketsSystem(false);

  it('serves a new subgraph’s queries and subscriptions, its events bound, once the file is reloaded', async () => {
    const id = randomUUID();
    fixture.tickets.add('tenant-a', { id, title: 'After reload', status: 'OPEN', assignee: null });
    const before = await collect(fixture.system.ws(), TICKET_UPDATED, { id }, 5_000).catch((error: unknown) => error);
    expect(String(before)).toMatch(/ticketUpdated/);
    writeFileSync(fixture.path, fixture.ticketsSupergraph());
    await fixture.system.gateway.reload();
    expect(await fixture.system.query(TICKET, { id })).toEqual({ data: { ticket: { id, title: 'After reload', status: 'OPEN' } } });
    const messages: GraphQLResponse[] = [];
    const done = new Promise<void>((resolve, reject) => {
      fixture.system.ws().subscribe({ query: TICKET_UPDATED, variables: { id } }, { next: (m) => void messages.push(m as GraphQLResponse), error: reject, complete: resolve });
    });
    await waitForCondition(async () => messages.length >= 1);
    await fixture.tickets.change('tenant-a', id, { status: 'CLOSED' });
    await done;
    expect(messages.map((m) => m.data.ticketUpdated.status)).toEqual(['OPEN', 'CLOSED']);
  });

  it('refuses a supergraph whose bindings are broken, and keeps serving the one it has', async () => {
    const broken = ticketsTypeDefs.loc!.source.body.replace('lookup: "ticket(id: $key)"', 'lookup: "ticket(id: $nope)"');
    writeFileSync(fixture.path, fixture.ticketsSupergraph(parse(broken)));
    await expect(fixture.system.gateway.reload()).rejects.toThrow(/invalid event bindings:\n.*Subscription\.ticketUpdated.*\$key/);
    const id = randomUUID();
    fixture.tickets.add('tenant-a', { id, title: 'Still served', status: 'CLOSED', assignee: null });
    const messages = await collect(fixture.system.ws(), TICKET_UPDATED, { id }, 5_000);
    expect(messages.map((m) => m.data.ticketUpdated.status)).toEqual(['CLOSED']);
  });
});
