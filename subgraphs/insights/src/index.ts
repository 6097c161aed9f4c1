export { typeDefs } from './schema.ts';
export { insightsService } from './service.ts';
