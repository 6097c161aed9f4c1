import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { Migration } from '@tributary/core/db';

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

export const migrations = [{ name: '0001-documents', class: CreateDocuments }];
