import { isAiError, type Analyzer, type Embedder } from '@tributary/ai';
import { parse, type ParsedEvent } from '@tributary/contracts';
import { errorCode, errorMessage, isUnrecoverable } from '@tributary/core';
import { queryRun, type Database, type EntityManager } from '@tributary/core/db';
import { publish, type NewEvent } from '@tributary/core/events';
import type { Logger } from 'pino';
import { finish, release, renewLease, type Claimed, type UploadEvent } from './queue.ts';

export interface WorkOptions {
  db: Database;
  analyzer: Analyzer;
  embedder: Embedder;
  log: Logger;
  leaseMs: number;
  /** Attempts per document before its job FAILS (the first one counts). */
  maxAttempts: number;
  /** Delays between attempts, ms; the last repeats. */
  retryDelaysMs: readonly number[];
  /** A document was given back for a retry in `ms`: wake the scheduler then. */
  onRetryScheduled(ms: number): void;
}

const SERVICE = 'analysis';

/** A short transaction with the outbox bound to it. */
function transaction<T>(db: Database, work: (em: EntityManager, publishEvents: (events: readonly NewEvent[]) => Promise<unknown>) => Promise<T>): Promise<T> {
  return db.fork().transactional((em) => work(em, (events) => publish(em, SERVICE, events)));
}

/** The `analysis.started` of a claim, published in the claiming transaction. */
export function startedEvent(claimed: Claimed): NewEvent<'analysis.started'> {
  const event = JSON.parse(claimed.event) as Pick<ParsedEvent, 'traceparent' | 'tenantid'>;
  return {
    type: 'analysis.started',
    subject: claimed.documentId,
    tenantId: claimed.tenantId,
    causedBy: event,
    data: { documentId: claimed.documentId, jobId: claimed.jobId, attempt: claimed.attempt, startedAt: new Date().toISOString() },
  };
}

/**
 * Analyse one claimed document with no transaction (or connection) held across the model call,
 * then settle it in one short transaction that deletes its work row, but only while the lease
 * is still this claim's: a cancel or a takeover after expiry deleted or re-leased the row, and
 * this claim then stores nothing. The lease is renewed every third of its length; a renewal
 * that finds it gone aborts the call, as the scheduler does at once on a cancel's notification.
 * A retryable failure gives the row back with the next delay; the last attempt, or an error no
 * retry can help, settles FAILED with `analysis.failed`. So each document gets one stored result
 * and exactly one terminal event (completed, failed, or the cancel's).
 */
