import { baseConfigSchema, commaList, ConfigError, loadConfig, urlWithProtocol, type ConfigIssue } from '@tributary/core/config';
import { Kind, parse, type ConstDirectiveNode } from 'graphql';
import { availableParallelism } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';

const SUBGRAPH_PROTOCOLS = ['http:', 'https:'];
const subgraphUrl = urlWithProtocol(...SUBGRAPH_PROTOCOLS);

/**
 * `name=url,name2=url2`: the URL of each named subgraph. Entries are trimmed and empty ones
 * dropped; every problem (no `=`, an empty name, a URL that is not http(s), a name given twice)
 * is an issue of its own.
 */
const subgraphUrlList = z
  .string()
  .default('')
  .transform((value, ctx) => {
    const urls: Record<string, string> = Object.create(null) as Record<string, string>;
    for (const entry of value.split(',').map((item) => item.trim()).filter(Boolean)) {
      const eq = entry.indexOf('=');
      const name = eq < 0 ? '' : entry.slice(0, eq).trim();
      const url = eq < 0 ? '' : entry.slice(eq + 1).trim();
      const problem =
        eq < 0
          ? 'must be name=url'
          : !name
            ? 'names no subgraph (empty name)'
            : !(URL.canParse(url) && SUBGRAPH_PROTOCOLS.includes(new URL(url).protocol))
              ? 'must be an http or https URL'
              : name in urls
                ? 'names a subgraph given before'
                : undefined;
      if (problem) ctx.issues.push({ code: 'custom', message: `"${entry}": ${problem}`, input: value });
      else urls[name] = url;
    }
    return urls;
  });

/** Tributary's own subgraphs' URL settings (`DOCUMENTS_URL`, …), kept beside SUBGRAPH_URLS. */
const NAMED_URL_KEYS = { documents: 'DOCUMENTS_URL', jobs: 'JOBS_URL', analysis: 'ANALYSIS_URL', insights: 'INSIGHTS_URL' } as const;

