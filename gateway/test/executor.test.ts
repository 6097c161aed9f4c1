/**
 * Our plan executor against Apollo Gateway's own, on the same supergraph, the same subgraphs and
 * the same operations: every answer must be the same JSON text, errors included. The subgraphs
 * run in process (LocalGraphQLDataSource) and cover what the executor reproduces: entity fetches
 * with @requires and @provides, nested lists, aliases, fragments on interfaces and unions,
 * @skip/@include (plan conditions), subgraph errors at entity paths, null propagation through
 * non-null fields, an enum value the API schema hides, variable errors, mutations, and the
 * operations it hands to Apollo's executor (introspection).
 */
import { composeServices } from '@apollo/composition';
import { ApolloGateway, LocalGraphQLDataSource, type GraphQLDataSource, type GraphQLDataSourceProcessOptions } from '@apollo/gateway';
import { ApolloServer } from '@apollo/server';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { GraphQLError, parse } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { split } from '../src/executor/batch.ts';
import { INCOMING_OPERATION } from '../src/executor/execute.ts';
import { PlanExecutingGateway } from '../src/executor/index.ts';

const LINK = 'extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key", "@shareable", "@external", "@provides", "@requires", "@inaccessible"])';

const USERS = [
  { id: '1', name: 'Ada', username: 'ada', role: 'ADMIN' },
  { id: '2', name: 'Bob', username: 'bob', role: 'HIDDEN' },
  { id: '3', name: null, username: 'cy', role: 'USER' },
];
const PRODUCTS = [
  { upc: '1', name: 'Table', price: 899, weight: 100 },
  { upc: '2', name: 'Couch', price: 1299, weight: 1000 },
  { upc: '3', name: 'Glass', price: 15, weight: 20 },
  { upc: 'constructor', name: 'Odd', price: 1, weight: 1 },
];
const REVIEWS = [
  { id: 'r1', body: 'Great', product: '1', author: '1' },
  { id: 'r2', body: 'Meh', product: '2', author: '1' },
  { id: 'r3', body: 'Broke', product: '3', author: '2' },
  { id: 'r4', body: 'Odd one', product: 'constructor', author: '3' },
];

