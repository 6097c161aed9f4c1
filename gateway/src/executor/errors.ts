/**
 * A subgraph's errors as Apollo Gateway reports them to the client (executeQueryPlan.js, 2.14):
 * each with its path in the client's answer (an entity's error through the entity it is about)
 * and the service's name.
 */
import { ERRORS, assert, errorCodeDef } from '@apollo/federation-internals';
import type { FetchNode, ResponsePath } from '@apollo/query-planner';
import { GraphQLError } from 'graphql';
import type { SubgraphResponse } from '../datasource.ts';

type Json = Record<string, unknown>;
type SubgraphError = NonNullable<SubgraphResponse['errors']>[number];
type ErrorPath = (path: SubgraphError['path']) => (string | number)[] | undefined;

/** Apollo's `makeLazyErrorPathGenerator`: an entity error's path, through the entity it is about. */
export function lazyErrorPath(fetch: FetchNode, path: ResponsePath, data: Json): ErrorPath {
  let hydrated: (string | number)[][] | undefined;
  return (errorPath) => {
    if (fetch.requires && typeof errorPath?.[1] === 'number') {
      if (!hydrated) {
        hydrated = [];
        hydratedPaths([], path, 0, data, hydrated);
      }
      return [...(hydrated[errorPath[1]] ?? []), ...errorPath.slice(2)];
    }
    return errorPath ? [...path, ...errorPath] : undefined;
  };
}

/** Apollo's `generateHydratedPaths`. */
function hydratedPaths(parent: (string | number)[], path: ResponsePath, from: number, data: unknown, result: (string | number)[][]): void {
  if (data === null || data === undefined) return;
  const head = path[from];
  if (head === undefined) {
    result.push(parent.slice());
  } else if (head === '@') {
    assert(Array.isArray(data), 'expected array when encountering `@`');
    for (let i = 0; i < data.length; i++) {
      parent.push(i);
      hydratedPaths(parent, path, from + 1, data[i], result);
      parent.pop();
    }
  } else if (typeof head === 'string') {
    if (Array.isArray(data)) {
      for (let i = 0; i < data.length; i++) {
        parent.push(i);
        hydratedPaths(parent, path, from, data[i], result);
        parent.pop();
      }
    } else if (Object.hasOwn(data as object, head)) {
      parent.push(head);
      hydratedPaths(parent, path, from + 1, (data as Json)[head], result);
      parent.pop();
    }
  } else {
    assert(false, `unknown path part "${String(head)}"`);
  }
}

/** Apollo's `downstreamServiceError`: the subgraph's error, its path in the client's answer, and the service's name. */
export function downstreamServiceError(original: SubgraphError, serviceName: string, errorPath: ErrorPath): GraphQLError {
  const message = original.message || `Error while fetching subquery from service "${serviceName}"`;
  const { extensions } = original;
  const options = { originalError: original as Error, path: errorPath(original.path), extensions: { ...extensions, serviceName } };
  const codeDef = errorCodeDef(original as GraphQLError);
  if (!codeDef && extensions?.code) return new GraphQLError(message, options);
  return (codeDef ?? ERRORS.DOWNSTREAM_SERVICE_ERROR).err(message, options);
}
