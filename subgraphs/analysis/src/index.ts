export { typeDefs } from './schema.ts';
export { analysisService, createAnalysisService, configSchema, type AnalysisConfig, type AnalysisServiceOptions } from './service.ts';
export { Analysis } from './entities.ts';
