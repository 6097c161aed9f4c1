import { eventDirectiveDefinitions, eventsSpecLink } from '@tributary/core/bindings';
import { gql } from 'graphql-tag';

export const typeDefs = gql`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@shareable", "@composeDirective"]) ${eventsSpecLink}
  ${eventDirectiveDefinitions}

  "An ISO-8601 date-time with offset, e.g. 2026-11-28T08:00:00.000Z."
  scalar DateTime

  type Query {
    "The caller's most frequent themes across analysed documents."
    themes(first: Int = 10): [ThemeStat!]!
    "Counts over the caller's documents whose analysis ended."
    stats: Stats!
  }

  type Subscription {
    "A message whenever the caller's aggregates change (a fold of ended analyses)."
    statsUpdated: Stats! @eventSubscription(events: ["insights.updated/v1"], entity: "Stats", lookup: "stats")
  }

  # Every change of the aggregates is published as insights.updated, in the fold's transaction.
  type ThemeStat @changedBy(event: "insights.updated/v1") {
    name: String!
    documentCount: Int!
    averageScore: Float!
    lastSeenAt: DateTime!
  }

  type Stats @changedBy(event: "insights.updated/v1") {
    "Documents whose analysis ended (analyzed + failed + cancelled)."
    documents: Int!
    analyzed: Int!
    failed: Int!
    "Documents whose job was cancelled (cancelJob) before its analysis ended."
    cancelled: Int!
    "The most frequent themes, as \`themes\` (a \`statsUpdated\` message can carry them)."
    themes(first: Int = 10): [ThemeStat!]!
  }
`;
