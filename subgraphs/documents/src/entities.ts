import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { Migration } from '@tributary/core/db';

/** A job's priority within its tenant's own work (the GraphQL enum JobPriority, the event's `priority`). */
export const JOB_PRIORITIES = ['HIGH', 'NORMAL', 'LOW'] as const;
export type JobPriority = (typeof JOB_PRIORITIES)[number];

export const Document = defineEntity({
  name: 'Document',
  tableName: 'documents',
  properties: (p) => ({
    id: p.uuid().primary(),
    tenantId: p.text(),
    title: p.text(),
    /** As uploaded. */
    content: p.text(),
    /** Markup stripped: what analysis reads. */
    text: p.text(),
    contentType: p.text(),
    size: p.integer(),
    jobId: p.uuid().unique(),
    /** The priority of the document's job, as uploaded. */
    priority: p.enum([...JOB_PRIORITIES] as JobPriority[]),
    uploadedBy: p.text().nullable(),
    createdAt: p.datetime(),
  }),
});
export type Document = InferEntity<typeof Document>;

class CreateDocuments extends Migration {
  override up(): void {
    this.addSql(`create table documents (
      id uuid primary key,
      tenant_id text not null,
      title text not null,
      content text not null,
      text text not null,
      content_type text not null,
      size integer not null,
      job_id uuid not null unique,
      uploaded_by text null,
      created_at timestamptz not null
    )`);
    // Listing is per tenant, newest first, with keyset pagination on (created_at, id).
    this.addSql('create index documents_tenant_created on documents (tenant_id, created_at desc, id desc)');
  }
}

/**
 * Uploaded files: `files` one row per file (its text kept until a document claims it), its
 * bytes in `file_chunks` rows of FILE_CHUNK_BYTES, so no statement reads or writes a whole
 * file. A file with no document is staged (uploaded, not yet named by an `uploadDocument`).
 */
class CreateFiles extends Migration {
  override up(): void {
    this.addSql(`create table files (
      id uuid primary key,
      tenant_id text not null,
      uploaded_by text null,
      name text not null,
      content_type text not null,
      size bigint not null,
      sha256 text not null,
      text text not null,
      -- Deferred: the document row is flushed at commit, after the claim.
      document_id uuid null unique references documents (id) deferrable initially deferred,
      created_at timestamptz not null
    )`);
    this.addSql('create index files_unclaimed on files (created_at) where document_id is null');
    this.addSql(`create table file_chunks (
      file_id uuid not null references files (id) on delete cascade,
      seq integer not null,
      data bytea not null,
      primary key (file_id, seq)
    )`);
  }
}

/** The priority of each document's job; documents uploaded before priorities existed were NORMAL. */
class AddJobPriority extends Migration {
  override up(): void {
    this.addSql(`alter table documents add column priority text not null default 'NORMAL' check (priority in ('HIGH', 'NORMAL', 'LOW'))`);
  }
}

export const migrations = [
  { name: '0001-documents', class: CreateDocuments },
  { name: '0002-files', class: CreateFiles },
  { name: '0003-job-priority', class: AddJobPriority },
];
