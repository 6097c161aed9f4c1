/**
 * The standard federation benchmark fixture (the four subgraphs of the well-known gateway
 * benchmarks: accounts, products, reviews, inventory), with the same in-memory data: 6 users,
 * 9 products (the top 5 are served), 11 reviews, and the same quirks (every review's author is
 * user 1, and every user has reviews 1 and 2 in the reviews subgraph).
 *
 * Each subgraph is `buildSubgraphSchema` executed by graphql-js on a bare node:http server with
 * a parse/validate cache, so that the subgraphs cost as little as possible next to the gateway
 * under test. Each counts the requests and entity representations it receives.
 */
import { composeServices } from '@apollo/composition';
import { eventDirectiveDefinitions, eventsSpecLink } from '@tributary/core/bindings';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { execute, parse, validate, type DocumentNode, type GraphQLSchema } from 'graphql';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export const SUBGRAPHS = ['accounts', 'products', 'reviews', 'inventory'] as const;
export type SubgraphName = (typeof SUBGRAPHS)[number];

/** The nested query of the federation gateway benchmarks. */
export const BENCH_QUERY = `query TestQuery {
  users { id username name reviews { id body product { inStock name price shippingEstimate upc weight reviews { id body author { id username name reviews { id body product { inStock name price shippingEstimate upc weight } } } } } } }
  topProducts { name price inStock shippingEstimate upc weight reviews { id body author { id username name reviews { id body product { inStock name price shippingEstimate upc weight } } } } }
}`;

// Each subgraph declares which event changes its entity (@changedBy), as a Tributary subgraph
// would: the supergraph carries it to our gateway's cache; the other gateways ignore it.
const LINK = `extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key", "@shareable", "@external", "@provides", "@requires", "@composeDirective"]) ${eventsSpecLink}
  ${eventDirectiveDefinitions}`;

const SDL: Record<SubgraphName, string> = {
  accounts: `${LINK}
    type Query { me: User  user(id: ID!): User  users: [User] }
    type Mutation { setUserName(id: ID!, name: String!): User }
    type User @key(fields: "id") @changedBy(event: "user.updated/v1", key: "id") { id: ID!  name: String  username: String @shareable  birthday: Int }`,
  products: `${LINK}
    type Query { topProducts(first: Int = 5): [Product] }
    type Mutation { setPrice(upc: String!, price: Int!): Product }
    type Product @key(fields: "upc") @changedBy(event: "product.updated/v1", key: "upc") { upc: String!  name: String  price: Int  weight: Int }`,
  reviews: `${LINK}
    type Mutation { setReviewBody(id: ID!, body: String!): Review }
    type Review @key(fields: "id") @changedBy(event: "review.updated/v1", key: "id") { id: ID!  body: String  product: Product  author: User @provides(fields: "username") }
    type User @key(fields: "id") { id: ID!  username: String @external  reviews: [Review] }
    type Product @key(fields: "upc") { upc: String!  reviews: [Review] }`,
  inventory: `${LINK}
    type Product @key(fields: "upc") { upc: String!  weight: Int @external  price: Int @external  inStock: Boolean  shippingEstimate: Int @requires(fields: "price weight") }`,
};

const USERS = [
  { id: '1', name: 'Uri Goldshtein', username: 'urigo', birthday: 1234567890 },
  { id: '2', name: 'Dotan Simha', username: 'dotansimha', birthday: 1234567890 },
  { id: '3', name: 'Kamil Kisiela', username: 'kamilkisiela', birthday: 1234567890 },
  { id: '4', name: 'Arda Tanrikulu', username: 'ardatan', birthday: 1234567890 },
  { id: '5', name: 'Gil Gardosh', username: 'gilgardosh', birthday: 1234567890 },
  { id: '6', name: 'Laurin Quast', username: 'laurin', birthday: 1234567890 },
];

const PRODUCTS = [
  { upc: '1', name: 'Table', price: 899, weight: 100 },
  { upc: '2', name: 'Couch', price: 1299, weight: 1000 },
  { upc: '3', name: 'Glass', price: 15, weight: 20 },
  { upc: '4', name: 'Chair', price: 499, weight: 100 },
  { upc: '5', name: 'TV', price: 1299, weight: 1000 },
  { upc: '6', name: 'Lamp', price: 6999, weight: 300 },
  { upc: '7', name: 'Grill', price: 3999, weight: 2000 },
  { upc: '8', name: 'Fridge', price: 100000, weight: 6000 },
  { upc: '9', name: 'Sofa', price: 9999, weight: 800 },
];

const IN_STOCK: Record<string, boolean> = { '1': true, '2': false, '3': false, '4': false, '5': true, '6': true, '7': true, '8': false, '9': true };