export const configSchema = baseConfigSchema.extend({
  PORT: z.coerce.number().int().min(0).max(65535).default(4000),
  /**
   * Where subgraphs listen, for any subgraph of the supergraph: `name=url,name2=url2` (http or
   * https). Default: the URLs in the supergraph. A name the supergraph does not have is refused
   * at start (see {@link subgraphUrlOverrides}).
   */
  SUBGRAPH_URLS: subgraphUrlList,
  /** Where Tributary's own subgraphs listen (the same as `SUBGRAPH_URLS=documents=…`); default: the supergraph's URLs (localhost:4001-4004). */
  DOCUMENTS_URL: subgraphUrl.optional(),
  JOBS_URL: subgraphUrl.optional(),
  ANALYSIS_URL: subgraphUrl.optional(),
  INSIGHTS_URL: subgraphUrl.optional(),
  /**
   * The composed supergraph; default: schema/supergraph.graphql of this repository. A relative
   * path is resolved by {@link loadGatewayConfig} against the directory the command was started
   * in (pnpm's INIT_CWD, else the working directory): the value is always absolute.
   */
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
   * Who runs Apollo's query plans: `tributary`, our executor (gateway/src/executor, the same
   * answers, less CPU per request), or `apollo`, Apollo Gateway's own (a way back without a
   * release, should an answer ever differ).
   */
  GATEWAY_EXECUTOR: z.enum(['tributary', 'apollo']).default('tributary'),
  /**
   * Entity types whose query results the gateway caches, comma-separated (e.g. `Order,Customer`);
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
  /**
   * The subgraph that takes files of multipart requests (GraphQL multipart request spec): the
   * gateway streams each to its `POST /uploads` and serves downloads from its `/files/<id>`,
   * both beside its GraphQL URL (the supergraph's, or its override). `none`: multipart requests
   * are refused. Default `documents`; a default the supergraph has no subgraph of turns uploads
   * off, a name set explicitly stops the gateway at start.
   */
  GATEWAY_UPLOADS_SUBGRAPH: z.string().regex(/^[A-Za-z_][A-Za-z0-9_-]*$/, 'must be a subgraph name or `none`').default('documents'),
  /** Most files in one multipart request. Default 10. */
  GATEWAY_MAX_FILES: z.coerce.number().int().min(1).max(1000).default(10),
  /**
   * Largest file the gateway passes on, bytes: a safety net against an endless part; the
   * uploads subgraph's own limit (DOCUMENT_MAX_FILE_BYTES) is the one clients meet. Default 100 MiB.
   */
  GATEWAY_MAX_FILE_BYTES: z.coerce.number().int().positive().default(100 * 1024 * 1024),
  /** Uploads per user in any 60 s (a sliding window): per gateway process, or together across all of them with REDIS_URL. Default 60. */
  UPLOAD_RATE_LIMIT_PER_MINUTE: z.coerce.number().int().min(1).default(60),
  /**
   * The mutation fields UPLOAD_RATE_LIMIT_PER_MINUTE counts, comma-separated root fields of the
   * API schema's mutation type (each occurrence in a request counts, aliases included), so a
   * subgraph's own upload mutation is limited without code in the gateway. Default
   * `uploadDocument`; a name set explicitly that the supergraph has no mutation field of stops
   * the gateway at start.
   */
  UPLOAD_RATE_LIMIT_FIELDS: commaList('uploadDocument').pipe(
    z.array(z.string().regex(/^[_A-Za-z][_0-9A-Za-z]*$/, 'must be GraphQL field names, comma-separated')).min(1, 'must name at least one mutation field'),
  ),
  /**
   * A Redis (`redis://` or `rediss://`) holding the upload rate limit, shared by every gateway
   * process and cluster worker using it (keys `<TRIBUTARY_NAMESPACE>:upload-window:<tenant>:<user>:calls`).
   * Unset: each process counts in its own memory.
   */
  REDIS_URL: urlWithProtocol('redis:', 'rediss:').optional(),
  /**
   * With REDIS_URL, what an upload gets while Redis is unreachable or failing: `allow` lets it
   * through (fail open), `deny` refuses it with SERVICE_UNAVAILABLE (fail closed). Either way it
   * is logged and counted in tributary_gateway_rate_limit_store_errors_total. Default `allow`.
   */
  RATE_LIMIT_ON_REDIS_ERROR: z.enum(['allow', 'deny']).default('allow'),
  /**
   * Most messages one subscription may have due and not yet taken by its client's connection
   * (events waiting to be resolved plus results waiting to be sent). A subscriber further behind
   * is closed with 4008 "Subscriber too slow" (see docs/subscriptions.md) and resumes from its
   * last cursor; with the event log, a burst of events its client keeps up with is read again
   * from the log instead. Default 1,000.
   */
  SUBSCRIPTION_MAX_QUEUED: z.coerce.number().int().min(1).default(1_000),
});
/** The settings, validated: {@link loadGatewayConfig}'s result, and all the gateway reads of its environment. */
export type GatewayConfig = z.infer<typeof configSchema> & {
  /**
   * Whether the environment set these itself rather than leave them to their defaults: a name set
   * by hand that the supergraph lacks stops the gateway at start, where a default that does not
   * fit only turns the feature off (uploads) or is not checked (the fields the upload rate limit counts).
   */
  explicit: { readonly GATEWAY_UPLOADS_SUBGRAPH: boolean; readonly UPLOAD_RATE_LIMIT_FIELDS: boolean };
};

/**
 * Subgraph URLs that replace the supergraph's, by subgraph name: SUBGRAPH_URLS and the
 * `<NAME>_URL` settings of Tributary's own subgraphs. With `subgraphNames` (the supergraph's,
 * see {@link supergraphSubgraphNames}), an override naming no subgraph of the supergraph is a
 * configuration error rather than a setting that silently does nothing.
 * @throws ConfigError when `subgraphNames` is given and an override names none of them
 */
