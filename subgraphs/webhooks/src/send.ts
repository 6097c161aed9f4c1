import { randomBytes } from 'node:crypto';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Webhook } from 'standardwebhooks';
import { checkedAddresses, checkedLookup, hostOf, type Resolver } from './ssrf.ts';

/** A new Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes (the spec asks for 24 to 64). */
export const newSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

/**
 * The Standard Webhooks headers of one attempt: `webhook-id` (the delivery's id, the same on
 * every retry, so the receiver can drop a repeat), `webhook-timestamp` (this attempt, in
 * seconds) and `webhook-signature`, one `v1,<base64>` per secret, space-separated (during a
 * rotation the previous secret signs too; a receiver accepts any one of them).
 */
export function signedHeaders(msgId: string, timestamp: Date, body: string, secrets: readonly string[]): Record<string, string> {
  return {
    'webhook-id': msgId,
    'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
    'webhook-signature': secrets.map((secret) => new Webhook(secret).sign(msgId, timestamp, body)).join(' '),
  };
}

/** How an attempt went: the status when the receiver answered, and the error when it failed. */
export interface AttemptResult {
  ok: boolean;
  /** The HTTP status, when there was an answer. */
  status: number | null;
  /** Why it failed (a status, a timeout, a refused connection or address), null on success. */
  error: string | null;
}

export interface SendOptions {
  timeoutMs: number;
  allowPrivate: boolean;
  resolve?: Resolver;
}

/**
 * POST one signed webhook. 2xx is a success; anything else is a failure: another status (a 3xx
 * too: redirects are not followed, a redirect to an internal address would bypass the check), a
 * timeout of the whole attempt (`timeoutMs`, DNS included), a refused connection, or an address
 * the SSRF check refuses. The connection goes to the address the check resolved and accepted
 * ({@link checkedLookup}), so a DNS answer that changes after the check is never used. Never throws.
 */
export async function sendWebhook(url: string, headers: Record<string, string>, body: string, options: SendOptions): Promise<AttemptResult> {
  const target = new URL(url);
  const signal = AbortSignal.timeout(options.timeoutMs);
  const check = { allowPrivate: options.allowPrivate, ...(options.resolve ? { resolve: options.resolve } : {}) };
  try {
    // An IP literal is connected to without any lookup: check it here.
    await checkedAddresses(hostOf(target), check);
    const request = target.protocol === 'https:' ? httpsRequest : httpRequest;
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(target, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'user-agent': 'Tributary-Webhooks/1', ...headers },
        lookup: checkedLookup(check) as never,
        signal,
        // One connection per attempt: a pooled socket would skip the address check.
        agent: false,
      });
      req.once('response', resolve);
      req.once('error', reject);
      req.end(body);
    });
    // Read (and drop) the answer, still under the timeout, so the socket is released.
    await new Promise<void>((resolve, reject) => {
      response.on('data', () => {});
      response.once('end', resolve);
      response.once('error', reject);
      response.once('close', () => (response.complete ? resolve() : reject(new Error('the connection closed before the answer ended'))));
    });
    const status = response.statusCode ?? 0;
    if (status >= 200 && status < 300) return { ok: true, status, error: null };
    return { ok: false, status, error: status >= 300 && status < 400 ? `HTTP ${status} (redirects are not followed)` : `HTTP ${status}` };
  } catch (error) {
    const e = error as { code?: string; message?: string; name?: string };
    const reason = signal.aborted ? `timed out after ${options.timeoutMs} ms` : `${e.code ? `${e.code}: ` : ''}${e.message ?? String(error)}`;
    return { ok: false, status: null, error: reason };
  }
}