const LOREM = {
  a: 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum.',
  b: 'Sed ut perspiciatis unde omnis iste natus error sit voluptatem accusantium doloremque laudantium, totam rem aperiam, eaque ipsa quae ab illo inventore veritatis et quasi architecto beatae vitae dicta sunt explicabo. Nemo enim ipsam voluptatem quia voluptas sit aspernatur aut odit aut fugi',
  c: 'sed quia consequuntur magni dolores eos qui ratione voluptatem sequi nesciunt. Neque porro quisquam est, qui dolorem ipsum quia dolor sit amet, consectetur, adipisci velit, sed quia non numquam eius modi tempora incidunt ut labore et dolore magnam aliquam quaerat voluptatem.',
  d: 'Ut enim ad minima veniam, quis nostrum exercitationem ullam corporis suscipit laboriosam, nisi ut aliquid ex ea commodi consequatur? Quis autem',
  e: 'At vero eos et accusamus et iusto odio dignissimos ducimus qui blanditiis praesentium voluptatum deleniti atque corrupti quos dolores et quas molestias excepturi sint occaecati cupiditate non provident, similique sunt in culpa qui officia deserunt mollitia animi, id est laborum et dolorum fuga. Et harum quidem rerum facilis est et expedita distinctio. Nam libero tempore, cum soluta nobis est eligendi optio cumque nihil impedit quo minus id quod maxime placeat facere possimus, omnis voluptas assumenda est, omnis dolor repellendus. Temporibus autem quibusdam et aut officiis debitis aut rerum necessitatibus saepe eveniet ut et voluptates repudiandae sint et molestiae non recusandae. Itaque earum rerum hic tenetur a sapiente delectus, ut aut reiciendis voluptatibus maiores alias consequatur aut perferendis doloribus asperiores repellat.',
};

interface Review {
  id: string;
  body: string;
  product: { upc: string };
}
const REVIEWS: Review[] = (
  [
    ['1', LOREM.a, '1'],
    ['2', LOREM.b, '1'],
    ['3', LOREM.c, '1'],
    ['4', LOREM.d, '1'],
    ['5', LOREM.a, '2'],
    ['6', LOREM.b, '2'],
    ['7', LOREM.c, '2'],
    ['8', LOREM.d, '2'],
    ['9', LOREM.d, '3'],
    ['10', LOREM.d, '4'],
    ['11', LOREM.e, '4'],
  ] as const
).map(([id, body, upc]) => ({ id, body, product: { upc } }));

type Ref = Record<string, unknown>;

/**
 * The read-heavy mix's writes: each mutation changes one entity in place and announces it, the
 * way a Tributary subgraph would through its outbox (`<type>.updated`, data `{ id }` / `{ upc }`).
 */
export const MUTATIONS = {
  setPrice: 'mutation ($upc: String!, $price: Int!) { setPrice(upc: $upc, price: $price) { upc price } }',
  setUserName: 'mutation ($id: ID!, $name: String!) { setUserName(id: $id, name: $name) { id name } }',
  setReviewBody: 'mutation ($id: ID!, $body: String!) { setReviewBody(id: $id, body: $body) { id body } }',
} as const;
export type ChangeEvent = { type: 'product.updated'; data: { upc: string } } | { type: 'user.updated'; data: { id: string } } | { type: 'review.updated'; data: { id: string } };
/** The tenant the benchmark's token names: the fixture's events belong to it. */
export const BENCH_TENANT = 'bench';
let announce: (event: ChangeEvent) => Promise<void> = async () => {};
/** Where the subgraphs announce their changes (the subgraphs process sends them to RabbitMQ). */
export function onChange(publish: (event: ChangeEvent) => Promise<void>): void {
  announce = publish;
}

function change<T extends object>(list: T[], match: (item: T) => boolean, patch: Partial<T>, event: ChangeEvent): Promise<T | null> {
  const item = list.find(match);
  if (!item) return Promise.resolve(null);
  Object.assign(item, patch);
  // Answer once the event is confirmed by the broker, as an outbox relay would have it sent.
  return announce(event).then(() => item);
}

