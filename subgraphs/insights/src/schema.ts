import { gql } from 'graphql-tag';

export const typeDefs = gql`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@shareable"])

  "An ISO-8601 date-time with offset, e.g. 2026-11-28T08:00:00.000Z."
  scalar DateTime

  type Query {
    "The caller's most frequent themes across analysed documents."
    themes(first: Int = 10): [ThemeStat!]!
    "Counts over the caller's documents whose analysis finished."
    stats: Stats!
  }

  type ThemeStat {
    name: String!
    documentCount: Int!
    averageScore: Float!
    lastSeenAt: DateTime!
  }

  type Stats {
    "Documents whose analysis finished (analyzed + failed)."
    documents: Int!
    analyzed: Int!
    failed: Int!
  }
`;
