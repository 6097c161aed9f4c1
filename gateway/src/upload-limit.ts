import type { ApolloServerPlugin } from '@apollo/server';
import type { Logger } from '@tributary/core';
import type { GraphQLSchema } from 'graphql';
import type { GatewayConfig } from './config.ts';
import type { GatewayContext } from './context.ts';
import { uploadRateLimit, type RateLimiter } from './rate-limit.ts';

/** The upload rate limit as the settings ask for it: UPLOAD_RATE_LIMIT_FIELDS counted by `limiter`. */
export function uploadLimitPlugin(config: GatewayConfig, limiter: RateLimiter, logger: Logger): ApolloServerPlugin<GatewayContext> {
  return uploadRateLimit(limiter, { fields: config.UPLOAD_RATE_LIMIT_FIELDS, onStoreError: config.RATE_LIMIT_ON_REDIS_ERROR, logger });
}

/** The names of `fields` the schema has no mutation field of (UPLOAD_RATE_LIMIT_FIELDS set by hand is checked against it). */
export function unknownMutationFields(schema: GraphQLSchema, fields: readonly string[]): string[] {
  const mutation = schema.getMutationType()?.getFields() ?? {};
  return fields.filter((field) => !Object.hasOwn(mutation, field));
}
