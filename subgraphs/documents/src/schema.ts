import { eventDirectiveDefinitions, eventsSpecLink } from '@tributary/core/bindings';
import { gql } from 'graphql-tag';

export const typeDefs = gql`
  extend schema
    @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@key", "@shareable", "@external", "@provides", "@composeDirective"])
    ${eventsSpecLink}
  ${eventDirectiveDefinitions}

  "An ISO-8601 date-time with offset, e.g. 2026-11-28T08:00:00.000Z."
  scalar DateTime

  type Query {
    "A document of the caller's tenant; null when there is none with this id."
    document(id: ID!): Document
    "The caller's documents, newest first."
    documents(first: Int = 20, after: String): DocumentConnection!
    """
    A job of the caller's tenant; null when there is none with this id. Answered here, where
    every job is created with its upload: an id \`uploadDocument\` returned is known at once,
    however far behind the job view is (which then reports the job as QUEUED at upload).
    """
    job(id: ID!): Job
  }

  type Mutation {
    """
    Store a document and queue its analysis. Answers at once: the job is QUEUED, and
    \`jobCompleted(jobId)\` tells when the analysis is done.
    """
    uploadDocument(input: UploadDocumentInput!): UploadDocumentPayload!
  }

  input UploadDocumentInput {
    title: String!
    content: String!
    "text/plain (default), text/markdown or text/html; markup is stripped before analysis."
    contentType: String
  }

  type UploadDocumentPayload {
    document: Document!
    "The analysis job. Its state at upload time comes from this service, before the job view has seen it."
    job: Job! @provides(fields: "status attempts error { code message } createdAt updatedAt completedAt")
  }

  type Document @key(fields: "id") @changedBy(event: "document.uploaded/v1", key: "documentId") {
    id: ID!
    title: String!
    "The content as uploaded."
    content: String!
    contentType: String!
    "Size of the content in bytes (UTF-8)."
    size: Int!
    createdAt: DateTime!
    "The analysis job started by the upload."
    job: Job!
  }

  type DocumentConnection {
    edges: [DocumentEdge!]!
    pageInfo: PageInfo!
  }

  type DocumentEdge {
    cursor: String!
    node: Document!
  }

  type PageInfo @shareable {
    hasNextPage: Boolean!
    endCursor: String
  }

  type Job @key(fields: "id") @changedBy(event: "document.uploaded/v1", key: "jobId") {
    id: ID!
    document: Document! @shareable
    status: JobStatus! @external
    attempts: Int! @external
    error: JobError @external
    createdAt: DateTime! @external
    updatedAt: DateTime! @external
    completedAt: DateTime @external
  }

  enum JobStatus {
    QUEUED
    RUNNING
    COMPLETED
    FAILED
  }

  type JobError @shareable {
    code: String!
    message: String!
  }
`;
