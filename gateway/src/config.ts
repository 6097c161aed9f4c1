import { baseConfigSchema, commaList, ConfigError, loadConfig, urlWithProtocol, type ConfigIssue } from '@tributary/core/config';
import { availableParallelism } from 'node:os';
import { z } from 'zod';

const subgraphUrl = urlWithProtocol('http:', 'https:');

export const configSchema = baseConfigSchema.extend({
  PORT: z.coerce.number().int().min(0).max(65535).default(4000),
  /** Where each subgraph listens; default: the URLs in the supergraph (localhost:4001-4004). */
  DOCUMENTS_URL: subgraphUrl.optional(),
  JOBS_URL: subgraphUrl.optional(),
  ANALYSIS_URL: subgraphUrl.optional(),
  INSIGHTS_URL: subgraphUrl.optional(),
  /** The composed supergraph; default: schema/supergraph.graphql of this repository. */
  SUPERGRAPH_PATH: z.string().min(1).optional(),
  /** Largest request body, bytes. Default 2 MiB (uploads are up to 1 MiB of content). */
  GATEWAY_MAX_BODY_BYTES: z.coerce.number().int().positive().default(2 * 1024 * 1024),
  /** HS256 secret for bearer tokens (or use AUTH_JWKS_URL / AUTH_PUBLIC_KEY). */
  AUTH_JWT_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  /** A JWKS endpoint for asymmetric tokens (RS256, ES256, …). */
  AUTH_JWKS_URL: urlWithProtocol('https:', 'http:').optional(),
  /** A PEM public key (SPKI) for asymmetric tokens. */
  AUTH_PUBLIC_KEY: z.string().includes('BEGIN PUBLIC KEY', { message: 'must be a PEM public key' }).optional(),
  /** Accepted algorithms with AUTH_JWKS_URL / AUTH_PUBLIC_KEY. */
  AUTH_ALGORITHMS: commaList('RS256,ES256'),
  AUTH_ISSUER: z.string().min(1).optional(),
  AUTH_AUDIENCE: z.string().min(1).optional(),
  /** The claim naming the caller's tenant. */
  AUTH_TENANT_CLAIM: z.string().min(1).default('tenant'),
  /** Shared with the subgraphs: signs the caller's identity on every subgraph request. */
  INTERNAL_SIGNING_SECRET: z.string().min(32, 'must be at least 32 characters (e.g. `openssl rand -base64 48`)'),
  /** Browser origins allowed to call the API, comma-separated; `*` allows any origin without credentials. */
  CORS_ORIGINS: commaList(),
  QUERY_MAX_DEPTH: z.coerce.number().int().min(1).default(10),
  QUERY_MAX_ALIASES: z.coerce.number().int().min(0).default(15),
  QUERY_MAX_COST: z.coerce.number().int().min(1).default(5000),
  /**
   * Entity types whose query results the gateway caches, comma-separated (e.g. `Job,Document`);
   * empty: no cache. Results are dropped by the events that change them (see the README).
   */
  GATEWAY_CACHE_TYPES: commaList(),
  /** Longest a cached result is kept even if no event drops it, ms. */
  GATEWAY_CACHE_TTL_MS: z.coerce.number().int().min(1).default(300_000),
  /** Most cached results per gateway instance (least recently used go first). */
  GATEWAY_CACHE_MAX_ENTRIES: z.coerce.number().int().min(1).default(10_000),
  /**
   * Gateway processes sharing the port (node:cluster), each a whole gateway; `auto`: one per
   * available CPU. Default 1: no cluster.
   */
  GATEWAY_WORKERS: z
    .string()
    .regex(/^(auto|[1-9][0-9]{0,2})$/, 'must be a number of workers (1-999) or `auto`')
    .default('1')
    .transform((v) => (v === 'auto' ? availableParallelism() : Number(v))),
  /** Uploads per user per minute, per gateway instance. */
  UPLOAD_RATE_LIMIT_PER_MINUTE: z.coerce.number().int().min(1).default(60),
});
export type GatewayConfig = z.infer<typeof configSchema>;

export function subgraphUrlOverrides(config: GatewayConfig): Record<string, string> {
  const overrides: Record<string, string> = {};
  if (config.DOCUMENTS_URL) overrides.documents = config.DOCUMENTS_URL;
  if (config.JOBS_URL) overrides.jobs = config.JOBS_URL;
  if (config.ANALYSIS_URL) overrides.analysis = config.ANALYSIS_URL;
  if (config.INSIGHTS_URL) overrides.insights = config.INSIGHTS_URL;
  return overrides;
}

/** Exactly one way to verify tokens: checked apart from the schema so its issue joins the others. */
function authIssues(env: Record<string, string | undefined>): ConfigIssue[] {
  const methods = ['AUTH_JWT_SECRET', 'AUTH_JWKS_URL', 'AUTH_PUBLIC_KEY'].filter((key) => env[key]);
  if (methods.length === 0) {
    return [{ key: 'AUTH_JWT_SECRET', message: 'no authentication configured: set AUTH_JWT_SECRET (HS256), AUTH_JWKS_URL or AUTH_PUBLIC_KEY; `pnpm dev` generates a development secret' }];
  }
  if (methods.length > 1) return [{ key: 'AUTH_JWT_SECRET', message: 'set only one of AUTH_JWT_SECRET, AUTH_JWKS_URL, AUTH_PUBLIC_KEY' }];
  return [];
}

/**
 * The gateway's configuration, every problem reported at once. There is no unauthenticated
 * mode: a gateway without a way to verify tokens does not start.
 * @throws ConfigError
 */
export function loadGatewayConfig(env: Record<string, string | undefined> = process.env): GatewayConfig {
  const auth = authIssues(env);
  let config: GatewayConfig;
  try {
    config = loadConfig(configSchema, env);
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError([...auth, ...error.issues]);
    throw error;
  }
  if (auth.length > 0) throw new ConfigError(auth);
  return config;
}
