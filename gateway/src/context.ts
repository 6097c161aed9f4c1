import type { BaseContext } from '@apollo/server';
import type { Identity } from '@tributary/core';

/** What every gateway operation runs with: who the caller is, and the trace it belongs to. */
export interface GatewayContext extends BaseContext, Identity {
  traceparent?: string;
}
