import { eventDirectiveDefinitions, eventsSpecLink } from '@tributary/core/bindings';
import { gql } from 'graphql-tag';

export const typeDefs = gql`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@key", "@external", "@provides", "@composeDirective"]) ${eventsSpecLink}
  ${eventDirectiveDefinitions}

  type Query {
    "The caller's documents most similar to this one (cosine of their embeddings), best first."
    similarDocuments(documentId: ID!, first: Int = 5): [SimilarDocument!]!
  }

  type Mutation {
    """
    Cancel a job: a QUEUED one is never analysed, a RUNNING one's model call is aborted; either
    becomes CANCELLED, its one terminal state. A job whose document has not reached analysis yet
    is cancelled when it does. Cancelling a CANCELLED job again is a no-op; a COMPLETED or FAILED
    one fails with JOB_ALREADY_FINISHED.
    """
    cancelJob(id: ID!): Job! @provides(fields: "status")
  }

  type Subscription {
    "One message per newly analysed document of the caller's tenant, the whole selection resolved through federation."
    documentAnalyzed: Document! @eventSubscription(events: ["analysis.completed/v1"], entity: "Document", key: "documentId", lookup: "document(id: $key)")
  }

  # Where a job stands in the analysis queue; its other fields are the jobs view's.
  type Job @key(fields: "id") {
    id: ID!
    status: JobStatus! @external
    """
    For a QUEUED job: how many documents will be started before it under the current order (fair
    share across tenants, then its tenant's priorities). Null once it runs or ends. It moves as
    other documents start, with no event to say so: never cached by the gateway.
    """
    queuePosition: Int @volatile
  }

  enum JobStatus {
    QUEUED
    RUNNING
    COMPLETED
    FAILED
    CANCELLED
  }

  type SimilarDocument {
    document: Document!
    "Cosine similarity, -1..1."
    score: Float!
  }

  # Its analysis (and its place among similar documents) changes when the analysis completes.
  type Document @key(fields: "id") @changedBy(event: "analysis.completed/v1", key: "documentId") {
    id: ID!
    "The AI analysis; null until the job has COMPLETED."
    analysis: Analysis
  }

  type Analysis {
    summary: String!
    themes: [Theme!]!
    keywords: [String!]!
    sentiment: Sentiment!
    "Who produced it: openai, offline, …"
    provider: String!
    model: String!
    tokens: TokenUsage!
    "Whether the result came from the response cache (no tokens spent)."
    cached: Boolean!
    "Model calls the document was analysed in: a long document is split into chunks, each analysed, then combined (1 for a short one)."
    chunks: Int!
    "Whether text beyond the most chunks analysed (AI_MAX_CHUNKS) was left out of the analysis."
    truncated: Boolean!
  }

  type Theme {
    name: String!
    "0..1, the strongest theme of the document scores highest."
    score: Float!
  }

  type Sentiment {
    label: SentimentLabel!
    "-1 (negative) .. 1 (positive)."
    score: Float!
  }

  enum SentimentLabel {
    POSITIVE
    NEUTRAL
    NEGATIVE
  }

  type TokenUsage {
    prompt: Int!
    completion: Int!
  }
`;