const RESOLVERS: Record<SubgraphName, Record<string, Record<string, unknown>>> = {
  accounts: {
    Query: {
      me: () => USERS[0],
      user: (_: unknown, { id }: { id: string }) => USERS.find((u) => u.id === id) ?? null,
      users: () => USERS,
    },
    Mutation: {
      setUserName: (_: unknown, { id, name }: { id: string; name: string }) => change(USERS, (u) => u.id === id, { name }, { type: 'user.updated', data: { id } }),
    },
    User: { __resolveReference: (ref: Ref) => USERS.find((u) => u.id === ref.id) ?? null },
  },
  products: {
    Query: { topProducts: (_: unknown, { first }: { first: number }) => PRODUCTS.slice(0, first) },
    Mutation: {
      setPrice: (_: unknown, { upc, price }: { upc: string; price: number }) => change(PRODUCTS, (p) => p.upc === upc, { price }, { type: 'product.updated', data: { upc } }),
    },
    Product: { __resolveReference: (ref: Ref) => PRODUCTS.find((p) => p.upc === ref.upc) ?? null },
  },
  reviews: {
    Mutation: {
      setReviewBody: (_: unknown, { id, body }: { id: string; body: string }) => change(REVIEWS, (r) => r.id === id, { body }, { type: 'review.updated', data: { id } }),
    },
    Review: {
      __resolveReference: (ref: Ref) => REVIEWS.find((r) => r.id === ref.id) ?? null,
      author: () => ({ id: '1', username: 'urigo' }),
    },
    User: {
      __resolveReference: (ref: Ref) => ({ id: ref.id, username: 'user' }),
      reviews: () => REVIEWS.slice(0, 2),
    },
    Product: {
      __resolveReference: (ref: Ref) => ({ upc: ref.upc }),
      reviews: (product: { upc: string }) => REVIEWS.filter((r) => r.product.upc === product.upc),
    },
  },
  inventory: {
    Product: {
      __resolveReference: (ref: Ref) => ({ ...ref, inStock: IN_STOCK[String(ref.upc)] ?? null }),
      shippingEstimate: (product: { price?: number | null; weight?: number | null }) => {
        if (product.price == null) return null;
        if (product.price > 1000) return 0;
        return product.weight == null ? null : Math.trunc(product.weight / 2);
      },
    },
  },
};

export function subgraphSchema(name: SubgraphName): GraphQLSchema {
  return buildSubgraphSchema({ typeDefs: parse(SDL[name]), resolvers: RESOLVERS[name] as never });
}

/** The supergraph of the four subgraphs at these URLs, composed with @apollo/composition. */
export function composeSupergraph(urls: Record<SubgraphName, string>): string {
  const result = composeServices(SUBGRAPHS.map((name) => ({ name, url: urls[name], typeDefs: parse(SDL[name]) })));
  if (result.errors) throw new Error(`composition failed: ${result.errors.map((e) => e.message).join('; ')}`);
  return result.supergraphSdl;
}

export interface SubgraphCounters {
  requests: number;
  representations: number;
}

export interface RunningSubgraphs {
  urls: Record<SubgraphName, string>;
  /** Requests and representations received so far, per subgraph. */
  counters(): Record<SubgraphName, SubgraphCounters>;
  close(): Promise<void>;
}

/** A minimal GraphQL-over-HTTP server: POST JSON, documents parsed and validated once. */
function serve(schema: GraphQLSchema, counters: SubgraphCounters): Server {
  const documents = new Map<string, DocumentNode | { errors: readonly { message: string }[] }>();
  return createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const reply = (status: number, body: unknown) => {
        const text = JSON.stringify(body);
        res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      };
      let request: { query?: string; variables?: Record<string, unknown>; operationName?: string };
      try {
        request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return reply(400, { errors: [{ message: 'body is not JSON' }] });
      }
      if (req.method !== 'POST' || typeof request.query !== 'string') return reply(400, { errors: [{ message: 'expected a POST with a query' }] });
      counters.requests++;
      // Any variable holding entity representations (Hive Gateway renames them when it batches).
      for (const value of Object.values(request.variables ?? {})) {
        if (Array.isArray(value) && (value[0] as { __typename?: unknown } | undefined)?.__typename !== undefined) counters.representations += value.length;
      }
      let document = documents.get(request.query);
      if (!document) {
        try {
          const parsed = parse(request.query);
          const errors = validate(schema, parsed);
          document = errors.length > 0 ? { errors: errors.map((e) => ({ message: e.message })) } : parsed;
        } catch (error) {
          document = { errors: [{ message: (error as Error).message }] };
        }
        documents.set(request.query, document);
      }
      if ('errors' in document) return reply(400, { errors: document.errors });
      void Promise.resolve(execute({ schema, document, variableValues: request.variables ?? {}, ...(request.operationName ? { operationName: request.operationName } : {}) })).then(
        (result) => reply(200, result),
        (error: Error) => reply(500, { errors: [{ message: error.message }] }),
      );
    });
  });
}

/** The four subgraphs on free loopback ports, in this process. */
export async function startSubgraphs(host = '127.0.0.1'): Promise<RunningSubgraphs> {
  const counters = Object.fromEntries(SUBGRAPHS.map((name) => [name, { requests: 0, representations: 0 }])) as Record<SubgraphName, SubgraphCounters>;
  const servers: Server[] = [];
  const urls = {} as Record<SubgraphName, string>;
  for (const name of SUBGRAPHS) {
    const server = serve(subgraphSchema(name), counters[name]);
    server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    servers.push(server);
    urls[name] = `http://${host}:${(server.address() as AddressInfo).port}/graphql`;
  }
  return {
    urls,
    counters: () => structuredClone(counters),
    close: async () => {
      for (const server of servers) {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    },
  };
}
