import { z } from 'zod';
import { CoreErrorCode, TributaryError } from './errors.ts';

const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/** A URL with one of the given protocols. */
export const urlWithProtocol = (...protocols: string[]) =>
  z.string().refine((value) => URL.canParse(value) && protocols.includes(new URL(value).protocol), {
    message: `must be a ${protocols.map((p) => p.replace(/:$/, '')).join(' or ')} URL`,
  });

/** The URL schemes `EVENT_BUS_URL` accepts, each naming its broker. */
export const EVENT_BUS_PROTOCOLS = ['amqp:', 'amqps:', 'redis:', 'rediss:', 'nats:', 'tls:'] as const;
export type EventBusKind = 'rabbitmq' | 'redis' | 'nats';

/** Which broker a URL names (its scheme is one of {@link EVENT_BUS_PROTOCOLS}). */
export function eventBusKind(url: string): EventBusKind {
  const protocol = new URL(url).protocol;
  if (protocol === 'amqp:' || protocol === 'amqps:') return 'rabbitmq';
  if (protocol === 'redis:' || protocol === 'rediss:') return 'redis';
  if (protocol === 'nats:' || protocol === 'tls:') return 'nats';
  throw new ConfigError([{ key: 'EVENT_BUS_URL', message: `must be a ${EVENT_BUS_PROTOCOLS.map((p) => p.replace(/:$/, '')).join(', ')} URL` }]);
}

/**
 * The event broker's URL: `EVENT_BUS_URL`, else `AMQP_URL`; undefined → the in-memory bus.
 * @throws ConfigError when both are set to different brokers (which one was meant is not ours to guess).
 */
export function eventBusUrl(config: { EVENT_BUS_URL?: string | undefined; AMQP_URL?: string | undefined }): string | undefined {
  if (config.EVENT_BUS_URL && config.AMQP_URL && config.EVENT_BUS_URL !== config.AMQP_URL) {
    throw new ConfigError([{ key: 'EVENT_BUS_URL', message: 'EVENT_BUS_URL and AMQP_URL are both set, to different URLs: set EVENT_BUS_URL only' }]);
  }
  return config.EVENT_BUS_URL ?? config.AMQP_URL;
}

/** A comma-separated list setting (`a, b,c`): trimmed, empty items dropped. */
export const commaList = (defaultValue = '') =>
  z
    .string()
    .default(defaultValue)
    .transform((s) => s.split(',').map((item) => item.trim()).filter(Boolean));

const DURATION_UNITS_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12 };

/** What the event log keeps: entries older than `maxAgeMs` or beyond `maxBytes` (oldest first) go. */
export interface EventLogRetention {
  maxAgeMs?: number;
  maxBytes?: number;
}

/**
 * `EVENT_LOG_RETENTION`: an age (`30s`, `90m`, `12h`, `7d`), a size (`500MB`, `10GB`, `1TB`;
 * powers of 1000), or both separated by a comma (`7d,10GB`); an entry goes when it is past
 * either. Returns the problem as a sentence, for the config error.
 */
export function parseLogRetention(value: string): EventLogRetention | string {
  const retention: EventLogRetention = {};
  for (const part of value.split(',').map((p) => p.trim().toLowerCase())) {
    const match = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/.exec(part);
    const amount = match ? Number(match[1]) : Number.NaN;
    const unit = match?.[2] ?? '';
    if (match && unit in DURATION_UNITS_MS && retention.maxAgeMs === undefined) retention.maxAgeMs = Math.round(amount * DURATION_UNITS_MS[unit]!);
    else if (match && unit in SIZE_UNITS && retention.maxBytes === undefined) retention.maxBytes = Math.round(amount * SIZE_UNITS[unit]!);
    else return `"${part}" is not an age (e.g. 7d, 12h, 30m, 45s) or a size (e.g. 10GB, 500MB), or repeats one: write e.g. 7d,10GB`;
    if ((retention.maxAgeMs ?? 1) <= 0 || (retention.maxBytes ?? 1) <= 0) return `"${part}" must be more than zero`;
  }
  return retention;
}

