import { eventDirectiveDefinitions, eventsSpecLink } from '@tributary/core/bindings';
import { gql } from 'graphql-tag';

export const typeDefs = gql`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@key", "@shareable", "@composeDirective"]) ${eventsSpecLink}
  ${eventDirectiveDefinitions}

  "An ISO-8601 date-time with offset, e.g. 2026-11-28T08:00:00.000Z."
  scalar DateTime

  # \`job(id:)\` is answered by documents, which creates every job: this view may lag behind it.
  type Query {
    "The caller's jobs, newest first, optionally of one status."
    jobs(status: JobStatus, first: Int = 20, after: String): JobConnection!
  }

  """
  Served by the gateway over graphql-ws (same path as HTTP), from the \`job.updated\` events this
  service publishes with every change of its view: the gateway resolves the whole selection
  through federation (\`job(id:)\`) when the job changes.
  """
  type Subscription {
    "One message when the job is COMPLETED, FAILED or CANCELLED (at once if it already is), then complete."
    jobCompleted(jobId: ID!): Job!
      @eventSubscription(
        events: ["job.updated/v1"]
        match: ["jobId = $jobId"]
        where: "status in [COMPLETED, FAILED, CANCELLED]"
        entity: "Job"
        key: "jobId"
        lookup: "job(id: $key)"
        send: "COMPLETION"
        completeWhen: "status in [COMPLETED, FAILED, CANCELLED]"
      )
    "A message on every state change of the job, until it is COMPLETED, FAILED or CANCELLED."
    jobUpdated(jobId: ID!): Job!
      @eventSubscription(
        events: ["job.updated/v1"]
        match: ["jobId = $jobId"]
        entity: "Job"
        key: "jobId"
        lookup: "job(id: $key)"
        send: "CHANGES"
        state: "status attempts progress { done total }"
        completeWhen: "status in [COMPLETED, FAILED, CANCELLED]"
      )
  }

  type Job @key(fields: "id") @changedBy(event: "job.updated/v1", key: "jobId") {
    id: ID!
    status: JobStatus! @shareable
    "Analysis attempts made so far."
    attempts: Int! @shareable
    "Why the job failed (status FAILED)."
    error: JobError @shareable
    createdAt: DateTime! @shareable
    updatedAt: DateTime! @shareable
    "When the job ended: COMPLETED, FAILED or CANCELLED."
    completedAt: DateTime @shareable
    "The priority it was uploaded with."
    priority: JobPriority! @shareable
    "A long document's analysis, while it runs: model calls done of the total (its chunks, then the combining call). Null until it reports any (a short document never does)."
    progress: JobProgress
    document: Document! @shareable
  }

  type JobProgress {
    done: Int!
    total: Int!
  }

  enum JobStatus {
    QUEUED
    RUNNING
    COMPLETED
    FAILED
    "Cancelled (cancelJob) before its analysis ended: terminal, like COMPLETED and FAILED."
    CANCELLED
  }

  # Word for word in documents' schema too (and in analysis', if it declares it): an enum used as
  # an input must be the same in every subgraph, and its descriptions should be too.
  """
  A job's priority within its tenant's own work: the analysis stage starts a tenant's HIGH jobs
  before its NORMAL ones and those before its LOW ones, with aging, so LOW work is never starved.
  Priority orders a tenant's own work only: it never lets one tenant's jobs overtake another
  tenant's, which take turns whatever their priorities.
  """
  enum JobPriority {
    "Before the tenant's NORMAL and LOW work."
    HIGH
    "The default."
    NORMAL
    "After the tenant's HIGH and NORMAL work, yet never starved (aging): for a bulk import."
    LOW
  }

  type JobError @shareable {
    code: String!
    message: String!
  }

  type JobConnection {
    edges: [JobEdge!]!
    pageInfo: PageInfo!
  }

  type JobEdge {
    cursor: String!
    node: Job!
  }

  type PageInfo @shareable {
    hasNextPage: Boolean!
    endCursor: String
  }

  type Document @key(fields: "id", resolvable: false) {
    id: ID!
  }
`;
