import { ConfigError, createLogger, loadConfig } from '@tributary/core';
import { subgraphConfigSchema } from '@tributary/core/service';
import { describe, expect, it } from 'vitest';
import { bearerToken, createAuthenticator, signToken } from '../src/auth.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadGatewayConfig, subgraphUrlOverrides, supergraphSubgraphNames } from '../src/config.ts';
import { buildSchema } from 'graphql';
import { defaultSupergraphPath, startGateway } from '../src/gateway.ts';
import { unknownMutationFields } from '../src/upload-limit.ts';

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

  it('runs plans with our executor unless GATEWAY_EXECUTOR=apollo, and names the choices otherwise', () => {
    const base = { INTERNAL_SIGNING_SECRET: secret, AUTH_JWT_SECRET: secret };
    expect(loadGatewayConfig(base).GATEWAY_EXECUTOR).toBe('tributary');
    expect(loadGatewayConfig({ ...base, GATEWAY_EXECUTOR: 'apollo' }).GATEWAY_EXECUTOR).toBe('apollo');
    const [problem] = issues(() => loadGatewayConfig({ ...base, GATEWAY_EXECUTOR: 'graphql-js' }));
    expect(problem).toMatch(/^GATEWAY_EXECUTOR: .*tributary.*apollo/);
  });

  it('makes subgraphs require the internal signing secret', () => {
    expect(issues(() => loadConfig(subgraphConfigSchema, {}))[0]).toMatch(/^INTERNAL_SIGNING_SECRET/);
  });
});

describe('subgraph URLs', () => {
  const base = { INTERNAL_SIGNING_SECRET: secret, AUTH_JWT_SECRET: secret };
  const names = ['documents', 'jobs', 'analysis', 'insights', 'reviews'];

  it('overrides any subgraph by name with SUBGRAPH_URLS, beside DOCUMENTS_URL and the other three', () => {
    const config = loadGatewayConfig({ ...base, SUBGRAPH_URLS: ' reviews=https://reviews.internal/graphql , analysis=http://analysis:4003/graphql,', JOBS_URL: 'http://jobs:4002/graphql' });
    expect({ ...subgraphUrlOverrides(config, names) }).toEqual({
      reviews: 'https://reviews.internal/graphql',
      analysis: 'http://analysis:4003/graphql',
      jobs: 'http://jobs:4002/graphql',
    });
    expect({ ...subgraphUrlOverrides(loadGatewayConfig(base)) }).toEqual({});
  });

  it('keeps a URL with = in its query string whole', () => {
    const config = loadGatewayConfig({ ...base, SUBGRAPH_URLS: 'reviews=http://r/graphql?a=b' });
    expect(subgraphUrlOverrides(config).reviews).toBe('http://r/graphql?a=b');
  });

  it('reports each malformed SUBGRAPH_URLS entry with the other problems', () => {
    expect(issues(() => loadGatewayConfig({ INTERNAL_SIGNING_SECRET: secret, SUBGRAPH_URLS: 'reviews,=http://x/graphql,a=ftp://x,b=not a url,c=http://c/graphql,c=http://c2/graphql' }))).toEqual([
      'AUTH_JWT_SECRET: no authentication configured: set AUTH_JWT_SECRET (HS256), AUTH_JWKS_URL or AUTH_PUBLIC_KEY; `pnpm dev` generates a development secret',
      'SUBGRAPH_URLS: "reviews": must be name=url',
      'SUBGRAPH_URLS: "=http://x/graphql": names no subgraph (empty name)',
      'SUBGRAPH_URLS: "a=ftp://x": must be an http or https URL',
      'SUBGRAPH_URLS: "b=not a url": must be an http or https URL',
      'SUBGRAPH_URLS: "c=http://c2/graphql": names a subgraph given before',
    ]);
  });

  it('refuses a subgraph named both in SUBGRAPH_URLS and in its own setting', () => {
    expect(issues(() => loadGatewayConfig({ ...base, SUBGRAPH_URLS: 'documents=http://a/graphql', DOCUMENTS_URL: 'http://b/graphql' }))).toEqual([
      'DOCUMENTS_URL: documents is also in SUBGRAPH_URLS: set its URL in one of them',
    ]);
  });

  it('refuses at start an override naming no subgraph of the supergraph', () => {
    const config = loadGatewayConfig({ ...base, SUBGRAPH_URLS: 'reviews=http://r/graphql,revues=http://r/graphql', INSIGHTS_URL: 'http://i/graphql' });
    expect(issues(() => subgraphUrlOverrides(config, ['documents', 'reviews']))).toEqual([
      'SUBGRAPH_URLS: the supergraph has no subgraph named "revues" (it has documents, reviews)',
      'INSIGHTS_URL: the supergraph has no subgraph named "insights" (it has documents, reviews)',
    ]);
  });

  it("reads the subgraphs' names from a supergraph", () => {
    expect(supergraphSubgraphNames(readFileSync(defaultSupergraphPath, 'utf8')).sort()).toEqual(['analysis', 'documents', 'insights', 'jobs', 'webhooks']);
    expect(supergraphSubgraphNames('type Query { a: Int }')).toEqual([]);
  });

  it('gives a subgraph named like an Object property no URL of its own', () => {
    expect(subgraphUrlOverrides(loadGatewayConfig(base), ['constructor']).constructor).toBeUndefined();
  });
});

