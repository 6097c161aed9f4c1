/**
 * Browser helpers GraphiQL shares with pages mounted beside it (`@tributary/gateway/ui/client`):
 * the page's configuration, the graphql-ws URL, the token the pages share in this tab, errors.
 */
import { TOKEN_STORAGE_KEY, UI_CONFIG_ELEMENT_ID, type UiConfig } from '../config.ts';

export type { UiConfig };

/** The configuration the server embedded in the page. */
export function readConfig(): UiConfig {
  const text = document.getElementById(UI_CONFIG_ELEMENT_ID)?.textContent;
  const parsed: unknown = text ? JSON.parse(text) : {};
  const config = (parsed && typeof parsed === 'object' ? parsed : {}) as Partial<UiConfig>;
  return { ...config, graphqlPath: config.graphqlPath ?? '/graphql' };
}

/** `ws://` or `wss://` for the endpoint, matching the page's own scheme. */
export function webSocketUrl(path: string): string {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}

/** The token the user last typed in this tab, else the development token, else none. */
export function initialToken(config: UiConfig): string {
  return sessionStorage.getItem(TOKEN_STORAGE_KEY) ?? config.devToken ?? '';
}

export function storeToken(token: string): void {
  if (token) sessionStorage.setItem(TOKEN_STORAGE_KEY, token);
  else sessionStorage.removeItem(TOKEN_STORAGE_KEY);
}

/** Accepts a bare token or a pasted `Bearer <token>` header value. */
export function normalizeToken(value: string): string {
  return value.trim().replace(/^Bearer\s+/i, '');
}

/**
 * A readable message for what graphql-ws reports as an error: a CloseEvent (4403 is the
 * gateway refusing the token in connection_init), GraphQL errors, or anything else.
 */
export function socketError(error: unknown): { code: string; message: string } {
  if (typeof CloseEvent !== 'undefined' && error instanceof CloseEvent) {
    if (error.code === 4403) return { code: 'UNAUTHENTICATED', message: `the gateway refused the token (WebSocket closed with 4403${error.reason ? `: ${error.reason}` : ''})` };
    return { code: 'WEBSOCKET_CLOSED', message: `the WebSocket closed with ${error.code}${error.reason ? `: ${error.reason}` : ''}` };
  }
  const first = Array.isArray(error) ? (error[0] as unknown) : error;
  if (first && typeof first === 'object' && 'message' in first) {
    const extensions = (first as { extensions?: { code?: unknown } }).extensions;
    return { code: typeof extensions?.code === 'string' ? extensions.code : 'ERROR', message: String((first as { message: unknown }).message) };
  }
  return { code: 'ERROR', message: error instanceof Error ? error.message : String(error) };
}
