import { validate as isUuid } from 'uuid';
import { queryRows } from '@tributary/core/db';
import type { SubgraphContext } from '@tributary/core/service';
import type { Document, JobPriority } from './entities.ts';

/** Where the gateway serves a document's file. */
const downloadUrl = (fileId: string) => `/files/${fileId}`;

export interface FileRow {
  id: string;
  name: string;
  content_type: string;
  size: number | string;
  sha256: string;
}
export const toFile = (row: FileRow) => ({ name: row.name, contentType: row.content_type, size: Number(row.size), sha256: row.sha256, downloadUrl: downloadUrl(row.id) });
/** `Document.file` as GraphQL shows it. */
export type FileView = ReturnType<typeof toFile>;

/** The file a document was uploaded as, or null for a document sent as text. */
export async function readFileOf(em: SubgraphContext['em'], documentId: string, tenantId: string): Promise<FileView | null> {
  const [row] = await queryRows<FileRow>(em, 'select id, name, content_type, size, sha256 from files where document_id = ? and tenant_id = ?', [documentId, tenantId]);
  return row ? toFile(row) : null;
}

interface DocumentRow {
  id: string;
  title: string;
  content_type: string;
  size: number;
  job_id: string;
  priority: JobPriority;
  created_at: Date | string;
}

/**
 * One document of a tenant by its id or its job's, as GraphQL shows it. A plain statement: these
 * lookups run for every federated read of a job or document (each subscription message), where
 * the ORM's query building and hydration cost several times the query itself. The content (up to
 * `DOCUMENT_MAX_BYTES`) is left out: `Document.content` reads it when a client asks for it.
 */
export async function readDocument(em: SubgraphContext['em'], by: 'id' | 'job_id', id: string, tenantId: string) {
  if (!isUuid(id)) return null;
  const [row] = await queryRows<DocumentRow>(em, `select id, title, content_type, size, job_id, priority, created_at from documents where ${by} = ? and tenant_id = ?`, [id, tenantId]);
  return row
    ? { id: row.id, title: row.title, contentType: row.content_type, size: row.size, createdAt: new Date(row.created_at).toISOString(), jobId: row.job_id, jobPriority: row.priority }
    : null;
}

export function toGraphQL(doc: Document) {
  return {
    id: doc.id,
    title: doc.title,
    content: doc.content,
    contentType: doc.contentType,
    size: doc.size,
    createdAt: doc.createdAt.toISOString(),
    jobId: doc.jobId,
    jobPriority: doc.priority,
  };
}

/** The job a document row stands for, as far as this service knows it (its existence, document and priority). */
export const jobOf = (doc: { jobId: string; jobPriority: JobPriority }) => ({ id: doc.jobId, priority: doc.jobPriority, document: doc });
