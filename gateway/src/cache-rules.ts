import { analysisCompletedV1, documentUploadedV1, jobUpdatedV1 } from '@tributary/contracts';
import type { InvalidationRules } from './cache.ts';

/**
 * What each of our events changes, for the gateway's cache. Every rule's event is written by the
 * owner of the data in the transaction that changes it (the outbox), so it can never arrive before
 * the change is visible. Types no such event covers (`Stats`, `ThemeStat`: insights publishes
 * nothing when its view moves) are never cached.
 */
export const productRules: InvalidationRules = {
  // A new document and its job: lists of documents and jobs change.
  'document.uploaded/v1': { schema: documentUploadedV1, types: ['Document', 'Job'], changes: (d) => [{ type: 'Document', id: d.documentId }, { type: 'Job', id: d.jobId }] },
  // `Document.analysis` and the document's place in `similarDocuments` (its embedding is stored with it).
  'analysis.completed/v1': { schema: analysisCompletedV1, types: ['Document'], changes: (d) => [{ type: 'Document', id: d.documentId }] },
  // Every change of the job view is published as job.updated in the same transaction.
  'job.updated/v1': { schema: jobUpdatedV1, types: ['Job'], changes: (d) => [{ type: 'Job', id: d.jobId }] },
};
