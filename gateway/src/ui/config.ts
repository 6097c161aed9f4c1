/**
 * What the gateway tells its pages, as JSON in `<script id="tributary-config">`. Shared by the
 * server (which writes it) and the browser bundles (which read it); types only.
 */
export interface UiConfig {
  /** The GraphQL endpoint, for HTTP and graphql-ws (same path). */
  graphqlPath: string;
  /** A token to pre-fill, only in development (`pnpm dev`); never set in production. */
  devToken?: string;
  /** The query GraphiQL opens with, when its embedder gives one (else a generic one). */
  defaultQuery?: string;
  /** Monaco's web workers for GraphiQL, by language label (`editor`, `json`, `graphql`). */
  workers?: Record<string, string>;
}

/** The id of the `<script type="application/json">` element that carries the {@link UiConfig}. */
export const UI_CONFIG_ELEMENT_ID = 'tributary-config';

/** sessionStorage key under which the pages share the token the user typed. */
export const TOKEN_STORAGE_KEY = 'tributary.token';
