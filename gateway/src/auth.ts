import { createRemoteJWKSet, importSPKI, jwtVerify, SignJWT, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { randomBytes } from 'node:crypto';
import { unauthenticated, type Identity } from '@tributary/core';
import type { GatewayConfig } from './config.ts';

/** A verified caller: identity plus when the token stops being valid (epoch ms). */
export interface Principal extends Identity {
  expiresAt: number | null;
}

export interface Authenticator {
  /** Verify a bearer token. @throws GraphQLError UNAUTHENTICATED */
  verify(token: string | null | undefined): Promise<Principal>;
}

/** The token of an `Authorization: Bearer <token>` value (case-insensitive scheme). */
export function bearerToken(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  const match = /^Bearer\s+(\S+)$/i.exec(value.trim());
  return match ? match[1]! : null;
}

/**
 * JWT verification with jose: HS256 with `AUTH_JWT_SECRET`, or an asymmetric key from
 * `AUTH_JWKS_URL` (keys fetched and cached) or `AUTH_PUBLIC_KEY` (PEM). Issuer and audience are
 * checked when configured. `sub` is the user; the tenant claim (`tenant` by default) is required:
 * a token without a tenant could see nobody's data, so it is refused outright.
 */
export async function createAuthenticator(config: GatewayConfig): Promise<Authenticator> {
  let key: Uint8Array | Awaited<ReturnType<typeof importSPKI>> | JWTVerifyGetKey;
  let algorithms: string[];
  if (config.AUTH_JWT_SECRET) {
    key = new TextEncoder().encode(config.AUTH_JWT_SECRET);
    algorithms = ['HS256'];
  } else if (config.AUTH_JWKS_URL) {
    key = createRemoteJWKSet(new URL(config.AUTH_JWKS_URL));
    algorithms = config.AUTH_ALGORITHMS;
  } else if (config.AUTH_PUBLIC_KEY) {
    key = await importSPKI(config.AUTH_PUBLIC_KEY, config.AUTH_ALGORITHMS[0]!);
    algorithms = config.AUTH_ALGORITHMS;
  } else {
    throw new Error('no authentication configured: set AUTH_JWT_SECRET, AUTH_JWKS_URL or AUTH_PUBLIC_KEY');
  }
  const options = {
    algorithms,
    ...(config.AUTH_ISSUER ? { issuer: config.AUTH_ISSUER } : {}),
    ...(config.AUTH_AUDIENCE ? { audience: config.AUTH_AUDIENCE } : {}),
    clockTolerance: 5,
  };
  return {
    async verify(token) {
      if (!token) throw unauthenticated('missing bearer token');
      let payload: JWTPayload;
      try {
        // jose's overloads differ for a key and a key resolver; both accept the same options.
        payload = typeof key === 'function' ? (await jwtVerify(token, key, options)).payload : (await jwtVerify(token, key, options)).payload;
      } catch (error) {
        const code = (error as { code?: string }).code;
        throw unauthenticated(code === 'ERR_JWT_EXPIRED' ? 'token expired' : 'invalid token');
      }
      const tenant = payload[config.AUTH_TENANT_CLAIM];
      if (typeof tenant !== 'string' || tenant.length === 0 || tenant.length > 128) throw unauthenticated(`token has no \`${config.AUTH_TENANT_CLAIM}\` claim`);
      if (typeof payload.sub !== 'string' || payload.sub.length === 0) throw unauthenticated('token has no `sub` claim');
      return { tenantId: tenant, userId: payload.sub, expiresAt: typeof payload.exp === 'number' ? payload.exp * 1000 : null };
    },
  };
}

/** A random HS256 secret for development setups that have none. */
export function generateSecret(): string {
  return randomBytes(48).toString('base64url');
}

/** Sign an HS256 token (development tokens and tests). */
export function signToken(secret: string, claims: { sub: string; tenant: string; issuer?: string; audience?: string; expiresIn?: string | number }): Promise<string> {
  let jwt = new SignJWT({ tenant: claims.tenant }).setProtectedHeader({ alg: 'HS256' }).setSubject(claims.sub).setIssuedAt().setExpirationTime(claims.expiresIn ?? '12h');
  if (claims.issuer) jwt = jwt.setIssuer(claims.issuer);
  if (claims.audience) jwt = jwt.setAudience(claims.audience);
  return jwt.sign(new TextEncoder().encode(secret));
}
