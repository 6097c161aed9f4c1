import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ContractViolationError, currentVersion, jobStatusV1, parse, validateData } from '../src/index.ts';

const uploaded = () => ({
  id: randomUUID(),
  type: 'document.uploaded',
  source: 'documents',
  specversion: '1.0',
  time: '2026-11-28T08:00:00.000Z',
  dataschema: 'document.uploaded/v1',
  subject: 'doc-1',
  traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  tenantid: 'tenant-a',
  data: { documentId: 'doc-1', jobId: 'job-1', title: 'T', text: 'Body', contentType: 'text/plain', uploadedAt: '2026-11-28T08:00:00.000Z' },
});

function violation(input: unknown): ContractViolationError {
  try {
    parse(input);
  } catch (error) {
    if (error instanceof ContractViolationError) return error;
    throw error;
  }
  throw new Error('expected a contract violation');
}

describe('parse', () => {
  it('accepts a valid event as an object, a JSON string or a Buffer', () => {
    const event = uploaded();
    expect(parse(event).data).toEqual(event.data);
    expect(parse(JSON.stringify(event)).id).toBe(event.id);
    expect(parse(Buffer.from(JSON.stringify(event))).type).toBe('document.uploaded');
  });

  it('narrows data by dataschema', () => {
    const event = parse(uploaded());
    if (event.dataschema === 'document.uploaded/v1') expect(event.data.title).toBe('T');
    else throw new Error('wrong schema');
  });

  it('refuses invalid JSON with INVALID_JSON', () => {
    expect(violation('{nope').code).toBe('INVALID_JSON');
  });

  it('refuses a broken envelope with INVALID_ENVELOPE and names the fields', () => {
    const error = violation({ ...uploaded(), id: 'not-a-uuid', specversion: '0.3' });
    expect(error.code).toBe('INVALID_ENVELOPE');
    expect(error.issues.map((i) => i.path).sort()).toEqual(['id', 'specversion']);
  });

  it('refuses an unknown schema version with UNKNOWN_SCHEMA', () => {
    expect(violation({ ...uploaded(), dataschema: 'document.uploaded/v7' }).code).toBe('UNKNOWN_SCHEMA');
  });

  it('refuses a dataschema of another type with SCHEMA_TYPE_MISMATCH', () => {
    expect(violation({ ...uploaded(), dataschema: 'job.updated/v1' }).code).toBe('SCHEMA_TYPE_MISMATCH');
  });

  it('refuses data that breaks the contract with INVALID_DATA', () => {
    const error = violation({ ...uploaded(), data: { ...uploaded().data, contentType: 'application/pdf', text: '' } });
    expect(error.code).toBe('INVALID_DATA');
    expect(error.issues.map((i) => i.path).sort()).toEqual(['contentType', 'text']);
  });

  it('marks every violation unrecoverable, so consumers dead-letter without retrying', () => {
    expect(violation('x').unrecoverable).toBe(true);
  });

  it('validates producer data with validateData', () => {
    expect(() => validateData('analysis.started/v1', { documentId: 'd', jobId: 'j', attempt: 0, startedAt: 'x' })).toThrow(ContractViolationError);
  });
});

describe('work control in the contracts', () => {
  const event = (dataschema: string, data: Record<string, unknown>) => ({ ...uploaded(), type: dataschema.split('/')[0], dataschema, data });
  const cancelled = { documentId: 'doc-1', jobId: 'job-1', attempts: 1, tokens: { prompt: 812, completion: 64 }, cancelledAt: '2026-11-28T08:00:03.000Z' };

  it('takes a priority on document.uploaded, and an upload without one (written before it existed) as it was', () => {
    for (const priority of ['HIGH', 'NORMAL', 'LOW']) {
      const parsed = parse({ ...uploaded(), data: { ...uploaded().data, priority } });
      if (parsed.dataschema !== 'document.uploaded/v1') throw new Error('wrong schema');
      expect(parsed.data.priority).toBe(priority);
    }
    const parsed = parse(uploaded());
    if (parsed.dataschema !== 'document.uploaded/v1') throw new Error('wrong schema');
    expect(parsed.data.priority).toBeUndefined();
    expect(violation({ ...uploaded(), data: { ...uploaded().data, priority: 'URGENT' } }).issues.map((i) => i.path)).toEqual(['priority']);
  });

  it('parses analysis.cancelled/v1, the current version of analysis.cancelled', () => {
    expect(currentVersion['analysis.cancelled']).toBe('analysis.cancelled/v1');
    expect(parse(event('analysis.cancelled/v1', cancelled)).data).toEqual(cancelled);
    // A job cancelled while QUEUED made no call and spent nothing.
    expect(() => validateData('analysis.cancelled/v1', { ...cancelled, attempts: 0, tokens: { prompt: 0, completion: 0 } })).not.toThrow();
  });

  it('refuses an analysis.cancelled without its counts or with negative ones', () => {
    const { tokens: _, ...noTokens } = cancelled;
    expect(violation(event('analysis.cancelled/v1', noTokens)).issues.map((i) => i.path)).toEqual(['tokens']);
    expect(violation(event('analysis.cancelled/v1', { ...cancelled, attempts: -1, tokens: { prompt: 1.5, completion: -2 } })).issues.map((i) => i.path).sort()).toEqual([
      'attempts',
      'tokens.completion',
      'tokens.prompt',
    ]);
    expect(violation(event('analysis.cancelled/v1', { ...cancelled, cancelledAt: 'yesterday' })).issues.map((i) => i.path)).toEqual(['cancelledAt']);
  });

  it('has CANCELLED among the job statuses of job.updated', () => {
    expect(jobStatusV1.options).toEqual(['QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED']);
    const data = { jobId: 'job-1', documentId: 'doc-1', status: 'CANCELLED', attempts: 1, error: null, createdAt: '2026-11-28T08:00:00.000Z', updatedAt: '2026-11-28T08:00:03.000Z', completedAt: '2026-11-28T08:00:03.000Z' };
    expect(parse(event('job.updated/v1', data)).data).toEqual(data);
  });
});