/**
 * What the log keeps when nothing says otherwise. Generous: a service that ships a week after the
 * others, or a rebuild, can replay only what is kept; 10 GB bounds the disk (about ten million
 * events of 1 kB). Also what a RabbitMQ transport declares its stream with when given no
 * retention (tools, tests): a stream keeps the arguments of its first declaration.
 */
export const DEFAULT_EVENT_LOG_RETENTION = '7d,10GB';

/**
 * Settings every service reads. Services extend this with their own keys
 * (`baseConfigSchema.extend({...})`) and load the result with {@link loadConfig}.
 */
export const baseConfigSchema = z.object({
  NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
  LOG_LEVEL: logLevel.default('info'),
  /** Prefix of every exchange and queue name, so several deployments or tests can share a broker. */
  TRIBUTARY_NAMESPACE: z
    .string()
    .regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be lowercase letters, digits, _ or -, starting with a letter')
    .default('tributary'),
  /** A PostgreSQL server; unset → embedded PGlite under TRIBUTARY_DATA_DIR. */
  DATABASE_URL: urlWithProtocol('postgres:', 'postgresql:').optional(),
  /** Where embedded PGlite databases live; `memory://` keeps nothing. */
  TRIBUTARY_DATA_DIR: z.string().min(1).default('./.tributary'),
  /**
   * The event broker, by its URL's scheme: RabbitMQ (`amqp:`, `amqps:`), Redis Streams (`redis:`,
   * `rediss:`) or NATS JetStream (`nats:`, `tls:`). Unset → `AMQP_URL`, else the in-memory bus
   * (single process only). {@link eventBusUrl} reads the two.
   */
  EVENT_BUS_URL: urlWithProtocol(...EVENT_BUS_PROTOCOLS).optional(),
  /** A RabbitMQ broker: the setting from before `EVENT_BUS_URL`, still honoured. */
  AMQP_URL: urlWithProtocol('amqp:', 'amqps:').optional(),
  PORT: z.coerce.number().int().min(0).max(65535).optional(),
  /** The address to listen on: loopback by default; `0.0.0.0` in containers. */
  HOST: z.string().min(1).default('127.0.0.1'),
  /**
   * The retained event log beside the exchange (a RabbitMQ stream; a table of the embedded
   * database in `pnpm dev`): late joiners, view rebuilds and resumable subscriptions read it.
   */
  EVENT_LOG: z.enum(['on', 'off'], { message: 'must be on or off' }).default('on'),
  /** How much of it is kept: {@link parseLogRetention}'s format; {@link DEFAULT_EVENT_LOG_RETENTION} by default. */
  EVENT_LOG_RETENTION: z
    .string()
    .default(DEFAULT_EVENT_LOG_RETENTION)
    .transform((value, ctx) => {
      const parsed = parseLogRetention(value);
      if (typeof parsed === 'string') {
        ctx.addIssue({ code: 'custom', message: parsed });
        return z.NEVER;
      }
      return parsed;
    }),
  /** An OTLP/HTTP collector (e.g. http://localhost:4318); unset: spans are not exported. */
  OTEL_EXPORTER_OTLP_ENDPOINT: urlWithProtocol('http:', 'https:').optional(),
});
export type BaseConfig = z.infer<typeof baseConfigSchema>;

export type ConfigIssue = { key: string; message: string };

/** Invalid configuration: every problem at once, so one restart fixes them all. */
export class ConfigError extends TributaryError {
  override name = 'ConfigError';
  constructor(readonly issues: ConfigIssue[]) {
    super(CoreErrorCode.CONFIG_INVALID, `invalid configuration:\n${issues.map((i) => `  ${i.key}: ${i.message}`).join('\n')}`);
  }
}

/**
 * Validate the environment against a schema. Empty strings count as unset, as in most
 * deployment tools where `FOO=` means "not configured".
 * @throws ConfigError listing every invalid key
 */
export function loadConfig<S extends z.ZodType>(schema: S, env: Record<string, string | undefined> = process.env): z.infer<S> {
  const cleaned: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    if (value !== undefined && value !== '') cleaned[key] = value;
  }
  const result = schema.safeParse(cleaned);
  if (!result.success) {
    throw new ConfigError(result.error.issues.map((i) => ({ key: i.path.map(String).join('.') || '(root)', message: i.message })));
  }
  return result.data;
}
