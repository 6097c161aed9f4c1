import { unauthenticated } from '@tributary/core';
import { describe, expect, it } from 'vitest';
import { createAuthenticator, signToken, type Authenticator, type Principal } from '../src/auth.ts';
import { loadGatewayConfig } from '../src/config.ts';
import { cachedAuthenticator } from '../src/token-cache.ts';

/** An authenticator that counts its calls: `good-<user>` tokens pass (valid until `expiresAt`), others are refused. */
function counting(expiresAt: number | null = null): Authenticator & { calls: number } {
  const inner = {
    calls: 0,
    async verify(token: string | null | undefined): Promise<Principal> {
      inner.calls++;
      if (!token?.startsWith('good-')) throw unauthenticated('invalid token');
      return { tenantId: 't1', userId: token.slice(5), expiresAt };
    },
  };
  return inner;
}

describe('cachedAuthenticator', () => {
  it('verifies a token once, then answers from memory until maxAgeMs', async () => {
    const clock = { now: 1_000_000 };
    const inner = counting();
    const auth = cachedAuthenticator(inner, { maxAgeMs: 60_000, now: () => clock.now });
    expect(await auth.verify('good-alice')).toMatchObject({ userId: 'alice' });
    expect(await auth.verify('good-alice')).toMatchObject({ userId: 'alice' });
    expect(inner.calls).toBe(1);
    clock.now += 60_000;
    await auth.verify('good-alice');
    expect(inner.calls).toBe(2);
  });

  it('never trusts a token past its own expiry', async () => {
    const clock = { now: 1_000_000 };
    const inner = counting(1_000_000 + 10_000);
    const auth = cachedAuthenticator(inner, { maxAgeMs: 60_000, now: () => clock.now });
    await auth.verify('good-alice');
    clock.now += 9_999;
    await auth.verify('good-alice');
    expect(inner.calls).toBe(1);
    clock.now += 1;
    await auth.verify('good-alice');
    expect(inner.calls).toBe(2);
  });

  it('remembers no refusal and no missing token', async () => {
    const inner = counting();
    const auth = cachedAuthenticator(inner);
    await expect(auth.verify('bad')).rejects.toMatchObject({ extensions: { code: 'UNAUTHENTICATED' } });
    await expect(auth.verify('bad')).rejects.toMatchObject({ extensions: { code: 'UNAUTHENTICATED' } });
    await expect(auth.verify(null)).rejects.toMatchObject({ extensions: { code: 'UNAUTHENTICATED' } });
    expect(inner.calls).toBe(3);
  });

  it('forgets the oldest token when full', async () => {
    const inner = counting();
    const auth = cachedAuthenticator(inner, { maxEntries: 2 });
    await auth.verify('good-a');
    await auth.verify('good-b');
    await auth.verify('good-c');
    expect(inner.calls).toBe(3);
    await auth.verify('good-c');
    await auth.verify('good-b');
    expect(inner.calls).toBe(3);
    await auth.verify('good-a');
    expect(inner.calls).toBe(4);
  });

  it('is what createAuthenticator hands out: an expired JWT is refused, a good one still passes', async () => {
    const secret = 'x'.repeat(32);
    const auth = await createAuthenticator(loadGatewayConfig({ INTERNAL_SIGNING_SECRET: secret, AUTH_JWT_SECRET: secret }));
    const token = await signToken(secret, { sub: 'u1', tenant: 't1' });
    expect(await auth.verify(token)).toMatchObject({ tenantId: 't1', userId: 'u1' });
    expect(await auth.verify(token)).toMatchObject({ tenantId: 't1', userId: 'u1' });
    const expired = await signToken(secret, { sub: 'u1', tenant: 't1', expiresIn: Math.floor(Date.now() / 1000) - 60 });
    await expect(auth.verify(expired)).rejects.toMatchObject({ extensions: { code: 'UNAUTHENTICATED' } });
  });
});
