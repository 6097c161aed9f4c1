import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { Migration } from '@tributary/core/db';

/** PENDING: left by the design before the work table (no longer written). */
export type AnalysisStatus = 'PENDING' | 'QUEUED' | 'RUNNING' | 'COMPLETED' | 'FAILED' | 'CANCELLED';

export const Analysis = defineEntity({
  name: 'Analysis',
  tableName: 'analyses',
  properties: (p) => ({
    documentId: p.text().primary(),
    jobId: p.text(),
    tenantId: p.text(),
    status: p.enum(['PENDING', 'QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'] as AnalysisStatus[]),
    title: p.text(),
    summary: p.text().nullable(),
    themes: p.json<{ name: string; score: number }[]>().nullable(),
    keywords: p.json<string[]>().nullable(),
    sentiment: p.json<{ label: 'POSITIVE' | 'NEUTRAL' | 'NEGATIVE'; score: number }>().nullable(),
    provider: p.text().nullable(),
    model: p.text().nullable(),
    promptTokens: p.integer().nullable(),
    completionTokens: p.integer().nullable(),
    cached: p.boolean(),
    /** Model calls the text was analysed in (its chunks, or 1). */
    chunks: p.integer(),
    /** Whether text beyond the most chunks analysed was left out. */
    truncated: p.boolean(),
    errorCode: p.text().nullable(),
    errorMessage: p.text().nullable(),
    attempts: p.integer(),
    createdAt: p.datetime(),
    updatedAt: p.datetime(),
  }),
});
export type Analysis = InferEntity<typeof Analysis>;

/** A document's embedding, for similarity search within its tenant. */
export const DocumentEmbedding = defineEntity({
  name: 'DocumentEmbedding',
  tableName: 'document_embeddings',
  properties: (p) => ({
    documentId: p.text().primary(),
    tenantId: p.text(),
    provider: p.text(),
    model: p.text(),
    vector: p.json<number[]>(),
    createdAt: p.datetime(),
  }),
});
export type DocumentEmbedding = InferEntity<typeof DocumentEmbedding>;

class CreateAnalyses extends Migration {
  override up(): void {
    this.addSql(`create table analyses (
      document_id text primary key,
      job_id text not null,
      tenant_id text not null,
      status text not null check (status in ('PENDING', 'COMPLETED', 'FAILED')),
      title text not null,
      text text not null,
      summary text null,
      themes jsonb null,
      keywords jsonb null,
      sentiment jsonb null,
      provider text null,
      model text null,
      prompt_tokens integer null,
      completion_tokens integer null,
      cached boolean not null default false,
      error_code text null,
      error_message text null,
      attempts integer not null default 0,
      created_at timestamptz not null,
      updated_at timestamptz not null
    )`);
    this.addSql('create index analyses_tenant on analyses (tenant_id, document_id)');
  }
}

class CreateEmbeddings extends Migration {
  override up(): void {
    // No pgvector here (it is not on every PostgreSQL, nor in PGlite): similarity is computed over
    // one tenant's vectors, which the index narrows the scan to.
    this.addSql(`create table document_embeddings (
      document_id text primary key,
      tenant_id text not null,
      provider text not null,
      model text not null,
      vector jsonb not null,
      created_at timestamptz not null
    )`);
    this.addSql('create index document_embeddings_tenant on document_embeddings (tenant_id, provider, model)');
  }
}

/** The lease the analysis is claimed with, so no transaction is held across the model call. */
class AddLeases extends Migration {
  override up(): void {
    this.addSql('alter table analyses add column lease_token text null, add column lease_expires_at timestamptz null');
    this.addSql('alter table analyses drop constraint analyses_status_check');
    this.addSql(`alter table analyses add constraint analyses_status_check check (status in ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED'))`);
  }
}

/** A long document is analysed in chunks; the analysis says in how many, and whether any text was left out. */
class AddChunks extends Migration {
  override up(): void {
    this.addSql('alter table analyses add column chunks integer not null default 1, add column truncated boolean not null default false');
  }
}

/**
 * The text was kept for the old second stage, which read it back for the model call. The worker
 * now analyses the text its `document.uploaded` carries, and nothing reads the column: writing
 * up to 1 MiB per document into it was work for nothing.
 */
class DropText extends Migration {
  override up(): void {
    this.addSql('alter table analyses drop column text');
  }
}

/**
 * The work table the call slots claim from in fair order (see queue.ts): a document waits here
 * from its `document.uploaded` until its analysis settles, with the lease that was on
 * `analyses` and the event it is analysed from. A statement-level trigger woke the
 * schedulers of every analysis process when work arrived (until 0007). Cancellations asked for before the
 * document reached analysis wait in `analysis_cancellations`.
 */
class AddWorkTable extends Migration {
  override up(): void {
    this.addSql(`create table analysis_queue (
      document_id text primary key,
      job_id text not null,
      tenant_id text not null,
      priority smallint not null,
      tag double precision not null,
      urgency timestamptz not null,
      event text not null,
      attempts integer not null default 0,
      lease_token text null,
      available_at timestamptz not null,
      enqueued_at timestamptz not null
    )`);
    this.addSql('create index analysis_queue_fair on analysis_queue (tag, enqueued_at, document_id)');
    this.addSql('create index analysis_queue_fifo on analysis_queue (enqueued_at, document_id)');
    this.addSql('create index analysis_queue_tenant on analysis_queue (tenant_id, urgency, tag)');
    this.addSql('create unique index analysis_queue_job on analysis_queue (job_id)');
    this.addSql(`create function analysis_queue_notify() returns trigger language plpgsql as $$
      begin perform pg_notify('${WORK_CHANNEL}', ''); return null; end $$`);
    this.addSql('create trigger analysis_queue_notify after insert on analysis_queue for each statement execute function analysis_queue_notify()');
    this.addSql('create table analysis_cancellations (job_id text not null, tenant_id text not null, requested_at timestamptz not null, primary key (job_id, tenant_id))');
    this.addSql('create index analyses_job on analyses (job_id)');
    this.addSql('alter table analyses drop column lease_token, drop column lease_expires_at');
    this.addSql('alter table analyses drop constraint analyses_status_check');
    this.addSql(`alter table analyses add constraint analyses_status_check check (status in ('PENDING', 'QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'))`);
  }
}

/**
 * The enqueue's own notification replaces the trigger: the consumer that enqueues claims what
 * its process's free slots can take in the same transaction, and only work it leaves waiting
 * is worth waking every scheduler for (a trigger woke them for every row, claimed or not).
 */
class NotifyFromEnqueue extends Migration {
  override up(): void {
    this.addSql('drop trigger analysis_queue_notify on analysis_queue');
    this.addSql('drop function analysis_queue_notify()');
  }
}

/** Notified (on commit) when work is enqueued and left waiting: every analysis process's scheduler listens. */
export const WORK_CHANNEL = 'tributary_analysis_work';
/** Notified with a document id when its running analysis is cancelled: its holder aborts the call. */
export const CANCEL_CHANNEL = 'tributary_analysis_cancel';

export const migrations = [
  { name: '0001-analyses', class: CreateAnalyses },
  { name: '0002-document-embeddings', class: CreateEmbeddings },
  { name: '0003-analysis-leases', class: AddLeases },
  { name: '0004-analysis-chunks', class: AddChunks },
  { name: '0005-analysis-drop-text', class: DropText },
  { name: '0006-analysis-work-table', class: AddWorkTable },
  { name: '0007-analysis-notify-from-enqueue', class: NotifyFromEnqueue },
];
