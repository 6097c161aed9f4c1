import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { Migration } from '@tributary/core/db';

export const JOB_STATUSES = ['QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
/** A job's priority within its tenant's own work, as uploaded (the GraphQL enum JobPriority). */
export const JOB_PRIORITIES = ['HIGH', 'NORMAL', 'LOW'] as const;
export type JobPriority = (typeof JOB_PRIORITIES)[number];

export const Job = defineEntity({
  name: 'Job',
  tableName: 'jobs',
  properties: (p) => ({
    id: p.uuid().primary(),
    tenantId: p.text(),
    documentId: p.text(),
    status: p.enum([...JOB_STATUSES] as JobStatus[]),
    priority: p.enum([...JOB_PRIORITIES] as JobPriority[]),
    attempts: p.integer(),
    progressDone: p.integer().nullable(),
    progressTotal: p.integer().nullable(),
    errorCode: p.text().nullable(),
    errorMessage: p.text().nullable(),
    createdAt: p.datetime(),
    updatedAt: p.datetime(),
    completedAt: p.datetime().nullable(),
  }),
});
export type Job = InferEntity<typeof Job>;

class CreateJobs extends Migration {
  override up(): void {
    this.addSql(`create table jobs (
      id uuid primary key,
      tenant_id text not null,
      document_id text not null,
      status text not null check (status in ('QUEUED', 'RUNNING', 'COMPLETED', 'FAILED')),
      attempts integer not null default 0,
      error_code text null,
      error_message text null,
      created_at timestamptz not null,
      updated_at timestamptz not null,
      completed_at timestamptz null
    )`);
    this.addSql('create index jobs_tenant_created on jobs (tenant_id, created_at desc, id desc)');
    this.addSql('create index jobs_tenant_status_created on jobs (tenant_id, status, created_at desc, id desc)');
  }
}

/** A long document's analysis progress, as its events report it. */
class AddProgress extends Migration {
  override up(): void {
    this.addSql('alter table jobs add column progress_done integer null, add column progress_total integer null');
  }
}

/**
 * Work control: CANCELLED, a terminal status, and each job's priority from its document.uploaded
 * (NORMAL until that event is seen, and for jobs uploaded before priorities existed).
 */
class AddCancelledAndPriority extends Migration {
  override up(): void {
    this.addSql(`alter table jobs drop constraint jobs_status_check,
      add constraint jobs_status_check check (status in ('QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
      add column priority text not null default 'NORMAL' check (priority in ('HIGH', 'NORMAL', 'LOW'))`);
  }
}

export const migrations = [
  { name: '0001-jobs', class: CreateJobs },
  { name: '0002-job-progress', class: AddProgress },
  { name: '0003-job-cancelled-priority', class: AddCancelledAndPriority },
];