export function analyzeClaimed(options: WorkOptions): (claimed: Claimed, cancelled: AbortSignal) => Promise<void> {
  const { db, analyzer, embedder, log, leaseMs, maxAttempts, retryDelaysMs } = options;
  return async (claimed, cancelled) => {
    const event = parse(claimed.event) as UploadEvent;
    const { documentId, jobId, title, text } = event.data;
    const { tenantId, leaseToken, attempt } = claimed;
    const settle = (work: (em: EntityManager, publishEvents: (events: readonly NewEvent[]) => Promise<unknown>) => Promise<void>) =>
      transaction(db, async (em, publishEvents) => {
        if (!(await finish(em, documentId, leaseToken))) return false;
        await work(em, publishEvents);
        return true;
      });
    const fail = async (failure: { code: string; message: string }) => {
      const now = new Date().toISOString();
      const stored = await settle(async (em, publishEvents) => {
        await queryRun(em, `update analyses set status = 'FAILED', error_code = ?, error_message = ?, updated_at = ? where document_id = ?`, [failure.code, failure.message, now, documentId]);
        await publishEvents([{ type: 'analysis.failed', subject: documentId, tenantId, causedBy: event, data: { documentId, jobId, error: failure, attempts: attempt, failedAt: now } }]);
      });
      if (stored) log.warn({ documentId, jobId, attempt, ...failure }, 'analysis failed for good');
    };

    if (attempt > maxAttempts) {
      // Claimed this often without settling: each worker stopped mid-call and its lease ran out.
      await fail({ code: 'ANALYSIS_ABANDONED', message: `claimed ${attempt - 1} times without finishing: the workers holding it stopped mid-call` });
      return;
    }

    const abort = new AbortController();
    const onCancel = () => abort.abort(cancelled.reason);
    if (cancelled.aborted) onCancel();
    else cancelled.addEventListener('abort', onCancel, { once: true });
    const renewal = setInterval(() => {
      db.fork()
        .transactional((em) => renewLease(em, documentId, leaseToken, leaseMs))
        .then(
          (held) => held || abort.abort(new Error(`the lease on document ${documentId} is no longer this claim's`)),
          (error: unknown) => log.warn({ documentId, err: errorMessage(error) }, 'could not renew an analysis lease; it may be taken over when it expires'),
        );
    }, leaseMs / 3);
    // A long document's progress, each step in a short transaction of its own, in order; all of
    // them written before the result (a job's view ignores progress once it is finished anyway).
    let progressWrites = Promise.resolve();
    const onProgress = ({ done, total }: { done: number; total: number }) => {
      progressWrites = progressWrites.then(() =>
        transaction(db, (_em, publishEvents) =>
          publishEvents([{ type: 'analysis.progress', subject: documentId, tenantId, causedBy: event, data: { documentId, jobId, done, total, at: new Date().toISOString() } }]),
        ).then(
          () => undefined,
          (error: unknown) => log.warn({ documentId, err: errorMessage(error) }, 'could not publish analysis progress'),
        ),
      );
    };
    let outcome: { result: Awaited<ReturnType<Analyzer['analyze']>>; vector: number[] } | { error: unknown };
    try {
      const result = await analyzer.analyze({ text, title }, { tenantId, signal: abort.signal, onProgress });
      // The embedding goes with the analysis: a document is searchable once it is analysed.
      const [vector] = await embedder.embed([`${title}\n\n${text}`]);
      outcome = { result, vector: vector! };
    } catch (error) {
      outcome = { error };
    } finally {
      clearInterval(renewal);
      cancelled.removeEventListener('abort', onCancel);
      await progressWrites;
    }

    if ('error' in outcome) {
      // Cancelled or taken over: the row is someone else's to settle (or gone).
      if (abort.signal.aborted) return;
      const { error } = outcome;
      const unrecoverable = isUnrecoverable(error) || (isAiError(error) && error.unrecoverable);
      if (!unrecoverable && attempt < maxAttempts) {
        const delay = retryDelaysMs[Math.min(attempt - 1, retryDelaysMs.length - 1)] ?? 0;
        log.warn({ documentId, jobId, attempt, code: errorCode(error), err: errorMessage(error), retryInMs: delay }, 'analysis attempt failed; will retry');
        // If this fails, the row waits out its lease instead.
        const released = await db.fork().transactional((em) => release(em, documentId, leaseToken, delay)).catch(() => false);
        if (released) options.onRetryScheduled(delay);
        return;
      }
      await fail({ code: errorCode(error), message: errorMessage(error) });
      return;
    }

    const { result, vector } = outcome;
    const now = new Date().toISOString();
    await settle(async (em, publishEvents) => {
      await queryRun(
        em,
        `update analyses set status = 'COMPLETED', summary = ?, themes = ?::jsonb, keywords = ?::jsonb, sentiment = ?::jsonb, provider = ?, model = ?,
           prompt_tokens = ?, completion_tokens = ?, cached = ?, chunks = ?, truncated = ?, updated_at = ? where document_id = ?`,
        [
          result.summary,
          JSON.stringify(result.themes),
          JSON.stringify(result.keywords),
          JSON.stringify(result.sentiment),
          result.provider,
          result.model,
          result.tokens.prompt,
          result.tokens.completion,
          result.cached,
          result.chunks ?? 1,
          result.truncated ?? false,
          now,
          documentId,
        ],
      );
      await queryRun(
        em,
        `insert into document_embeddings (document_id, tenant_id, provider, model, vector, created_at) values (?, ?, ?, ?, ?::jsonb, ?)
         on conflict (document_id) do update set tenant_id = excluded.tenant_id, provider = excluded.provider, model = excluded.model, vector = excluded.vector, created_at = excluded.created_at`,
        [documentId, tenantId, embedder.provider, embedder.model, JSON.stringify(vector), now],
      );
      await publishEvents([
        {
          type: 'analysis.completed',
          subject: documentId,
          tenantId,
          causedBy: event,
          data: {
            documentId,
            jobId,
            summary: result.summary,
            themes: result.themes,
            keywords: result.keywords,
            sentiment: result.sentiment,
            provider: result.provider,
            model: result.model,
            tokens: result.tokens,
            attempts: attempt,
            completedAt: now,
          },
        },
      ]);
    });
  };
}