const subgraphs = {
  accounts: {
    typeDefs: `${LINK}
      interface Node { id: ID! }
      enum Role { ADMIN USER HIDDEN @inaccessible }
      type Team implements Node { id: ID! name: String }
      union Member = User | Team
      type Query { me: User users: [User!]! node(id: ID!): Node members: [Member] }
      type User implements Node @key(fields: "id") { id: ID! name: String username: String @shareable role: Role }`,
    resolvers: {
      Query: {
        me: () => USERS[0],
        users: () => USERS,
        node: (_: unknown, { id }: { id: string }) => USERS.find((u) => u.id === id) ?? (id === 't1' ? { id: 't1', name: 'Core' } : null),
        members: () => [USERS[0], { id: 't1', name: 'Core' }, USERS[2]],
      },
      Node: { __resolveType: (o: { username?: string }) => (o.username ? 'User' : 'Team') },
      Member: { __resolveType: (o: { username?: string }) => (o.username ? 'User' : 'Team') },
      User: { __resolveReference: (ref: { id: string }) => USERS.find((u) => u.id === ref.id) },
    },
  },
  products: {
    typeDefs: `${LINK}
      type Query { topProducts(first: Int = 3): [Product] product(upc: String!): Product grid: [[Product]] }
      type Mutation { setPrice(upc: String!, price: Int!): Product }
      type Product @key(fields: "upc") { upc: String! name: String price: Int weight: Int }`,
    resolvers: {
      Query: {
        topProducts: (_: unknown, { first }: { first: number }) => PRODUCTS.slice(0, first),
        product: (_: unknown, { upc }: { upc: string }) => PRODUCTS.find((p) => p.upc === upc),
        grid: () => [[PRODUCTS[0], null, PRODUCTS[1]], null, [], [PRODUCTS[3]]],
      },
      Mutation: { setPrice: (_: unknown, { upc, price }: { upc: string; price: number }) => ({ ...PRODUCTS.find((p) => p.upc === upc), price }) },
      Product: { __resolveReference: (ref: { upc: string }) => PRODUCTS.find((p) => p.upc === ref.upc) },
    },
  },
  reviews: {
    typeDefs: `${LINK}
      type Review @key(fields: "id") { id: ID! body: String product: Product author: User @provides(fields: "username") }
      type User @key(fields: "id") { id: ID! username: String @external reviews: [Review] }
      type Product @key(fields: "upc") { upc: String! reviews: [Review!] flaky: String }`,
    resolvers: {
      Review: {
        product: (r: { product: string }) => ({ __typename: 'Product', upc: r.product }),
        author: (r: { author: string }) => ({ __typename: 'User', id: r.author, username: USERS.find((u) => u.id === r.author)!.username }),
      },
      User: {
        __resolveReference: (ref: { id: string }) => ref,
        reviews: (u: { id: string }) => REVIEWS.filter((r) => r.author === u.id),
      },
      Product: {
        __resolveReference: (ref: { upc: string }) => ref,
        reviews: (p: { upc: string }) => REVIEWS.filter((r) => r.product === p.upc),
        flaky: (p: { upc: string }) => {
          if (p.upc === '2') throw new GraphQLError('flaky is down for 2', { extensions: { code: 'SERVICE_UNAVAILABLE' } });
          return `flaky ${p.upc}`;
        },
      },
    },
  },
  inventory: {
    typeDefs: `${LINK}
      type Product @key(fields: "upc") { upc: String! weight: Int @external price: Int @external inStock: Boolean shippingEstimate: Int @requires(fields: "price weight") stock: Int! }`,
    resolvers: {
      Product: {
        __resolveReference: (ref: { upc: string; price?: number; weight?: number }) => {
          if (ref.upc === '3') throw new Error('inventory has no record of 3');
          return ref;
        },
        inStock: (p: { upc: string }) => p.upc !== '2',
        shippingEstimate: (p: { price: number; weight: number }) => (p.price > 1000 ? 0 : p.weight / 2),
        stock: (p: { upc: string }) => (p.upc === 'constructor' ? null : 7),
      },
    },
  },
} as const;

type Name = keyof typeof subgraphs;
const names = Object.keys(subgraphs) as Name[];

const composed = composeServices(names.map((name) => ({ name, url: `http://${name}.local/graphql`, typeDefs: parse(subgraphs[name].typeDefs) })));
if (!composed.supergraphSdl) throw new Error(`composition failed: ${composed.errors?.map((e) => e.message).join('; ')}`);
const supergraphSdl = composed.supergraphSdl;

/** An in-process subgraph that records the `kind` of every request it is sent. */
class Recording extends LocalGraphQLDataSource {
  readonly kinds: string[] = [];
  override process(options: GraphQLDataSourceProcessOptions): ReturnType<LocalGraphQLDataSource['process']> {
    this.kinds.push(options.kind);
    return super.process(options);
  }
}

function services(): Map<string, Recording> {
  return new Map(names.map((name) => [name, new Recording(buildSubgraphSchema({ typeDefs: parse(subgraphs[name].typeDefs), resolvers: subgraphs[name].resolvers as never }))]));
}

let apollo: ApolloServer;
let ours: ApolloServer;
let apolloSources: Map<string, Recording>;
let ourSources: Map<string, Recording>;
/** Operations Apollo's executor planned inside our gateway (the ones ours hands over). */
let handedOver = 0;