export function subgraphUrlOverrides(config: GatewayConfig, subgraphNames?: Iterable<string>): Record<string, string> {
  // No prototype: a subgraph named `constructor` must not find Object's.
  const overrides: Record<string, string> = Object.assign(Object.create(null) as Record<string, string>, config.SUBGRAPH_URLS);
  const source: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const name of Object.keys(overrides)) source[name] = 'SUBGRAPH_URLS';
  for (const [name, key] of Object.entries(NAMED_URL_KEYS)) {
    const url = config[key];
    if (!url) continue;
    overrides[name] = url;
    source[name] = key;
  }
  if (subgraphNames !== undefined) {
    const known = new Set(subgraphNames);
    const unknown = Object.keys(overrides).filter((name) => !known.has(name));
    if (unknown.length > 0) {
      const has = known.size > 0 ? `it has ${[...known].join(', ')}` : 'it has none';
      throw new ConfigError(unknown.map((name) => ({ key: source[name] ?? 'SUBGRAPH_URLS', message: `the supergraph has no subgraph named "${name}" (${has})` })));
    }
  }
  return overrides;
}

/**
 * The names of the subgraphs a supergraph composes (its `join__Graph` values' `@join__graph(name:)`),
 * in the supergraph's order: what {@link subgraphUrlOverrides} checks overrides against.
 */
export function supergraphSubgraphNames(supergraphSdl: string): string[] {
  for (const definition of parse(supergraphSdl, { noLocation: true }).definitions) {
    if (definition.kind !== Kind.ENUM_TYPE_DEFINITION || definition.name.value !== 'join__Graph') continue;
    return (definition.values ?? []).map((value) => {
      const graph: ConstDirectiveNode | undefined = value.directives?.find((d) => d.name.value === 'join__graph');
      const name = graph?.arguments?.find((a) => a.name.value === 'name')?.value;
      return name?.kind === Kind.STRING ? name.value : value.name.value.toLowerCase();
    });
  }
  return [];
}

/** The URL of each subgraph a supergraph composes (`@join__graph(name:, url:)`), by name. */
export function supergraphSubgraphUrls(supergraphSdl: string): Record<string, string> {
  const urls: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const definition of parse(supergraphSdl, { noLocation: true }).definitions) {
    if (definition.kind !== Kind.ENUM_TYPE_DEFINITION || definition.name.value !== 'join__Graph') continue;
    for (const value of definition.values ?? []) {
      const graph = value.directives?.find((d) => d.name.value === 'join__graph');
      const name = graph?.arguments?.find((a) => a.name.value === 'name')?.value;
      const url = graph?.arguments?.find((a) => a.name.value === 'url')?.value;
      if (url?.kind === Kind.STRING) urls[name?.kind === Kind.STRING ? name.value : value.name.value.toLowerCase()] = url.value;
    }
  }
  return urls;
}

/** Settings that say the same thing twice: a subgraph in SUBGRAPH_URLS and in its own `<NAME>_URL`. */
function duplicateUrlIssues(env: Record<string, string | undefined>): ConfigIssue[] {
  const listed = subgraphUrlList.safeParse(env.SUBGRAPH_URLS ?? '');
  if (!listed.success) return []; // its own issues say what is wrong with it
  return Object.entries(NAMED_URL_KEYS)
    .filter(([name, key]) => env[key] && name in listed.data)
    .map(([name, key]) => ({ key, message: `${name} is also in SUBGRAPH_URLS: set its URL in one of them` }));
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
  const extra = [...authIssues(env), ...duplicateUrlIssues(env)];
  let config: GatewayConfig;
  try {
    config = { ...loadConfig(configSchema, env), explicit: { GATEWAY_UPLOADS_SUBGRAPH: Boolean(env.GATEWAY_UPLOADS_SUBGRAPH), UPLOAD_RATE_LIMIT_FIELDS: Boolean(env.UPLOAD_RATE_LIMIT_FIELDS) } };
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError([...extra, ...error.issues]);
    throw error;
  }
  if (extra.length > 0) throw new ConfigError(extra);
  if (config.SUPERGRAPH_PATH && !isAbsolute(config.SUPERGRAPH_PATH)) {
    // `pnpm --filter @tributary/gateway start` runs in gateway/; INIT_CWD is where the user typed it.
    config.SUPERGRAPH_PATH = resolve(env.INIT_CWD || process.cwd(), config.SUPERGRAPH_PATH);
  }
  return config;
}
