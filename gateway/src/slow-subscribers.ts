import { externalCounter } from '@tributary/core/metrics';
import type { WebSocket } from 'ws';

/**
 * The close code of a connection whose subscriber fell further behind than
 * SUBSCRIPTION_MAX_QUEUED. In the private range (4000-4999) and not one graphql-ws uses itself
 * (4004, 4005, 4400, 4401, 4403, 4406, 4408, 4409, 4429, 4500, 4504): 4429 would have read as
 * "too many requests" but is graphql-ws' TooManyInitialisationRequests, which its client treats
 * as fatal. 4008 echoes 1008 (policy violation) and is not fatal to graphql-ws' client, so a
 * client with retries reconnects by itself (and resumes, when it sends its last cursor).
 */
export const SUBSCRIBER_TOO_SLOW = 4008;
export const SUBSCRIBER_TOO_SLOW_REASON = 'Subscriber too slow';

/** Subscribers closed by the gateway, by reason (`too_slow`: SUBSCRIPTION_MAX_QUEUED). */
export function closedSubscribers(): ReturnType<typeof externalCounter> {
  return externalCounter('tributary_gateway_subscribers_closed_total', 'Subscriber connections the gateway closed, by reason: too_slow (more than SUBSCRIPTION_MAX_QUEUED messages due)', ['reason']);
}

/**
 * Close a connection whose subscriber is too far behind. The whole connection, not the one
 * operation: a `complete` or `error` message would queue behind everything the client has not
 * read yet (its TCP window is full), and graphql-ws' client would take a completion as the
 * stream's normal end and never come back; a close code says why, and its client reconnects.
 * The socket's other subscriptions sit behind the same full window, so they are as far behind.
 */
export function closeTooSlow(socket: WebSocket): void {
  if (socket.readyState !== socket.OPEN) return;
  // ws sends the close frame after what it has buffered and destroys the socket if the client
  // never answers (its 30 s closing timeout): nothing more is queued for it meanwhile.
  socket.close(SUBSCRIBER_TOO_SLOW, SUBSCRIBER_TOO_SLOW_REASON);
}