beforeAll(async () => {
  apolloSources = services();
  ourSources = services();
  apollo = new ApolloServer({ gateway: new ApolloGateway({ supergraphSdl, buildService: ({ name }) => apolloSources.get(name)! }) });
  const inner = new ApolloGateway({
    supergraphSdl,
    buildService: ({ name }) => ourSources.get(name)!,
    experimental_didResolveQueryPlan: () => void handedOver++,
  });
  ours = new ApolloServer({ gateway: new PlanExecutingGateway({ apollo: inner, services: ourSources as ReadonlyMap<string, GraphQLDataSource> }) });
  await Promise.all([apollo.start(), ours.start()]);
});

afterAll(async () => {
  await Promise.all([apollo?.stop(), ours?.stop()]);
});

/** Both gateways' answers to one request, as the JSON text a client would receive. */
async function both(query: string, variables?: Record<string, unknown>, operationName?: string): Promise<{ apollo: string; ours: string; handedOver: boolean }> {
  const request = { query, ...(variables ? { variables } : {}), ...(operationName ? { operationName } : {}) };
  const before = handedOver;
  const [a, b] = await Promise.all([apollo.executeOperation(request), ours.executeOperation(request)]);
  return { apollo: JSON.stringify(a.body), ours: JSON.stringify(b.body), handedOver: handedOver !== before };
}

const NESTED = `query Nested {
  users { id username name reviews { id body product { inStock name price shippingEstimate upc weight reviews { id body author { id username name reviews { id body product { inStock name price shippingEstimate upc weight } } } } } } }
  topProducts { name price inStock shippingEstimate upc weight reviews { id body author { id username name } } }
}`;

describe('our plan executor answers as Apollo Gateway does', () => {
  const cases: [string, string, (Record<string, unknown> | undefined)?, string?][] = [
    ['the nested benchmark shape: entities through four subgraphs, @requires, @provides, an entity that fails', NESTED],
    ['aliases, the same field twice, __typename and its aliases', `{ a: me { who: name id __typename t: __typename } b: me { name username reviews { id } } me { name } me { id reviews { body } } }`],
    ['fragments on an interface and a union, named and inline', `query F { node(id: "1") { ...N ... on User { name reviews { id } } } team: node(id: "t1") { ...N ... on Team { name } } members { __typename ... on User { id username } ... on Team { id name } } } fragment N on Node { id __typename }`],
    ['@skip and @include on fields of other subgraphs, true', `query S($r: Boolean!, $s: Boolean = false) { users { id reviews @include(if: $r) { id product @skip(if: $s) { name inStock } } name @skip(if: $r) } }`, { r: true }],
    ['@skip and @include on fields of other subgraphs, false', `query S($r: Boolean!, $s: Boolean = false) { users { id reviews @include(if: $r) { id product @skip(if: $s) { name inStock } } name @skip(if: $r) } }`, { r: false, s: true }],
    ['a subgraph error at an entity path, with its code', `{ topProducts(first: 4) { upc flaky name } }`],
    ['entity errors inside fetches sent as one request, each at its own path', `{ a: topProducts(first: 4) { upc flaky } b: topProducts(first: 2) { flaky name } }`],
    ['null propagation from a non-null field an entity fetch could not fill', `{ topProducts(first: 4) { upc stock name } }`],
    ['an enum value the API schema does not have', `{ users { id role } }`],
    ['a variable that is missing', `query V($upc: String!) { product(upc: $upc) { name } }`, {}],
    ['a variable of the wrong type', `query V($upc: String!) { product(upc: $upc) { name } }`, { upc: 7 }],
    ['variables passed through to a subgraph, with an argument default', `query V($upc: String!) { product(upc: $upc) { name inStock reviews { body } } topProducts { upc } }`, { upc: '1' }],
    ['a mutation followed by entity fetches', `mutation { setPrice(upc: "1", price: 5) { upc price shippingEstimate inStock } }`],
    ['the operation named among several', `query A { me { id } } query B { users { name reviews { body } } }`, undefined, 'B'],
    ['lists of lists with null elements and null lists on the way to entities', `{ grid { upc inStock reviews { id author { name } } } }`],
    ['an inherited property name as an entity key', `{ topProducts(first: 4) { upc reviews { id product { upc name } } } }`],
  ];
  for (const [what, query, variables, operationName] of cases) {
    it(what, async () => {
      const answer = await both(query, variables, operationName);
      expect(answer.ours).toBe(answer.apollo);
      expect(answer.handedOver).toBe(false);
    });
  }

  it('hands introspection to Apollo, with the same answer', async () => {
    const answer = await both(`{ __schema { queryType { name } } __type(name: "Role") { enumValues { name } } me { name } }`);
    expect(answer.ours).toBe(answer.apollo);
    expect(answer.handedOver).toBe(true);
  });

  it('sends the entity fetches of one operation that start together as one request', async () => {
    for (const source of [...apolloSources.values(), ...ourSources.values()]) source.kinds.length = 0;
    const answer = await both(NESTED);
    expect(answer.ours).toBe(answer.apollo);
    const requests = (sources: Map<string, Recording>) => Object.fromEntries([...sources].map(([name, source]) => [name, source.kinds.length]));
    // Apollo's plan fetches the same entity fields at several paths in parallel branches:
    // name/price/weight from products and inStock from inventory at two paths each (then
    // shippingEstimate at both), and the authors' names from accounts in both halves.
    expect(requests(apolloSources)).toEqual({ accounts: 3, products: 3, reviews: 2, inventory: 5 });
    expect(requests(ourSources)).toEqual({ accounts: 2, products: 2, reviews: 2, inventory: 3 });
  });

  it('sends subgraphs the request kind Apollo sends for a client operation', async () => {
    await both(NESTED);
    const apolloKinds = new Set([...apolloSources.values()].flatMap((s) => s.kinds));
    const ourKinds = new Set([...ourSources.values()].flatMap((s) => s.kinds));
    expect([...apolloKinds]).toEqual([INCOMING_OPERATION]);
    expect([...ourKinds]).toEqual([INCOMING_OPERATION]);
  });
});

