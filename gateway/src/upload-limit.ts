import type { ApolloServerPlugin } from '@apollo/server';
import type { Logger } from '@tributary/core';
import { ConfigError } from '@tributary/core/config';
import type { RateLimiter } from '@tributary/core/rate-limit';
import type { GraphQLSchema } from 'graphql';
import type { GatewayConfig } from './config.ts';
import type { GatewayContext } from './context.ts';
import { uploadRateLimit } from './rate-limit.ts';

/** The upload rate limit as the settings ask for it: UPLOAD_RATE_LIMIT_FIELDS counted by `limiter`. */
export function uploadLimitPlugin(config: GatewayConfig, limiter: RateLimiter, logger: Logger): ApolloServerPlugin<GatewayContext> {
  return uploadRateLimit(limiter, { fields: config.UPLOAD_RATE_LIMIT_FIELDS, onStoreError: config.RATE_LIMIT_ON_REDIS_ERROR, logger });
}

/** The names of `fields` the schema has no mutation field of (UPLOAD_RATE_LIMIT_FIELDS set by hand is checked against it). */
export function unknownMutationFields(schema: GraphQLSchema, fields: readonly string[]): string[] {
  const mutation = schema.getMutationType()?.getFields() ?? {};
  return fields.filter((field) => !Object.hasOwn(mutation, field));
}

/** The fields UPLOAD_RATE_LIMIT_FIELDS, set by hand, names and `schema` has no mutation field of (the default is not checked). */
export function unlimitedFields(config: GatewayConfig, schema: GraphQLSchema): string[] {
  return config.explicit.UPLOAD_RATE_LIMIT_FIELDS ? unknownMutationFields(schema, config.UPLOAD_RATE_LIMIT_FIELDS) : [];
}

/**
 * At start, a field UPLOAD_RATE_LIMIT_FIELDS names by hand that the API schema lacks is a setting
 * that would silently count nothing. (A reload only warns of it: it must not take a running
 * gateway down.)
 * @throws ConfigError naming the fields
 */
export function checkUploadLimitFields(config: GatewayConfig, schema: GraphQLSchema | undefined): void {
  const unknown = schema ? unlimitedFields(config, schema) : [];
  if (unknown.length > 0) throw new ConfigError([{ key: 'UPLOAD_RATE_LIMIT_FIELDS', message: `the API schema has no mutation field ${unknown.map((f) => `"${f}"`).join(', ')}` }]);
}
