import { z } from 'zod';

/**
 * Event contracts: one zod schema per event type and version.
 * A new incompatible shape is a new version (`v2`) next to this one, never an edit of `v1`.
 */

const id = z.string().min(1).max(128);
const isoTime = z.iso.datetime({ offset: true });
const tokenCounts = z.object({ prompt: z.number().int().min(0), completion: z.number().int().min(0) });

/**
 * A job's priority within its tenant's own work: HIGH before NORMAL before LOW, with aging so LOW
 * work is never starved. It never lets one tenant's work overtake another tenant's.
 */
export const jobPriorityV1 = z.enum(['HIGH', 'NORMAL', 'LOW']);

export const documentUploadedV1 = z.object({
  documentId: id,
  jobId: id,
  title: z.string().min(1),
  /** The text to analyse, markup already stripped (event-carried state transfer). */
  text: z.string().min(1),
  contentType: z.enum(['text/plain', 'text/markdown', 'text/html']),
  uploadedBy: z.string().min(1).optional(),
  uploadedAt: isoTime,
  /** The job's priority as uploaded; absent (events written before it existed) means NORMAL. */
  priority: jobPriorityV1.optional(),
});

export const analysisStartedV1 = z.object({
  documentId: id,
  jobId: id,
  attempt: z.number().int().min(1),
  startedAt: isoTime,
});

/** A long document's analysis moving on: calls done of the total (its chunks, then the combining one). */
export const analysisProgressV1 = z
  .object({
    documentId: id,
    jobId: id,
    done: z.number().int().min(0),
    total: z.number().int().min(1),
    at: isoTime,
  })
  .refine((p) => p.done <= p.total, { message: 'done must not exceed total', path: ['done'] });

export const themeScoreV1 = z.object({ name: z.string().min(1), score: z.number().min(0).max(1) });

export const analysisCompletedV1 = z.object({
  documentId: id,
  jobId: id,
  summary: z.string(),
  themes: z.array(themeScoreV1),
  keywords: z.array(z.string()),
  sentiment: z.object({ label: z.enum(['POSITIVE', 'NEUTRAL', 'NEGATIVE']), score: z.number().min(-1).max(1) }),
  provider: z.string().min(1),
  model: z.string().min(1),
  tokens: tokenCounts,
  /** Attempts it took, the successful one included. */
  attempts: z.number().int().min(1),
  completedAt: isoTime,
});

export const errorInfoV1 = z.object({ code: z.string().min(1), message: z.string() });

export const analysisFailedV1 = z.object({
  documentId: id,
  jobId: id,
  error: errorInfoV1,
  attempts: z.number().int().min(1),
  failedAt: isoTime,
});

/**
 * The job's cancellation (`cancelJob`), its terminal event: published once per cancelled job, and
 * never beside `analysis.completed` or `analysis.failed` for the same job.
 */
export const analysisCancelledV1 = z.object({
  documentId: id,
  jobId: id,
  /** Model-call attempts started before the cancel (0 for a job cancelled while QUEUED). */
  attempts: z.number().int().min(0),
  /** Tokens spent before the cancel (a RUNNING call's so far included). */
  tokens: tokenCounts,
  cancelledAt: isoTime,
});

/** COMPLETED, FAILED and CANCELLED are terminal. */
export const jobStatusV1 = z.enum(['QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED']);

export const jobUpdatedV1 = z.object({
  jobId: id,
  documentId: id,
  status: jobStatusV1,
  attempts: z.number().int().min(0),
  error: errorInfoV1.nullable(),
  createdAt: isoTime,
  updatedAt: isoTime,
  completedAt: isoTime.nullable(),
  /** A long document's analysis progress (calls done of the total); absent or null when none was reported. */
  progress: z.object({ done: z.number().int().min(0), total: z.number().int().min(1) }).nullable().optional(),
});

/**
 * A tenant's aggregates after a fold of analysis results that changed them: one per tenant and
 * batch, published in the fold's transaction. The counts are the tenant's totals after the fold.
 */
export const insightsUpdatedV1 = z.object({
  /** Documents whose analysis ended, `analyzed + failed + cancelled`. */
  documents: z.number().int().min(0),
  analyzed: z.number().int().min(0),
  failed: z.number().int().min(0),
  /** Documents whose job was cancelled; absent (events written before it existed) means 0. */
  cancelled: z.number().int().min(0).optional(),
  /** Names of the themes whose stats this fold changed, lower-cased as stored. */
  themes: z.array(z.string()),
  updatedAt: isoTime,
});

/**
 * One webhook delivery to make: written by the webhooks service in the transaction that creates
 * the delivery row (which holds the payload, the endpoint and the attempts), and consumed by its
 * own sender, whose retry tiers are the delivery's retries.
 */
export const webhookDeliveryV1 = z.object({
  deliveryId: id,
  webhookId: id,
});

/**
 * Registry of every contract, keyed by `dataschema` (`<type>/v<n>`).
 * Producers pick the version they write; consumers accept every registered version of a type.
 */
export const contracts = {
  'document.uploaded/v1': documentUploadedV1,
  'analysis.started/v1': analysisStartedV1,
  'analysis.progress/v1': analysisProgressV1,
  'analysis.completed/v1': analysisCompletedV1,
  'analysis.failed/v1': analysisFailedV1,
  'analysis.cancelled/v1': analysisCancelledV1,
  'job.updated/v1': jobUpdatedV1,
  'insights.updated/v1': insightsUpdatedV1,
  'webhook.delivery/v1': webhookDeliveryV1,
} as const;

export type DataSchema = keyof typeof contracts;
export type EventType = DataSchema extends `${infer T}/v${string}` ? T : never;
export type EventData<S extends DataSchema> = z.infer<(typeof contracts)[S]>;

/** The version each producer writes today. */
export const currentVersion = {
  'document.uploaded': 'document.uploaded/v1',
  'analysis.started': 'analysis.started/v1',
  'analysis.progress': 'analysis.progress/v1',
  'analysis.completed': 'analysis.completed/v1',
  'analysis.failed': 'analysis.failed/v1',
  'analysis.cancelled': 'analysis.cancelled/v1',
  'job.updated': 'job.updated/v1',
  'insights.updated': 'insights.updated/v1',
  'webhook.delivery': 'webhook.delivery/v1',
} as const satisfies Record<EventType, DataSchema>;

export type DocumentUploaded = EventData<'document.uploaded/v1'>;
export type AnalysisStarted = EventData<'analysis.started/v1'>;
export type AnalysisProgress = EventData<'analysis.progress/v1'>;
export type AnalysisCompleted = EventData<'analysis.completed/v1'>;
export type AnalysisFailed = EventData<'analysis.failed/v1'>;
export type AnalysisCancelled = EventData<'analysis.cancelled/v1'>;
export type JobPriority = z.infer<typeof jobPriorityV1>;
export type JobUpdated = EventData<'job.updated/v1'>;
export type InsightsUpdated = EventData<'insights.updated/v1'>;
export type WebhookDelivery = EventData<'webhook.delivery/v1'>;
