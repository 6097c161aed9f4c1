import type { BaseContext } from '@apollo/server';
import type { IncomingHttpHeaders } from 'node:http';
import { DEFAULT_TENANT, type Identity } from '@tributary/core/service';

/** What every gateway operation runs with: who the caller is, and the trace it belongs to. */
export interface GatewayContext extends BaseContext, Identity {
  traceparent?: string;
}

/**
 * The caller's identity. Until authentication is configured this trusts the
 * `x-tributary-tenant` header (embedded and development setups).
 */
export function identityFromHeaders(headers: IncomingHttpHeaders | Record<string, unknown>): Identity {
  const tenant = headers['x-tributary-tenant'];
  const user = headers['x-tributary-user'];
  return {
    tenantId: typeof tenant === 'string' && tenant.length > 0 ? tenant : DEFAULT_TENANT,
    userId: typeof user === 'string' && user.length > 0 ? user : null,
  };
}