describe('the fields the upload rate limit counts', () => {
  const base = { INTERNAL_SIGNING_SECRET: secret, AUTH_JWT_SECRET: secret };

  it('are uploadDocument unless UPLOAD_RATE_LIMIT_FIELDS names others, and must be field names', () => {
    expect(loadGatewayConfig(base).UPLOAD_RATE_LIMIT_FIELDS).toEqual(['uploadDocument']);
    expect(loadGatewayConfig({ ...base, UPLOAD_RATE_LIMIT_FIELDS: ' uploadDocument, uploadInvoice ,' }).UPLOAD_RATE_LIMIT_FIELDS).toEqual(['uploadDocument', 'uploadInvoice']);
    expect(issues(() => loadGatewayConfig({ ...base, UPLOAD_RATE_LIMIT_FIELDS: 'Mutation.uploadDocument' }))).toEqual(['UPLOAD_RATE_LIMIT_FIELDS.0: must be GraphQL field names, comma-separated']);
    expect(issues(() => loadGatewayConfig({ ...base, UPLOAD_RATE_LIMIT_FIELDS: ' , ' }))).toEqual(['UPLOAD_RATE_LIMIT_FIELDS: must name at least one mutation field']);
  });

  it('say whether they were set by hand, as GATEWAY_UPLOADS_SUBGRAPH does: only then is a name the supergraph lacks refused', () => {
    expect(loadGatewayConfig(base).explicit).toEqual({ GATEWAY_UPLOADS_SUBGRAPH: false, UPLOAD_RATE_LIMIT_FIELDS: false });
    expect(loadGatewayConfig({ ...base, UPLOAD_RATE_LIMIT_FIELDS: 'uploadDocument', GATEWAY_UPLOADS_SUBGRAPH: 'documents' }).explicit).toEqual({ GATEWAY_UPLOADS_SUBGRAPH: true, UPLOAD_RATE_LIMIT_FIELDS: true });
    expect(loadGatewayConfig({ ...base, UPLOAD_RATE_LIMIT_FIELDS: '' }).explicit.UPLOAD_RATE_LIMIT_FIELDS).toBe(false);
  });

  it('are checked against the API schema: a name set by hand that is no mutation field stops the gateway at start', async () => {
    const schema = buildSchema('type Query { a: Int } type Mutation { uploadDocument: Int }');
    expect(unknownMutationFields(schema, ['uploadDocument', 'uploadInvoice'])).toEqual(['uploadInvoice']);
    expect(unknownMutationFields(buildSchema('type Query { a: Int }'), ['uploadDocument'])).toEqual(['uploadDocument']);
    const started = startGateway({ env: { ...base, UPLOAD_RATE_LIMIT_FIELDS: 'uploadDocument,uploadInvoice', PORT: '0' }, logger: createLogger({ service: 'gateway', level: 'silent' }) });
    await expect(started).rejects.toBeInstanceOf(ConfigError);
    await expect(started).rejects.toMatchObject({ issues: [{ key: 'UPLOAD_RATE_LIMIT_FIELDS', message: 'the API schema has no mutation field "uploadInvoice"' }] });
  });
});

describe('the supergraph path', () => {
  const base = { INTERNAL_SIGNING_SECRET: secret, AUTH_JWT_SECRET: secret };

  it('resolves a relative SUPERGRAPH_PATH against the directory pnpm was started in (INIT_CWD)', () => {
    expect(loadGatewayConfig({ ...base, SUPERGRAPH_PATH: 'schema/mine.graphql', INIT_CWD: '/home/me/project' }).SUPERGRAPH_PATH).toBe('/home/me/project/schema/mine.graphql');
    expect(loadGatewayConfig({ ...base, SUPERGRAPH_PATH: '../mine.graphql', INIT_CWD: '/home/me/project' }).SUPERGRAPH_PATH).toBe('/home/me/mine.graphql');
  });

  it('resolves it against the working directory without INIT_CWD, and keeps an absolute one', () => {
    expect(loadGatewayConfig({ ...base, SUPERGRAPH_PATH: 'mine.graphql' }).SUPERGRAPH_PATH).toBe(join(process.cwd(), 'mine.graphql'));
    expect(loadGatewayConfig({ ...base, SUPERGRAPH_PATH: '/srv/supergraph.graphql', INIT_CWD: '/home/me' }).SUPERGRAPH_PATH).toBe('/srv/supergraph.graphql');
    expect(loadGatewayConfig(base).SUPERGRAPH_PATH).toBeUndefined();
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
