export { typeDefs } from './schema.ts';
export { jobsService } from './service.ts';
export { applyEvent, isTerminal, type JobState } from './transitions.ts';
export { Job, type JobStatus } from './entities.ts';
