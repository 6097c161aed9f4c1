import { z } from 'zod';
import { envelopeSchema, type Envelope } from './envelope.ts';
import { contracts, type DataSchema, type EventData } from './events.ts';

/** Why an incoming event was refused. Stable codes: consumers dead-letter on all of them. */
export type ContractViolationCode = 'INVALID_JSON' | 'INVALID_ENVELOPE' | 'UNKNOWN_SCHEMA' | 'SCHEMA_TYPE_MISMATCH' | 'INVALID_DATA';

/** An event that does not satisfy its contract. Never retried: the same bytes will fail again. */
export class ContractViolationError extends Error {
  override readonly name = 'ContractViolationError';
  readonly unrecoverable = true;
  constructor(
    readonly code: ContractViolationCode,
    message: string,
    readonly issues: readonly { path: string; message: string }[] = [],
  ) {
    super(message);
  }
}

/** A parsed event whose `data` matches the contract named by its `dataschema`. */
export type ParsedEvent<S extends DataSchema = DataSchema> = {
  [K in S]: Envelope<EventData<K>> & { dataschema: K };
}[S];

function issuesOf(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.map((i) => ({ path: i.path.map(String).join('.') || '(root)', message: i.message }));
}

/**
 * The envelope alone, `data` not yet checked: for readers that only route on the envelope (the
 * gateway's cache invalidation) or validate `data` with a schema of their own.
 * @throws ContractViolationError `INVALID_JSON` or `INVALID_ENVELOPE`
 */
export function parseEnvelope(input: unknown): Envelope {
  let value = input;
  if (typeof input === 'string' || input instanceof Uint8Array) {
    const text = typeof input === 'string' ? input : Buffer.from(input).toString('utf8');
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new ContractViolationError('INVALID_JSON', `event is not valid JSON: ${(error as Error).message}`);
    }
  }
  const envelope = envelopeSchema.safeParse(value);
  if (!envelope.success) {
    throw new ContractViolationError('INVALID_ENVELOPE', 'event envelope is invalid', issuesOf(envelope.error));
  }
  return envelope.data as Envelope;
}

/**
 * The one parser every consumer goes through: accepts a Buffer, a JSON string or an object,
 * checks the envelope, looks up the contract named by `dataschema`, and validates `data` with it.
 * @throws ContractViolationError with a stable `code`
 */
export function parse(input: unknown): ParsedEvent {
  const envelope = parseEnvelope(input);
  const { dataschema, type } = envelope;
  if (!(dataschema in contracts)) {
    throw new ContractViolationError('UNKNOWN_SCHEMA', `no contract is registered for ${dataschema}`);
  }
  if (!dataschema.startsWith(`${type}/`)) {
    throw new ContractViolationError('SCHEMA_TYPE_MISMATCH', `dataschema ${dataschema} does not belong to type ${type}`);
  }
  const contract = contracts[dataschema as DataSchema];
  const data = contract.safeParse(envelope.data);
  if (!data.success) {
    throw new ContractViolationError('INVALID_DATA', `data does not match ${dataschema}`, issuesOf(data.error));
  }
  return { ...envelope, data: data.data } as ParsedEvent;
}

/** Validate `data` against a contract before it is written (producers call this through `publish`). */
export function validateData<S extends DataSchema>(dataschema: S, data: unknown): EventData<S> {
  const contract = contracts[dataschema] as unknown as z.ZodType<EventData<S>> | undefined;
  if (!contract) throw new ContractViolationError('UNKNOWN_SCHEMA', `no contract is registered for ${dataschema}`);
  const result = contract.safeParse(data);
  if (!result.success) {
    throw new ContractViolationError('INVALID_DATA', `data does not match ${dataschema}`, issuesOf(result.error));
  }
  return result.data;
}
