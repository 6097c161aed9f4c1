/**
 * The reference answer to the benchmark query, computed without any gateway: a plain
 * (non-federated) schema whose resolvers call the subgraphs directly over HTTP, one entity at
 * a time (`_entities` with a single representation, or the root fields). Slow and obviously
 * right: every gateway's answer must equal it.
 */
import { buildSchema, graphql } from 'graphql';
import { BENCH_QUERY, type SubgraphName } from './fixture.ts';

const API = buildSchema(`
  type Query { users: [User]  topProducts(first: Int = 5): [Product] }
  type User { id: ID!  name: String  username: String  reviews: [Review] }
  type Review { id: ID!  body: String  product: Product  author: User }
  type Product { upc: String!  name: String  price: Int  weight: Int  inStock: Boolean  shippingEstimate: Int  reviews: [Review] }
`);

type Json = Record<string, any>;

export async function referenceAnswer(urls: Record<SubgraphName, string>): Promise<unknown> {
  const cache = new Map<string, Promise<Json>>();
  const call = (subgraph: SubgraphName, query: string, variables: Json = {}): Promise<Json> => {
    const key = `${subgraph} ${query} ${JSON.stringify(variables)}`;
    let result = cache.get(key);
    if (!result) {
      result = (async () => {
        const response = await fetch(urls[subgraph], { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query, variables }) });
        const body = (await response.json()) as { data?: Json; errors?: unknown[] };
        if (!response.ok || body.errors || !body.data) throw new Error(`${subgraph} answered ${response.status}: ${JSON.stringify(body)}`);
        return body.data;
      })();
      cache.set(key, result);
    }
    return result;
  };
  const entity = async (subgraph: SubgraphName, representation: Json, selection: string): Promise<Json> => {
    const data = await call(subgraph, `query($representations:[_Any!]!){_entities(representations:$representations){...on ${representation.__typename}{${selection}}}}`, { representations: [representation] });
    return data._entities[0] as Json;
  };
  const user = (id: string) => entity('accounts', { __typename: 'User', id }, 'name username');
  const review = (id: string) => entity('reviews', { __typename: 'Review', id }, 'body product { upc } author { id }');
  const product = (upc: string) => entity('products', { __typename: 'Product', upc }, 'name price weight');
  const inventory = async (upc: string) => {
    const { price, weight } = await product(upc);
    return entity('inventory', { __typename: 'Product', upc, price, weight }, 'inStock shippingEstimate');
  };
  const resolvers: Record<string, Record<string, (parent: Json, args: Json) => unknown>> = {
    Query: {
      users: async () => (await call('accounts', '{ users { id } }')).users,
      topProducts: async (_, { first }) => (await call('products', 'query($first:Int){ topProducts(first: $first) { upc } }', { first })).topProducts,
    },
    User: {
      id: (u) => u.id,
      name: async (u) => (await user(u.id)).name,
      username: async (u) => (await user(u.id)).username,
      reviews: async (u) => (await entity('reviews', { __typename: 'User', id: u.id }, 'reviews { id }')).reviews,
    },
    Review: {
      id: (r) => r.id,
      body: async (r) => (await review(r.id)).body,
      product: async (r) => (await review(r.id)).product,
      author: async (r) => (await review(r.id)).author,
    },
    Product: {
      upc: (p) => p.upc,
      name: async (p) => (await product(p.upc)).name,
      price: async (p) => (await product(p.upc)).price,
      weight: async (p) => (await product(p.upc)).weight,
      inStock: async (p) => (await inventory(p.upc)).inStock,
      shippingEstimate: async (p) => (await inventory(p.upc)).shippingEstimate,
      reviews: async (p) => (await entity('reviews', { __typename: 'Product', upc: p.upc }, 'reviews { id }')).reviews,
    },
  };
  const result = await graphql({
    schema: API,
    source: BENCH_QUERY,
    fieldResolver: (parent, args, _context, info) => resolvers[info.parentType.name]![info.fieldName]!(parent as Json, args),
  });
  if (result.errors) throw new Error(`reference query failed: ${result.errors.map((e) => e.message).join('; ')}`);
  return JSON.parse(JSON.stringify(result.data));
}
