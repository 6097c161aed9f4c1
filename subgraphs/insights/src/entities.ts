import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { Migration } from '@tributary/core/db';

/** How a document's analysis ended. */
export type Outcome = 'COMPLETED' | 'FAILED' | 'CANCELLED';

/** One row per analysed document: makes every aggregate update happen once per document. */
export const InsightDocument = defineEntity({
  name: 'InsightDocument',
  tableName: 'insight_documents',
  properties: (p) => ({
    tenantId: p.text().primary(),
    documentId: p.text().primary(),
    status: p.enum(['COMPLETED', 'FAILED', 'CANCELLED'] as Outcome[]),
    updatedAt: p.datetime(),
  }),
  primaryKeys: ['tenantId', 'documentId'],
});
export type InsightDocument = InferEntity<typeof InsightDocument>;

export const ThemeStat = defineEntity({
  name: 'ThemeStat',
  tableName: 'theme_stats',
  properties: (p) => ({
    tenantId: p.text().primary(),
    name: p.text().primary(),
    documentCount: p.integer(),
    scoreSum: p.double(),
    lastSeenAt: p.datetime(),
  }),
  primaryKeys: ['tenantId', 'name'],
});
export type ThemeStat = InferEntity<typeof ThemeStat>;

export const TenantStat = defineEntity({
  name: 'TenantStat',
  tableName: 'tenant_stats',
  properties: (p) => ({
    tenantId: p.text().primary(),
    analyzed: p.integer(),
    failed: p.integer(),
    cancelled: p.integer(),
  }),
});
export type TenantStat = InferEntity<typeof TenantStat>;

class CreateInsights extends Migration {
  override up(): void {
    this.addSql(`create table insight_documents (
      tenant_id text not null, document_id text not null,
      status text not null check (status in ('COMPLETED', 'FAILED')),
      updated_at timestamptz not null,
      primary key (tenant_id, document_id))`);
    this.addSql(`create table theme_stats (
      tenant_id text not null, name text not null,
      document_count integer not null, score_sum double precision not null,
      last_seen_at timestamptz not null,
      primary key (tenant_id, name))`);
    this.addSql('create index theme_stats_top on theme_stats (tenant_id, document_count desc, name)');
    this.addSql('create table tenant_stats (tenant_id text primary key, analyzed integer not null default 0, failed integer not null default 0)');
  }
}

/** Cancelled jobs, counted as failed ones are: a document outcome and a count per tenant. */
class AddCancelled extends Migration {
  override up(): void {
    this.addSql(`alter table insight_documents drop constraint insight_documents_status_check,
      add constraint insight_documents_status_check check (status in ('COMPLETED', 'FAILED', 'CANCELLED'))`);
    this.addSql('alter table tenant_stats add column cancelled integer not null default 0');
  }
}

export const migrations = [
  { name: '0001-insights', class: CreateInsights },
  { name: '0002-insights-cancelled', class: AddCancelled },
];
