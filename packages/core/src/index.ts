export * from './errors.ts';
export * from './config.ts';
export * from './context.ts';
export { createLogger, type Logger } from './log.ts';
export * from './graphql.ts';
export * from './identity.ts';
export { progress, type Progress } from './progress.ts';
