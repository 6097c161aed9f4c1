import { z } from 'zod';
import { CoreErrorCode, TributaryError } from './errors.ts';

const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/** A URL with one of the given protocols. */
export const urlWithProtocol = (...protocols: string[]) =>
  z.string().refine((value) => URL.canParse(value) && protocols.includes(new URL(value).protocol), {
    message: `must be a ${protocols.map((p) => p.replace(/:$/, '')).join(' or ')} URL`,
  });

/** A comma-separated list setting (`a, b,c`): trimmed, empty items dropped. */
export const commaList = (defaultValue = '') =>
  z
    .string()
    .default(defaultValue)
    .transform((s) => s.split(',').map((item) => item.trim()).filter(Boolean));

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
  /** A RabbitMQ broker; unset → in-memory bus (single process only). */
  AMQP_URL: urlWithProtocol('amqp:', 'amqps:').optional(),
  PORT: z.coerce.number().int().min(0).max(65535).optional(),
  /** The address to listen on: loopback by default; `0.0.0.0` in containers. */
  HOST: z.string().min(1).default('127.0.0.1'),
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
