import { ApolloGateway, type GraphQLDataSourceProcessOptions } from '@apollo/gateway';
import { signIdentity, type Logger } from '@tributary/core';
import type { GraphQLSchema } from 'graphql';
import type { GatewayContext } from './context.ts';
import { FastDataSource } from './datasource.ts';
import { PlanExecutingGateway } from './executor/index.ts';

/**
 * Forwards the caller's identity, signed (with a mutation's Idempotency-Key, if any), and the trace to every subgraph request; sends them
 * over keep-alive undici pools with de-duplicated entity representations (FastDataSource).
 */
class IdentityDataSource extends FastDataSource<GatewayContext> {
  constructor(
    options: { url: string },
    private readonly secret: string,
  ) {
    super(options);
  }

  override willSendRequest({ request, context }: GraphQLDataSourceProcessOptions<GatewayContext>): void {
    const headers = request.http?.headers;
    // Requests the gateway makes on its own (no caller) carry no identity: subgraphs refuse them.
    if (!headers || !('tenantId' in context)) return;
    const identity = context as GatewayContext;
    for (const [name, value] of Object.entries(signIdentity(this.secret, identity))) headers.set(name, value);
    if (identity.traceparent) headers.set('traceparent', identity.traceparent);
  }
}

export interface FederationOptions {
  /** The supergraph Apollo loads at start. */
  sdl: string;
  /** Subgraph URLs that replace the supergraph's, by name. */
  overrides: Record<string, string>;
  /** Signs the caller's identity on every subgraph request (INTERNAL_SIGNING_SECRET). */
  secret: string;
  /** Who runs the query plans (GATEWAY_EXECUTOR). Default `tributary`. */
  executor?: 'tributary' | 'apollo';
  logger: Logger;
}

/**
 * Apollo Gateway over a supergraph that a reload replaces: the API schema it serves, and where
 * it sends each subgraph's requests (with the caller's identity).
 */
export class Federation {
  /** What Apollo Server serves: Apollo Gateway, with its plans run by our executor unless `executor` is `apollo`. */
  readonly gateway: PlanExecutingGateway | ApolloGateway;
  /** The API schema being served; undefined until Apollo has loaded the supergraph. */
  apiSchema: GraphQLSchema | undefined;
  /** Where a subgraph Apollo meets for the first time is sent. */
  private overrides: Record<string, string>;
  private update: ((sdl: string) => void) | undefined;
  /** What the reload handler did with the latest supergraph (applied, or why not). */
  private applied: Promise<void> = Promise.resolve();
  private onReload: ((sdl: string, schema: GraphQLSchema) => Promise<void>) | undefined;
  private readonly dataSources: IdentityDataSource[] = [];
  /** The data source each service's requests go through now (Apollo builds one again when a service's URL changes). */
  private readonly services = new Map<string, IdentityDataSource>();

  constructor(options: FederationOptions) {
    const { logger } = options;
    this.overrides = options.overrides;
    const apollo = new ApolloGateway({
      supergraphSdl: async ({ update }) => {
        this.update = update;
        return { supergraphSdl: options.sdl };
      },
      buildService: ({ name, url }) => {
        const source = new IdentityDataSource({ url: this.overrides[name] ?? url ?? '' }, options.secret);
        this.dataSources.push(source);
        this.services.set(name, source);
        return source;
      },
      logger: { debug: () => {}, info: (m) => logger.info(String(m)), warn: (m) => logger.warn(String(m)), error: (m) => logger.error(String(m)) },
    });
    this.gateway =
      options.executor === 'apollo'
        ? apollo
        : new PlanExecutingGateway({
            apollo,
            services: this.services,
            onError: (error) => logger.error({ err: error }, 'the supergraph cannot be planned by our executor: Apollo Gateway executes every operation'),
          });
    apollo.onSchemaLoadOrUpdate(({ apiSchema, coreSupergraphSdl }) => {
      this.apiSchema = apiSchema;
      if (this.onReload) this.applied = this.onReload(coreSupergraphSdl, apiSchema);
    });
  }

  /** Whether Apollo has loaded a supergraph, so that {@link replace} can hand it another. */
  get loaded(): boolean {
    return this.update !== undefined;
  }

  /** What to do with each supergraph Apollo takes after the first (a reload's): bind its events, and so on. */
  reloadWith(handler: (sdl: string, schema: GraphQLSchema) => Promise<void>): void {
    this.onReload = handler;
  }

  /**
   * Serve `sdl`, its subgraphs at `overrides` (else at its own URLs); resolves once the reload
   * handler has applied it, rejects with why it did not.
   */
  async replace(sdl: string, overrides: Record<string, string>): Promise<void> {
    if (!this.update) throw new Error('the gateway has not loaded a supergraph yet');
    this.overrides = overrides;
    this.update(sdl);
    await this.applied;
  }

  /** Closes the subgraphs' connection pools. */
  async close(): Promise<void> {
    await Promise.all(this.dataSources.map((source) => source.close()));
  }
}
