import { buildSubgraphSchema } from '@apollo/subgraph';
import { graphql, parse } from 'graphql';
import { describe, expect, it } from 'vitest';
import type { ResolverMap } from '../src/graphql.ts';

/**
 * The guard for ResolverMap, our copy of @apollo/subgraph's resolver map type (which it exports
 * only from dist/): `pnpm typecheck` fails here if buildSubgraphSchema stops taking it unconverted.
 */
describe('ResolverMap', () => {
  it('is what buildSubgraphSchema takes: field resolvers, subscribe/resolve pairs and enum values', async () => {
    const resolvers: ResolverMap<unknown> = {
      Query: { hello: (_parent, args: { name: string }) => `hello ${args.name}`, mood: () => 'HAPPY_VALUE' },
      Subscription: { ticks: { subscribe: () => (async function* () {})(), resolve: (n: number) => n } },
      Mood: { HAPPY: 'HAPPY_VALUE' },
    };
    const schema = buildSubgraphSchema({
      typeDefs: parse('enum Mood { HAPPY } type Query { hello(name: String!): String! mood: Mood! } type Subscription { ticks: Int! }'),
      resolvers,
    });
    expect(await graphql({ schema, source: '{ hello(name: "you") mood }' })).toEqual({ data: { hello: 'hello you', mood: 'HAPPY' } });
  });
});
