/**
 * Providers from the environment on PostgreSQL and RabbitMQ: a shared per-minute limit that two
 * analysis processes honour together, and a second provider serving while the first fails.
 */
import { startOpenAITestServer, type OpenAITestServer } from '@tributary/ai/testing';
import { queryRows } from '@tributary/core/db';
import { busiestWindow, servicesAvailable, waitFor } from '@tributary/core/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { uploaded, World } from './fixtures.ts';

const available = await servicesAvailable();


describe.skipIf(!available)('AI providers from the environment', () => {
  let world: World;
  const servers: OpenAITestServer[] = [];
  beforeEach(() => {
    world = new World();
  });
  afterEach(async () => {
    await world.cleanup();
    for (const server of servers.splice(0)) await server.close();
  }, 60_000);

  it('keeps two analysis processes within AI_MAX_REQUESTS_PER_MINUTE=60 together, failing no job for it', async () => {
    const server = await startOpenAITestServer({ apiKey: 'sk-test' });
    servers.push(server);
    const env = { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: server.baseURL, AI_MODEL: 'test-model', AI_MAX_REQUESTS_PER_MINUTE: '60' };
    await Promise.all([world.process(env), world.process(env)]);
    await world.observe();
    const docs = Array.from({ length: 75 }, (_, n) => uploaded(n));
    await world.publish(docs.map((d) => d.message));
    // 60 at once, then nothing until the first of them leaves the minute, then the other 15.
    await waitFor(() => docs.every((d) => world.count('analysis.completed', d.documentId) === 1), 100_000, 'every document analysed');
    const chats = server.requests.filter((r) => r.endpoint === 'chat').map((r) => r.receivedAt);
    expect(chats).toHaveLength(75);
    expect(busiestWindow(chats, 60_000)).toBeLessThanOrEqual(60);
    expect(Math.max(...chats) - Math.min(...chats)).toBeGreaterThanOrEqual(59_000);
    expect(world.events.filter((d) => d.routingKey === 'analysis.failed')).toHaveLength(0);
  }, 150_000);

  it('falls back to the second provider of AI_PROVIDERS while the first answers 500, and says which one answered', async () => {
    const [first, second] = [await startOpenAITestServer({ apiKey: 'key-a' }), await startOpenAITestServer({ apiKey: 'key-b' })];
    servers.push(first, second);
    first.inject({ type: 'status', status: 500 }, { times: Number.POSITIVE_INFINITY, endpoint: 'chat' });
    await world.service({
      AI_PROVIDERS: 'primary,backup',
      AI_PRIMARY_BASE_URL: first.baseURL,
      AI_PRIMARY_API_KEY: 'key-a',
      AI_PRIMARY_MODEL: 'model-a',
      AI_BACKUP_BASE_URL: second.baseURL,
      AI_BACKUP_API_KEY: 'key-b',
      AI_BACKUP_MODEL: 'model-b',
    });
    await world.observe();
    const doc = uploaded(1);
    await world.publish([doc.message]);
    await waitFor(() => world.count('analysis.completed', doc.documentId) === 1, 30_000, 'analysed');
    const completed = world.events.find((d) => d.routingKey === 'analysis.completed')!;
    expect(JSON.parse(completed.body.toString()).data).toMatchObject({ provider: 'backup', model: 'model-b' });
    expect(first.requests.filter((r) => r.endpoint === 'chat').length).toBeGreaterThanOrEqual(1);
    expect(second.requests.filter((r) => r.endpoint === 'chat')).toHaveLength(1);
    const probe = await world.probe();
    const [row] = await queryRows<{ provider: string; model: string }>(probe.fork(), 'select provider, model from analyses where document_id = ?', [doc.documentId]);
    expect(row).toEqual({ provider: 'backup', model: 'model-b' });
  });
});
