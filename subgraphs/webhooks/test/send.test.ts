import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newSecret, sendWebhook, signedHeaders } from '../src/send.ts';
import type { Resolver } from '../src/ssrf.ts';

interface Received {
  headers: IncomingMessage['headers'];
  body: string;
}

let server: Server;
let port: number;
const received: Received[] = [];
let answer: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.writeHead(204).end();

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      received.push({ headers: req.headers, body });
      answer(req, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

describe('signedHeaders', () => {
  it('signs in the Standard Webhooks format, verifiable with the standardwebhooks library', () => {
    const secret = newSecret();
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(Buffer.from(secret.slice('whsec_'.length), 'base64').length).toBeGreaterThanOrEqual(24);
    const body = JSON.stringify({ type: 'job.completed', timestamp: new Date().toISOString(), data: { jobId: 'j1' } });
    const headers = signedHeaders('msg_1', new Date(), body, [secret]);
    expect(headers['webhook-id']).toBe('msg_1');
    expect(headers['webhook-timestamp']).toMatch(/^\d{10}$/);
    expect(headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(new Webhook(secret).verify(body, headers)).toEqual(JSON.parse(body));
    expect(() => new Webhook(newSecret()).verify(body, headers)).toThrow();
    expect(() => new Webhook(secret).verify(`${body} `, headers)).toThrow();
  });

  it('signs with every secret given, so a receiver still on the previous one verifies during a rotation', () => {
    const [current, previous] = [newSecret(), newSecret()];
    const headers = signedHeaders('msg_2', new Date(), '{}', [current, previous]);
    expect(headers['webhook-signature']!.split(' ')).toHaveLength(2);
    expect(() => new Webhook(current).verify('{}', headers)).not.toThrow();
    expect(() => new Webhook(previous).verify('{}', headers)).not.toThrow();
  });
});

describe('sendWebhook', () => {
  const url = () => `http://127.0.0.1:${port}/hook`;

  it('POSTs the body with the headers and reports a 2xx as delivered', async () => {
    received.length = 0;
    answer = (_req, res) => res.writeHead(200).end('ok');
    const result = await sendWebhook(url(), { 'webhook-id': 'msg_3' }, '{"a":1}', { timeoutMs: 2_000, allowPrivate: true });
    expect(result).toEqual({ ok: true, status: 200, error: null });
    expect(received).toHaveLength(1);
    expect(received[0]!.body).toBe('{"a":1}');
    expect(received[0]!.headers['webhook-id']).toBe('msg_3');
    expect(received[0]!.headers['content-type']).toBe('application/json');
  });

  it('reports a non-2xx answer as a failure with its status', async () => {
    answer = (_req, res) => res.writeHead(500).end('boom');
    expect(await sendWebhook(url(), {}, '{}', { timeoutMs: 2_000, allowPrivate: true })).toEqual({ ok: false, status: 500, error: 'HTTP 500' });
  });

  it('does not follow a redirect: a 3xx is a failure and its Location is never requested', async () => {
    received.length = 0;
    answer = (_req, res) => res.writeHead(302, { location: `http://127.0.0.1:${port}/elsewhere` }).end();
    const result = await sendWebhook(url(), {}, '{}', { timeoutMs: 2_000, allowPrivate: true });
    expect(result).toMatchObject({ ok: false, status: 302 });
    expect(result.error).toMatch(/redirects are not followed/);
    expect(received).toHaveLength(1);
  });

  it('times out a receiver that does not answer', async () => {
    answer = () => {}; // never answers
    const started = Date.now();
    const result = await sendWebhook(url(), {}, '{}', { timeoutMs: 300, allowPrivate: true });
    expect(result).toEqual({ ok: false, status: null, error: 'timed out after 300 ms' });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('reports a refused connection', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const result = await sendWebhook(`http://127.0.0.1:${closedPort}/`, {}, '{}', { timeoutMs: 2_000, allowPrivate: true });
    expect(result.ok).toBe(false);
    expect(result.error).toMatch(/ECONNREFUSED/);
  });

  it('refuses a private address at delivery, sending nothing', async () => {
    received.length = 0;
    answer = (_req, res) => res.writeHead(204).end();
    const result = await sendWebhook(url(), {}, '{}', { timeoutMs: 2_000, allowPrivate: false });
    expect(result).toMatchObject({ ok: false, status: null });
    expect(result.error).toMatch(/PRIVATE_ADDRESS.*loopback/);
    expect(received).toHaveLength(0);
  });

  it('connects to the address it checked: a name that re-resolves to a private address (DNS rebinding) gets nowhere', async () => {
    received.length = 0;
    let calls = 0;
    // Public for the first look, loopback (where the receiver listens) for any later one.
    const rebinding: Resolver = async () => [{ address: calls++ === 0 ? '93.184.216.34' : '127.0.0.1', family: 4 }];
    const result = await sendWebhook(`http://rebind.example.com:${port}/hook`, {}, '{}', { timeoutMs: 2_000, allowPrivate: false, resolve: rebinding });
    expect(result.ok).toBe(false);
    expect(result.error).toMatch(/PRIVATE_ADDRESS/);
    expect(received).toHaveLength(0);
  });

  it('sends to the resolved address with the name in the Host header', async () => {
    received.length = 0;
    const toLoopback: Resolver = async () => [{ address: '127.0.0.1', family: 4 }];
    const result = await sendWebhook(`http://receiver.test:${port}/hook`, {}, '{}', { timeoutMs: 2_000, allowPrivate: true, resolve: toLoopback });
    expect(result.ok).toBe(true);
    expect(received[0]!.headers.host).toBe(`receiver.test:${port}`);
  });
});
