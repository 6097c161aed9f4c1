import { gql } from 'graphql-tag';

export const typeDefs = gql`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@shareable"])

  "An ISO-8601 date-time with offset, e.g. 2026-11-28T08:00:00.000Z."
  scalar DateTime

  "What a webhook can be told about."
  enum WebhookEventType {
    "A job ended COMPLETED (body type \`job.completed\`)."
    JOB_COMPLETED
    "A job ended FAILED (body type \`job.failed\`)."
    JOB_FAILED
    "A job ended CANCELLED, by cancelJob (body type \`job.cancelled\`)."
    JOB_CANCELLED
  }

  "An endpoint of the caller's tenant that receives signed POSTs in the Standard Webhooks format."
  type Webhook {
    id: ID!
    url: String!
    events: [WebhookEventType!]!
    createdAt: DateTime!
  }

  enum WebhookDeliveryStatus {
    "Not delivered yet: the first attempt is on its way, or a retry is waiting."
    PENDING
    "A 2xx answer was received."
    DELIVERED
    "Every attempt failed; no more are made."
    FAILED
  }

  "One event sent (or being sent) to one webhook, with its attempts."
  type WebhookDelivery {
    "Also the \`webhook-id\` header of every attempt."
    id: ID!
    event: WebhookEventType!
    status: WebhookDeliveryStatus!
    "Attempts made so far."
    attempts: Int!
    "The HTTP status of the last attempt, if the receiver answered."
    responseStatus: Int
    "Why the last attempt failed, if it did."
    lastError: String
    createdAt: DateTime!
    deliveredAt: DateTime
  }

  type WebhookDeliveryEdge {
    cursor: String!
    node: WebhookDelivery!
  }

  type WebhookDeliveryConnection {
    edges: [WebhookDeliveryEdge!]!
    pageInfo: PageInfo!
  }

  type PageInfo @shareable {
    hasNextPage: Boolean!
    endCursor: String
  }

  input CreateWebhookInput {
    "An http or https URL; its host must resolve to public addresses only."
    url: String!
    events: [WebhookEventType!]!
  }

  type CreateWebhookPayload {
    webhook: Webhook!
    "The signing secret (\`whsec_…\`), shown only here: keep it to verify deliveries."
    secret: String!
  }

  type RotateWebhookSecretPayload {
    "The new signing secret, shown only here. The previous one also signs deliveries for 24 hours."
    secret: String!
  }

  type Query {
    "The caller's webhooks, newest first."
    webhooks: [Webhook!]!
    "Deliveries to one of the caller's webhooks, newest first."
    webhookDeliveries(webhookId: ID!, first: Int = 20, after: String): WebhookDeliveryConnection!
  }

  type Mutation {
    "Register an endpoint for the caller's tenant."
    createWebhook(input: CreateWebhookInput!): CreateWebhookPayload!
    "Remove a webhook and its deliveries; pending retries are dropped."
    deleteWebhook(id: ID!): Boolean!
    "Replace a webhook's secret."
    rotateWebhookSecret(id: ID!): RotateWebhookSecretPayload!
  }
`;
