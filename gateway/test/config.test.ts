import { ConfigError, loadConfig } from '@tributary/core';
import { subgraphConfigSchema } from '@tributary/core/service';
import { describe, expect, it } from 'vitest';
import { bearerToken, createAuthenticator, signToken } from '../src/auth.ts';
import { loadGatewayConfig } from '../src/config.ts';
import { RateLimiter } from '../src/limits.ts';
import { startEmbedded } from '../src/embedded.ts';

const secret = 'x'.repeat(40);

function issues(run: () => unknown): string[] {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error.issues.map((i) => `${i.key}: ${i.message}`);
    throw error;
  }
  return [];
}

describe('gateway configuration', () => {
  it('refuses to start without authentication or an internal signing secret, saying what to set', () => {
    const found = issues(() => loadGatewayConfig({ NODE_ENV: 'production' }));
    expect(found.some((i) => i.startsWith('AUTH_JWT_SECRET: no authentication configured'))).toBe(true);
    expect(found.some((i) => i.startsWith('INTERNAL_SIGNING_SECRET'))).toBe(true);
  });

  it('refuses two authentication methods at once and short secrets', () => {
    expect(issues(() => loadGatewayConfig({ INTERNAL_SIGNING_SECRET: secret, AUTH_JWT_SECRET: secret, AUTH_JWKS_URL: 'https://idp.example.com/jwks' }))).toEqual([
      'AUTH_JWT_SECRET: set only one of AUTH_JWT_SECRET, AUTH_JWKS_URL, AUTH_PUBLIC_KEY',
    ]);
    expect(issues(() => loadGatewayConfig({ INTERNAL_SIGNING_SECRET: 'short', AUTH_JWT_SECRET: 'short' }))).toHaveLength(2);
  });

  it('makes subgraphs require the internal signing secret', () => {
    expect(issues(() => loadConfig(subgraphConfigSchema, {}))[0]).toMatch(/^INTERNAL_SIGNING_SECRET/);
  });

  it('refuses a production embedded start without authentication', async () => {
    await expect(startEmbedded({ env: { NODE_ENV: 'production', TRIBUTARY_DATA_DIR: 'memory://' }, port: 0 })).rejects.toBeInstanceOf(ConfigError);
  });
});

describe('authentication', () => {
  it('reads bearer tokens case-insensitively and nothing else', () => {
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bearer   abc ')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeNull();
    expect(bearerToken(undefined)).toBeNull();
  });

  it('turns a valid token into the caller’s tenant and user', async () => {
    const config = loadGatewayConfig({ INTERNAL_SIGNING_SECRET: secret, AUTH_JWT_SECRET: secret, AUTH_ISSUER: 'idp' });
    const auth = await createAuthenticator(config);
    const principal = await auth.verify(await signToken(secret, { sub: 'u1', tenant: 't1', issuer: 'idp' }));
    expect(principal).toMatchObject({ tenantId: 't1', userId: 'u1' });
    await expect(auth.verify(await signToken(secret, { sub: 'u1', tenant: 't1', issuer: 'other' }))).rejects.toMatchObject({ extensions: { code: 'UNAUTHENTICATED' } });
  });
});

describe('rate limiter', () => {
  it('allows the configured rate and refills over time', () => {
    const limiter = new RateLimiter(60);
    const t0 = 1_000_000;
    for (let i = 0; i < 60; i++) expect(limiter.take('u', 1, t0)).toBe(0);
    expect(limiter.take('u', 1, t0)).toBeGreaterThan(0);
    expect(limiter.take('other', 1, t0)).toBe(0);
    expect(limiter.take('u', 1, t0 + 1_000)).toBe(0);
  });
});
