import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { GraphQLError } from 'graphql';

/** Who is calling: the user and the tenant whose data they may see. */
export interface Identity {
  tenantId: string;
  userId: string | null;
  /**
   * The `Idempotency-Key` the caller sent with a mutation (IETF httpapi draft), signed with the
   * identity so nobody can replay or forge another user's key scope. Absent on queries.
   */
  idempotencyKey?: string;
}

/** Headers the gateway sets on every subgraph request. */
export const IdentityHeaders = {
  tenant: 'x-tributary-tenant',
  user: 'x-tributary-user',
  timestamp: 'x-tributary-timestamp',
  signature: 'x-tributary-signature',
  idempotencyKey: 'x-tributary-idempotency-key',
} as const;

/** The draft's key: 1..255 printable ASCII characters (space to tilde). */
const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,255}$/;

/** Whether `value` is an `Idempotency-Key` we take: a string of 1..255 printable ASCII characters. */
export function isIdempotencyKey(value: unknown): value is string {
  return typeof value === 'string' && IDEMPOTENCY_KEY.test(value);
}

/** How far a signature's timestamp may be from now. */
export const SIGNATURE_MAX_AGE_MS = 60_000;

function mac(secret: string, tenantId: string, userId: string, timestamp: string, idempotencyKey: string | undefined): Buffer {
  // Length-prefixed fields: no two different identities can produce the same signed string. The
  // key, when there is one, is a fourth field (it is never empty, so "no key" stays distinct).
  const fields = idempotencyKey === undefined ? [tenantId, userId, timestamp] : [tenantId, userId, timestamp, idempotencyKey];
  const message = fields.map((v) => `${v.length}:${v}`).join('|');
  return createHmac('sha256', secret).update(message).digest();
}

/** The identity headers (with its idempotency key, if any) for a subgraph request, signed with the internal secret. */
export function signIdentity(secret: string, identity: Identity, now = Date.now()): Record<string, string> {
  const timestamp = String(now);
  const user = identity.userId ?? '';
  const key = identity.idempotencyKey;
  return {
    [IdentityHeaders.tenant]: identity.tenantId,
    [IdentityHeaders.user]: user,
    [IdentityHeaders.timestamp]: timestamp,
    ...(key !== undefined ? { [IdentityHeaders.idempotencyKey]: key } : {}),
    [IdentityHeaders.signature]: mac(secret, identity.tenantId, user, timestamp, key).toString('base64url'),
  };
}

export function unauthenticated(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'UNAUTHENTICATED', http: { status: 401 } } });
}

/**
 * The caller's identity from the gateway's signed headers. A subgraph trusts nobody else: a
 * missing, forged or stale signature is UNAUTHENTICATED, so calling a subgraph directly with a
 * made-up tenant gets nothing.
 */
export function verifyIdentity(secret: string, headers: IncomingHttpHeaders, now = Date.now()): Identity {
  const get = (name: string) => {
    const value = headers[name];
    return typeof value === 'string' ? value : undefined;
  };
  const tenantId = get(IdentityHeaders.tenant);
  const userId = get(IdentityHeaders.user) ?? '';
  const timestamp = get(IdentityHeaders.timestamp);
  const signature = get(IdentityHeaders.signature);
  const idempotencyKey = get(IdentityHeaders.idempotencyKey);
  if (!tenantId || !timestamp || !signature) throw unauthenticated('missing gateway identity');
  const at = Number(timestamp);
  if (!/^\d{1,15}$/.test(timestamp) || Math.abs(now - at) > SIGNATURE_MAX_AGE_MS) throw unauthenticated('stale gateway identity');
  const expected = mac(secret, tenantId, userId, timestamp, idempotencyKey);
  const given = Buffer.from(signature, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw unauthenticated('invalid gateway identity');
  return { tenantId, userId: userId || null, ...(idempotencyKey !== undefined ? { idempotencyKey } : {}) };
}
