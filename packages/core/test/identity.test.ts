import { describe, expect, it } from 'vitest';
import { IdentityHeaders, isIdempotencyKey, signIdentity, verifyIdentity } from '../src/identity.ts';

const secret = 'x'.repeat(48);
const identity = { tenantId: 'tenant-a', userId: 'user-1' };

describe('signed identity with an idempotency key', () => {
  it('carries the key, signed, and verifies it back', () => {
    const headers = signIdentity(secret, { ...identity, idempotencyKey: 'retry-me 1' });
    expect(headers[IdentityHeaders.idempotencyKey]).toBe('retry-me 1');
    expect(verifyIdentity(secret, headers)).toEqual({ ...identity, idempotencyKey: 'retry-me 1' });
  });

  it('refuses a key added, removed or changed after signing', () => {
    const plain = signIdentity(secret, identity);
    const keyed = signIdentity(secret, { ...identity, idempotencyKey: 'k1' });
    expect(() => verifyIdentity(secret, { ...plain, [IdentityHeaders.idempotencyKey]: 'k1' })).toThrow('invalid gateway identity');
    const { [IdentityHeaders.idempotencyKey]: _, ...stripped } = keyed;
    expect(() => verifyIdentity(secret, stripped)).toThrow('invalid gateway identity');
    expect(() => verifyIdentity(secret, { ...keyed, [IdentityHeaders.idempotencyKey]: 'k2' })).toThrow('invalid gateway identity');
  });

  it('verifies an identity without a key as before', () => {
    expect(verifyIdentity(secret, signIdentity(secret, identity))).toEqual(identity);
  });

  it('takes 1 to 255 printable ASCII characters as a key', () => {
    expect(isIdempotencyKey('a')).toBe(true);
    expect(isIdempotencyKey('8e03978e-40d5-43e8-bc93-6894a57f9324')).toBe(true);
    expect(isIdempotencyKey('~'.repeat(255))).toBe(true);
    expect(isIdempotencyKey('')).toBe(false);
    expect(isIdempotencyKey('a'.repeat(256))).toBe(false);
    expect(isIdempotencyKey('tab\there')).toBe(false);
    expect(isIdempotencyKey('é')).toBe(false);
    expect(isIdempotencyKey(undefined)).toBe(false);
  });
});
