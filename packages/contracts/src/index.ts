export { envelopeSchema, eventTypeSchema, traceparentSchema, type Envelope } from './envelope.ts';
export * from './events.ts';
export { ContractViolationError, parse, validateData, type ContractViolationCode, type ParsedEvent } from './parse.ts';
