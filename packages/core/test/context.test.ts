import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { contextFromTraceparent, parentFromTraceparent, runInContext, traceparentOf } from '../src/context.ts';
import { isUnrecoverable, UnrecoverableError } from '../src/errors.ts';
import { topicMatches } from '../src/events/transport.ts';
import { createLogger } from '../src/log.ts';

describe('trace context', () => {
  it('continues an incoming trace with a new span', () => {
    const incoming = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const context = contextFromTraceparent(incoming);
    expect(context.traceId).toBe('0af7651916cd43dd8448eb211c80319c');
    expect(context.spanId).not.toBe('b7ad6b7169203331');
    expect(traceparentOf(context)).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
  });

  it('names the incoming span itself as the parent of a child span', () => {
    const parent = parentFromTraceparent('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00', 'tenant-a');
    expect(parent).toMatchObject({ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', sampled: false, tenantId: 'tenant-a' });
    expect(parentFromTraceparent('garbage').traceId).toMatch(/^[0-9a-f]{32}$/);
  });

  it('starts a new trace when the traceparent is missing, malformed or all zeros', () => {
    for (const bad of [undefined, 'garbage', '00-00000000000000000000000000000000-b7ad6b7169203331-01']) {
      expect(contextFromTraceparent(bad).traceId).toMatch(/^(?!0+$)[0-9a-f]{32}$/);
    }
  });

  it('puts the trace id on every log line written inside a context', () => {
    const lines: string[] = [];
    const destination = new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) });
    const log = createLogger({ service: 'test', destination });
    const context = contextFromTraceparent(undefined, 'tenant-a');
    runInContext(context, () => log.info('inside'));
    log.info('outside');
    expect(JSON.parse(lines[0]!)).toMatchObject({ traceId: context.traceId, tenantId: 'tenant-a', service: 'test', msg: 'inside' });
    expect(JSON.parse(lines[1]!).traceId).toBeUndefined();
  });
});

describe('errors', () => {
  it('recognises unrecoverable errors by class, marker or name', () => {
    expect(isUnrecoverable(new UnrecoverableError('X', 'x'))).toBe(true);
    expect(isUnrecoverable({ name: 'UnrecoverableError' })).toBe(true);
    expect(isUnrecoverable({ name: 'ContractViolationError' })).toBe(true);
    expect(isUnrecoverable(new Error('transient'))).toBe(false);
  });
});

describe('topic matching', () => {
  it('follows AMQP topic rules', () => {
    expect(topicMatches('document.uploaded', 'document.uploaded')).toBe(true);
    expect(topicMatches('analysis.*', 'analysis.completed')).toBe(true);
    expect(topicMatches('analysis.*', 'analysis.completed.v2')).toBe(false);
    expect(topicMatches('#', 'anything.at.all')).toBe(true);
    expect(topicMatches('analysis.#', 'analysis')).toBe(true);
    expect(topicMatches('*.updated', 'job.updated')).toBe(true);
    expect(topicMatches('job.updated', 'job.created')).toBe(false);
  });
});
