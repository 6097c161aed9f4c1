import { subgraphConfigSchema } from '@tributary/core/service';
import { z } from 'zod';

export const configSchema = subgraphConfigSchema.extend({
  /** Largest accepted document content, in bytes (UTF-8). Default 1 MiB. */
  DOCUMENT_MAX_BYTES: z.coerce.number().int().positive().default(1024 * 1024),
  /** Longest accepted title, in characters. Default 500. */
  DOCUMENT_MAX_TITLE_LENGTH: z.coerce.number().int().positive().default(500),
  /** Largest accepted file (`uploadDocument(input: { file })`), in bytes. Default 25 MiB. */
  DOCUMENT_MAX_FILE_BYTES: z.coerce.number().int().positive().default(25 * 1024 * 1024),
});
export type DocumentsConfig = z.infer<typeof configSchema>;
