import type { ApolloServerPlugin } from '@apollo/server';
import type { GatewayContext } from '../context.ts';
import type { EntityCache } from './entity-cache.ts';
import type { Flight } from './flight.ts';
import type { CachePlan } from './plan.ts';
import { joinKey } from './tags.ts';

/** A miss this request is answering: stored when it lands, unless an invalidation overtook it. */
interface Miss {
  key: string;
  plan: CachePlan;
  since: number;
  flight: Flight;
}

/**
 * The Apollo Server plugin: answers cacheable queries from the cache, stores what it missed,
 * and applies what a mutation through this gateway changed at once (a client reads its own
 * writes without waiting for the event). Each answer says how it was found in its
 * `x-tributary-cache` header (hit, shared, miss).
 */
export function cachePlugin(cache: EntityCache): ApolloServerPlugin<GatewayContext> {
  const { requests } = cache.metrics;
  return {
    async requestDidStart() {
      let miss: Miss | undefined;
      return {
        async responseForOperation(rc) {
          if (rc.operation.operation !== 'query') return null;
          const plan = cache.plan(rc.schema, rc.document, rc.operationName);
          if (!plan.cacheable) {
            requests.inc({ result: 'bypass' });
            return null;
          }
          const tenant = rc.contextValue.tenantId;
          const key = joinKey(String(rc.queryHash), rc.operationName ?? '', rc.request.variables ? JSON.stringify(rc.request.variables) : '');
          const hit = (data: Record<string, unknown>, result: 'hit' | 'shared') => {
            requests.inc({ result });
            rc.response.http.headers.set('x-tributary-cache', result);
            return { http: rc.response.http, body: { kind: 'single' as const, singleResult: { data } } };
          };
          const data = cache.get(tenant, key);
          if (data) return hit(data, 'hit');
          // The same query already on its way: share its answer, unless a change to what it holds
          // was invalidated since it began (the answer may predate it).
          const flight = cache.inFlight(tenant, key);
          if (flight) {
            const shared = await flight.result;
            if (shared && cache.sharable(tenant, flight, cache.tagsOf(plan, shared, rc.request.variables))) return hit(shared, 'shared');
          }
          requests.inc({ result: 'miss' });
          rc.response.http.headers.set('x-tributary-cache', 'miss');
          miss = { key, plan, since: cache.begin(), flight: cache.takeOff(tenant, key) };
          return null;
        },
        async willSendResponse(rc) {
          if (rc.response.body.kind !== 'single' || !rc.operation) return miss?.flight.land(undefined);
          const { data, errors } = rc.response.body.singleResult;
          const ok = data && !errors?.length ? data : undefined;
          const tenant = rc.contextValue.tenantId;
          if (miss) {
            miss.flight.land(ok);
            if (ok) cache.set(tenant, miss.key, ok, cache.tagsOf(miss.plan, ok, rc.request.variables), miss.since);
          } else if (ok && rc.operation.operation === 'mutation' && rc.document) {
            cache.invalidate(tenant, cache.changedBy(rc.schema, rc.document, rc.operationName, ok), 'mutation');
          }
        },
      };
    },
  };
}
