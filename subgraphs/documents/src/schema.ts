import { eventDirectiveDefinitions, eventsSpecLink } from '@tributary/core/bindings';
import { gql } from 'graphql-tag';

export const typeDefs = gql`
  extend schema
    @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@key", "@shareable", "@external", "@provides", "@composeDirective"])
    ${eventsSpecLink}
  ${eventDirectiveDefinitions}

  "An ISO-8601 date-time with offset, e.g. 2026-11-28T08:00:00.000Z."
  scalar DateTime

  """
  A file, sent as a part of a multipart request (the GraphQL multipart request spec,
  https://github.com/jaydenseric/graphql-multipart-request-spec) through the gateway. The
  gateway stores each part first; the value that reaches a resolver is its reference.
  """
  scalar Upload

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

  "Exactly one of \`content\` and \`file\`."
  input UploadDocumentInput {
    title: String!
    "The text itself (at most DOCUMENT_MAX_BYTES, UTF-8)."
    content: String
    "The content's type: text/plain (default), text/markdown or text/html; markup is stripped before analysis. Not for files, whose type is read from their bytes."
    contentType: String
    """
    A PDF, DOCX, HTML, Markdown or plain-text file (at most DOCUMENT_MAX_FILE_BYTES), in a
    multipart request. Its type is detected from its bytes; its text is what is analysed.
    """
    file: Upload
    "The job's priority within the tenant's own work (see JobPriority). With an Idempotency-Key, another priority is another request."
    priority: JobPriority = NORMAL
  }

  type UploadDocumentPayload {
    document: Document!
    "The analysis job. Its state at upload time comes from this service, before the job view has seen it."
    job: Job! @provides(fields: "status attempts error { code message } createdAt updatedAt completedAt")
  }

  type Document @key(fields: "id") @changedBy(event: "document.uploaded/v1", key: "documentId") {
    id: ID!
    title: String!
    "The content as uploaded; for a file, the text read from it."
    content: String!
    "text/plain, text/markdown, text/html, or for a file the type detected from its bytes (application/pdf, application/vnd.openxmlformats-officedocument.wordprocessingml.document, or a text type)."
    contentType: String!
    "Size of the content in bytes (UTF-8)."
    size: Int!
    "The original file, for a document uploaded as one; null for text uploads."
    file: DocumentFile
    createdAt: DateTime!
    "The analysis job started by the upload."
    job: Job!
  }

  "A document's original file, as uploaded."
  type DocumentFile {
    "The file's name as the client sent it (its last path segment)."
    name: String!
    "The type detected from its bytes."
    contentType: String!
    "Size in bytes."
    size: Int!
    "SHA-256 of the bytes, hex."
    sha256: String!
    "Where the gateway serves it: a path on the API's origin (GET with the bearer token), e.g. /files/<id>."
    downloadUrl: String!
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
    "The priority it was uploaded with."
    priority: JobPriority! @shareable
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
    "Cancelled (cancelJob) before its analysis ended: terminal, like COMPLETED and FAILED."
    CANCELLED
  }

  # Word for word in jobs' schema too (and in analysis', if it declares it): an enum used as an
  # input must be the same in every subgraph, and its descriptions should be too.
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
`;
