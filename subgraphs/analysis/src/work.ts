import { isAiError, type Analyzer, type Embedder } from '@tributary/ai';
import { errorCode, errorMessage, isUnrecoverable } from '@tributary/core';
import { queryRun, type Database, type EntityManager } from '@tributary/core/db';
import { publish, type NewEvent } from '@tributary/core/events';
import type { Logger } from 'pino';
import { finish, release, renewLease, type Claimed } from './queue.ts';

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
  const { event } = claimed;
  return {
    type: 'analysis.started',
    subject: claimed.documentId,
    tenantId: claimed.tenantId,
    causedBy: event,
    data: { documentId: claimed.documentId, jobId: claimed.jobId, attempt: claimed.attempt, startedAt: new Date().toISOString() },
  };
}

/** A claimed document as its work sees it: the claim, and the upload it is analysed from. */
interface Work extends Claimed {
  title: string;
  text: string;
}

type Outcome = { result: Awaited<ReturnType<Analyzer['analyze']>>; vector: number[] } | { error: unknown; aborted: boolean };

/**
 * Analyse one claimed document with no transaction (or connection) held across the model call,
 * then settle it in one short transaction that deletes its work row, but only while the lease
 * is still this claim's: a cancel or a takeover after expiry deleted or re-leased the row, and
 * this claim then stores nothing. A retryable failure gives the row back with the next delay;
 * the last attempt, or an error no retry can help, settles FAILED with `analysis.failed`. So
 * each document gets one stored result and exactly one terminal event (completed, failed, or
 * the cancel's).
 */
export function analyzeClaimed(options: WorkOptions): (claimed: Claimed, cancelled: AbortSignal) => Promise<void> {
  return async (claimed, cancelled) => {
    const work: Work = { ...claimed, title: claimed.event.data.title, text: claimed.event.data.text };
    if (work.attempt > options.maxAttempts) {
      // Claimed this often without settling: each worker stopped mid-call and its lease ran out.
      await fail(options, work, { code: 'ANALYSIS_ABANDONED', message: `claimed ${work.attempt - 1} times without finishing: the workers holding it stopped mid-call` });
      return;
    }
    const outcome = await call(options, work, cancelled);
    if (!('error' in outcome)) await complete(options, work, outcome);
    // Cancelled or taken over: the row is someone else's to settle (or gone).
    else if (!outcome.aborted) await retryOrFail(options, work, outcome.error);
  };
}

/**
 * The model call and the embedding, with the lease renewed every third of its length: a
 * renewal that finds it gone aborts the call, as the scheduler does at once on a cancel's
 * notification. A long document's progress is published meanwhile, each step in a short
 * transaction of its own, all written before the call's outcome is returned.
 */
async function call(options: WorkOptions, work: Work, cancelled: AbortSignal): Promise<Outcome> {
  const { db, analyzer, embedder, log, leaseMs } = options;
  const { documentId, jobId, tenantId, leaseToken, event, title, text } = work;
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
  try {
    const result = await analyzer.analyze({ text, title }, { tenantId, signal: abort.signal, onProgress });
    // The embedding goes with the analysis: a document is searchable once it is analysed.
    const [vector] = await embedder.embed([`${title}\n\n${text}`]);
    return { result, vector: vector! };
  } catch (error) {
    return { error, aborted: abort.signal.aborted };
  } finally {
    clearInterval(renewal);
    cancelled.removeEventListener('abort', onCancel);
    await progressWrites;
  }
}

/** The settling transaction: `work` runs only while the lease is still this claim's (its row then deleted); false when it is not. */
function settle(options: WorkOptions, work: Work, effects: (em: EntityManager, publishEvents: (events: readonly NewEvent[]) => Promise<unknown>) => Promise<void>): Promise<boolean> {
  return transaction(options.db, async (em, publishEvents) => {
    if (!(await finish(em, work.documentId, work.leaseToken))) return false;
    await effects(em, publishEvents);
    return true;
  });
}

/** Give the row back for the next attempt after its delay, or settle FAILED when retrying cannot help or attempts are used up. */
async function retryOrFail(options: WorkOptions, work: Work, error: unknown): Promise<void> {
  const { db, log, maxAttempts, retryDelaysMs } = options;
  const { documentId, jobId, attempt, leaseToken } = work;
  const unrecoverable = isUnrecoverable(error) || (isAiError(error) && error.unrecoverable);
  if (unrecoverable || attempt >= maxAttempts) {
    await fail(options, work, { code: errorCode(error), message: errorMessage(error) });
    return;
  }
  const delay = retryDelaysMs[Math.min(attempt - 1, retryDelaysMs.length - 1)] ?? 0;
  log.warn({ documentId, jobId, attempt, code: errorCode(error), err: errorMessage(error), retryInMs: delay }, 'analysis attempt failed; will retry');
  // If this fails, the row waits out its lease instead.
  const released = await db.fork().transactional((em) => release(em, documentId, leaseToken, delay)).catch(() => false);
  if (released) options.onRetryScheduled(delay);
}

async function fail(options: WorkOptions, work: Work, failure: { code: string; message: string }): Promise<void> {
  const { documentId, jobId, tenantId, attempt, event } = work;
  const now = new Date().toISOString();
  const stored = await settle(options, work, async (em, publishEvents) => {
    await queryRun(em, `update analyses set status = 'FAILED', error_code = ?, error_message = ?, updated_at = ? where document_id = ?`, [failure.code, failure.message, now, documentId]);
    await publishEvents([{ type: 'analysis.failed', subject: documentId, tenantId, causedBy: event, data: { documentId, jobId, error: failure, attempts: attempt, failedAt: now } }]);
  });
  if (stored) options.log.warn({ documentId, jobId, attempt, ...failure }, 'analysis failed for good');
}

/** Store the result and the embedding, and publish `analysis.completed`. */
async function complete(options: WorkOptions, work: Work, { result, vector }: Exclude<Outcome, { error: unknown }>): Promise<void> {
  const { documentId, jobId, tenantId, attempt, event } = work;
  const { embedder } = options;
  const now = new Date().toISOString();
  await settle(options, work, async (em, publishEvents) => {
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
    const { summary, themes, keywords, sentiment, provider, model, tokens } = result;
    await publishEvents([
      {
        type: 'analysis.completed',
        subject: documentId,
        tenantId,
        causedBy: event,
        data: { documentId, jobId, summary, themes, keywords, sentiment, provider, model, tokens, attempts: attempt, completedAt: now },
      },
    ]);
  });
}
