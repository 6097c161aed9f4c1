export { typeDefs } from './schema.ts';
export { documentsService, configSchema, type DocumentsConfig } from './service.ts';
export { Document } from './entities.ts';
export { extractText, normalizeContentType, CONTENT_TYPES } from './text.ts';