describe('splitting a batched answer', () => {
  const members = [{ representations: [1, 2] }, { representations: [3] }, { representations: [4, 5] }];
  const error = (message: string, path?: (string | number)[]) => ({ message, ...(path ? { path } : {}) });

  it('gives each fetch its slice of _entities and the errors about its entities, re-indexed', () => {
    const parts = split({ data: { _entities: ['a', 'b', 'c', 'd', 'e'] }, errors: [error('on c', ['_entities', 2, 'x']), error('on e', ['_entities', 4]), error('on a', ['_entities', 0, 'y', 1])] }, members);
    expect(parts).toEqual([
      { data: { _entities: ['a', 'b'] }, errors: [error('on a', ['_entities', 0, 'y', 1])] },
      { data: { _entities: ['c'] }, errors: [error('on c', ['_entities', 0, 'x'])] },
      { data: { _entities: ['d', 'e'] }, errors: [error('on e', ['_entities', 1])] },
    ]);
  });

  it('gives an error about no entity, and an answer without data, to every fetch', () => {
    const whole = error('subgraph down');
    expect(split({ data: null, errors: [whole] }, members)).toEqual([
      { data: null, errors: [whole] },
      { data: null, errors: [whole] },
      { data: null, errors: [whole] },
    ]);
    expect(split({ data: { _entities: ['a', 'b', 'c', 'd', 'e'] }, errors: [error('at _entities', ['_entities'])] }, members).map((p) => p.errors)).toEqual([
      [error('at _entities', ['_entities'])],
      [error('at _entities', ['_entities'])],
      [error('at _entities', ['_entities'])],
    ]);
  });

  it('hands a wrong number of entities to every fetch as it came, for each to report', () => {
    const wrong = { data: { _entities: ['a'] } };
    expect(split(wrong, members)).toEqual([wrong, wrong, wrong]);
  });
});
