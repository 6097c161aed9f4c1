import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { Migration } from '@tributary/core/db';

export const JOB_STATUSES = ['QUEUED', 'RUNNING', 'COMPLETED', 'FAILED'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export const Job = defineEntity({
  name: 'Job',
  tableName: 'jobs',
  properties: (p) => ({
    id: p.uuid().primary(),
    tenantId: p.text(),
    documentId: p.text(),
    status: p.enum(['QUEUED', 'RUNNING', 'COMPLETED', 'FAILED'] as JobStatus[]),
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

export const migrations = [
  { name: '0001-jobs', class: CreateJobs },
  { name: '0002-job-progress', class: AddProgress },
];
