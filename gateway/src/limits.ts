/*
 * What a request is refused for before it is planned: the depth, alias and cost limits
 * (validation rules), and an operation name that names no operation. What clients then see of
 * the errors is errors.ts's; the upload rate limit is upload-limit.ts's.
 */
import type { ApolloServerPlugin } from '@apollo/server';
import { costLimitRule } from '@escape.tech/graphql-armor-cost-limit';
import { maxAliasesRule } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthRule } from '@escape.tech/graphql-armor-max-depth';
import { GraphQLError, type ValidationContext, type ValidationRule } from 'graphql';
import type { GatewayConfig } from './config.ts';
import type { GatewayContext } from './context.ts';

/** Codes of refused operations, on `extensions.code`. */
export const LimitCode = {
  QUERY_TOO_DEEP: 'QUERY_TOO_DEEP',
  TOO_MANY_ALIASES: 'TOO_MANY_ALIASES',
  QUERY_TOO_COSTLY: 'QUERY_TOO_COSTLY',
  RATE_LIMITED: 'RATE_LIMITED',
  /** The upload rate limit could not be checked (its Redis is down) and RATE_LIMIT_ON_REDIS_ERROR=deny. */
  SERVICE_UNAVAILABLE: 'SERVICE_UNAVAILABLE',
} as const;

/** Report an armor rejection as a validation error with our code (instead of throwing). */
const reject = (code: string) => [(context: ValidationContext | null, error: GraphQLError) => context?.reportError(new GraphQLError(error.message.replace(/^Syntax Error: /, ''), { extensions: { code } }))];

/** Depth, alias and cost limits (graphql-armor), as validation rules for Apollo Server. */
export function limitRules(config: GatewayConfig): ValidationRule[] {
  const common = { propagateOnRejection: false, exposeLimits: true } as const;
  return [
    maxDepthRule({ ...common, n: config.QUERY_MAX_DEPTH, flattenFragments: true, onReject: reject(LimitCode.QUERY_TOO_DEEP) }) as unknown as ValidationRule,
    maxAliasesRule({ ...common, n: config.QUERY_MAX_ALIASES, onReject: reject(LimitCode.TOO_MANY_ALIASES) }) as unknown as ValidationRule,
    costLimitRule({ ...common, maxCost: config.QUERY_MAX_COST, onReject: reject(LimitCode.QUERY_TOO_COSTLY) }) as unknown as ValidationRule,
  ];
}

/**
 * An operation name that names no operation in the document (or none given for several) is
 * the client's mistake. Apollo Gateway reports it as a 500 from inside the query planner;
 * answer it before planning, as a 400 with a code.
 */
export const unknownOperation: ApolloServerPlugin<GatewayContext> = {
  async requestDidStart() {
    return {
      async didResolveOperation(request) {
        if (request.operation) return;
        const name = request.request.operationName;
        const message = name ? `unknown operation named "${name.slice(0, 100)}"` : 'the document has several operations: name one with operationName';
        throw new GraphQLError(message, { extensions: { code: 'BAD_REQUEST', http: { status: 400 } } });
      },
    };
  },
};
