export { envelopeSchema, eventTypeSchema, traceparentSchema, type Envelope } from './envelope.ts';
export * from './events.ts';
export { ContractViolationError, parse, parseEnvelope, validateData, type ContractViolationCode, type ParsedEvent } from './parse.ts';
