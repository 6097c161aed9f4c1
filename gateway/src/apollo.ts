import { ApolloServer } from '@apollo/server';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import type { Logger } from '@tributary/core';
import type { RateLimiter } from '@tributary/core/rate-limit';
import { retryAfterPlugin } from '@tributary/core/server';
import { GraphQLError, type ExecutionResult } from 'graphql';
import type { Server } from 'node:http';
import type { EntityCache } from './cache/index.ts';
import type { GatewayConfig } from './config.ts';
import type { GatewayContext } from './context.ts';
import { formatError } from './errors.ts';
import type { Federation } from './federation.ts';
import { idempotencyKeyPlugin } from './idempotency.ts';
import { limitRules, unknownOperation } from './limits.ts';
import type { QueryExecutor } from './subscriptions.ts';
import { uploadLimitPlugin } from './upload-limit.ts';

export interface ApolloOptions {
  config: GatewayConfig;
  federation: Federation;
  /** Drained by Apollo when it stops. */
  http: Server;
  rateLimiter: RateLimiter;
  cache: EntityCache | undefined;
  logger: Logger;
}

/**
 * Apollo Server over the federation: the request limits, error masking in production, and the
 * plugins in their order (operation name, Idempotency-Key, upload rate limit, cache, 503s).
 */
export function createApollo(options: ApolloOptions): ApolloServer<GatewayContext> {
  const { config, cache } = options;
  const production = config.NODE_ENV === 'production';
  return new ApolloServer<GatewayContext>({
    gateway: options.federation.gateway,
    // We own shutdown (see main.ts); Apollo's own signal handlers would race it.
    stopOnTerminationSignals: false,
    introspection: !production,
    includeStacktraceInErrorResponses: !production,
    validationRules: limitRules(config),
    formatError: formatError(production),
    // GraphiQL (bundled, ./ui) replaces Apollo's landing page, which loads from a CDN.
    plugins: [
      ApolloServerPluginDrainHttpServer({ httpServer: options.http }),
      ApolloServerPluginLandingPageDisabled(),
      unknownOperation,
      idempotencyKeyPlugin,
      uploadLimitPlugin(config, options.rateLimiter, options.logger),
      ...(cache ? [cache.plugin()] : []),
      // SERVICE_UNAVAILABLE, ours or a subgraph's: HTTP 503 with Retry-After.
      retryAfterPlugin,
    ],
  });
}

/** Runs an operation through Apollo as the caller would (the subscriptions' reads, graphql-ws' queries). */
export function executorOf(apollo: ApolloServer<GatewayContext>): QueryExecutor {
  return async (query, variables, contextValue): Promise<ExecutionResult> => {
    const response = await apollo.executeOperation({ query, ...(variables ? { variables } : {}) }, { contextValue });
    if (response.body.kind !== 'single') throw new Error('incremental delivery is not supported over graphql-ws');
    const { errors, ...rest } = response.body.singleResult;
    // executeOperation hands back formatted (plain) errors; graphql-ws serialises GraphQLErrors.
    if (!errors?.length) return rest as ExecutionResult;
    return { ...rest, errors: errors.map((e) => new GraphQLError(e.message, { ...(e.path ? { path: e.path } : {}), ...(e.extensions ? { extensions: e.extensions } : {}) })) } as ExecutionResult;
  };
}
