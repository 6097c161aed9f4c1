import type { BaseContext } from '@apollo/server';
import { currentContext, traceparentOf, type Identity } from '@tributary/core';
import type { Principal } from './auth.ts';

/** What every gateway operation runs with: who the caller is, and the trace it belongs to. */
export interface GatewayContext extends BaseContext, Identity {
  traceparent?: string;
  /** A subscription's own part, set by graphql-ws' server (websocket.ts) for each subscribe. */
  subscription?: SubscriptionRequest;
}

/** What a graphql-ws subscribe brings besides its operation. */
export interface SubscriptionRequest {
  /** `extensions.after` of the subscribe payload, unchecked: the cursor to resume after, if any. */
  after: unknown;
  /** Close the client's connection: this subscription fell further behind than the gateway allows. */
  tooSlow(): void;
}

/** The context of a verified caller's operation; the current trace learns the caller's tenant. */
export function contextFor(principal: Principal): GatewayContext {
  const trace = currentContext();
  if (trace) trace.tenantId = principal.tenantId;
  return { tenantId: principal.tenantId, userId: principal.userId, ...(trace ? { traceparent: traceparentOf(trace) } : {}) };
}
