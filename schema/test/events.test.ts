import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { checkEvents, compareEventSchemas, dataschemaOf, eventFileName, eventSnapshot } from '../src/events.ts';

const v1 = z.object({
  id: z.string().min(1).max(128),
  status: z.enum(['QUEUED', 'DONE']),
  attempts: z.number(),
  note: z.string().optional(),
  completedAt: z.string().nullable(),
  themes: z.array(z.object({ name: z.string(), score: z.number() })),
});
const snapshot = eventSnapshot(v1);

/** The rules and paths `current` breaks of the v1 snapshot. */
const broken = (current: z.ZodType) => compareEventSchemas(snapshot, eventSnapshot(current)).map((i) => `${i.rule} ${i.path}`);

describe('event contract compatibility', () => {
  it.each([
    ['a new required field', v1.extend({ tenantId: z.string() }), 'new-required-field $.tenantId'],
    ['a removed field', v1.omit({ note: true }), 'removed-field $.note'],
    ['a removed required field', v1.omit({ attempts: true }), 'removed-field $.attempts'],
    ['a removed nested field', v1.extend({ themes: z.array(z.object({ name: z.string() })) }), 'removed-field $.themes[].score'],
    ['a number narrowed to an integer', v1.extend({ attempts: z.number().int() }), 'narrowed-type $.attempts'],
    ['a string narrowed to an enum', v1.extend({ id: z.enum(['a', 'b']) }), 'narrowed-type $.id'],
    ['a changed type', v1.extend({ attempts: z.string() }), 'narrowed-type $.attempts'],
    ['a nullable field made non-null', v1.extend({ completedAt: z.string() }), 'narrowed-type $.completedAt'],
    ['an optional field made required', v1.extend({ note: z.string() }), 'now-required $.note'],
    ['a required field made optional', v1.extend({ attempts: z.number().optional() }), 'no-longer-required $.attempts'],
    ['a removed enum value', v1.extend({ status: z.enum(['QUEUED']) }), 'removed-enum-value $.status'],
    ['a tighter length', v1.extend({ id: z.string().min(1).max(64) }), 'narrowed-constraint $.id'],
    ['a new format', v1.extend({ id: z.uuid() }), 'narrowed-constraint $.id'],
    ['unknown keys now rejected', v1.strict(), 'narrowed-constraint $'],
  ])('flags %s', (_, current, expected) => {
    expect(broken(current)).toContain(expected);
  });

  it.each([
    ['the same contract', v1],
    ['a new optional field', v1.extend({ uploadedBy: z.string().optional() })],
    ['a new enum value', v1.extend({ status: z.enum(['QUEUED', 'DONE', 'FAILED']) })],
    ['a field made nullable', v1.extend({ id: z.string().min(1).max(128).nullable() })],
    ['a new optional nested field', v1.extend({ themes: z.array(z.object({ name: z.string(), score: z.number(), rank: z.number().optional() })) })],
    ['a looser length', v1.extend({ id: z.string().max(256) })],
  ])('passes %s', (_, current) => {
    expect(broken(current)).toEqual([]);
  });

  it('passes a field widened from integer to number', () => {
    const before = eventSnapshot(z.object({ n: z.number().int() }));
    expect(compareEventSchemas(before, eventSnapshot(z.object({ n: z.number() })))).toEqual([]);
  });

  it('follows local $refs through a recursive schema and terminates', () => {
    const node = (extra: z.ZodRawShape) => {
      const Tree: z.ZodType = z.object({
        name: z.string(),
        ...extra,
        get left() {
          return Tree.optional();
        },
        get right() {
          return Tree.optional();
        },
      });
      return eventSnapshot(Tree);
    };
    expect(compareEventSchemas(node({ size: z.number() }), node({}))).toContainEqual(expect.objectContaining({ rule: 'removed-field', path: '$.size' }));
  });
});

describe('event snapshots and samples', () => {
  const sample = { id: 'j1', status: 'DONE', attempts: 1, completedAt: null, themes: [{ name: 'pricing', score: 0.5 }] };

  it('passes contracts that match their snapshots and samples', () => {
    expect(checkEvents({ contracts: { 'job.updated/v1': v1 }, snapshots: { 'job.updated/v1': snapshot }, samples: { 'job.updated/v1': sample } })).toEqual([]);
  });

  it('fails a sample that no longer parses, naming the event and the path', () => {
    const v1Narrowed = v1.extend({ status: z.enum(['QUEUED']) });
    const violations = checkEvents({ contracts: { 'job.updated/v1': v1Narrowed }, snapshots: { 'job.updated/v1': snapshot }, samples: { 'job.updated/v1': sample } });
    expect(violations).toContainEqual(expect.objectContaining({ code: 'EVENT_INCOMPATIBLE', event: 'job.updated/v1', detail: 'removed-enum-value' }));
    expect(violations).toContainEqual(expect.objectContaining({ code: 'EVENT_SAMPLE_INVALID', event: 'job.updated/v1', coordinate: '$.status' }));
  });

  it('fails a version whose contract was removed while its snapshot remains', () => {
    const violations = checkEvents({ contracts: {}, snapshots: { 'job.updated/v1': snapshot }, samples: {} });
    expect(violations).toEqual([expect.objectContaining({ code: 'EVENT_VERSION_REMOVED', event: 'job.updated/v1' })]);
  });

  it('fails a contract version without a snapshot or a sample, pointing at pnpm schema:compose for the snapshot', () => {
    const violations = checkEvents({ contracts: { 'job.updated/v2': v1 }, snapshots: {}, samples: {} });
    expect(violations).toEqual([
      expect.objectContaining({ code: 'EVENT_SNAPSHOT_MISSING', event: 'job.updated/v2', fix: 'pnpm schema:compose' }),
      expect.objectContaining({ code: 'EVENT_SAMPLE_MISSING', event: 'job.updated/v2' }),
    ]);
  });

  it('compares each version with its own snapshot only, so v2 may break v1', () => {
    const v2 = z.object({ jobId: z.string(), state: z.enum(['RUNNING']) });
    const violations = checkEvents({
      contracts: { 'job.updated/v1': v1, 'job.updated/v2': v2 },
      snapshots: { 'job.updated/v1': snapshot, 'job.updated/v2': eventSnapshot(v2) },
      samples: { 'job.updated/v1': sample, 'job.updated/v2': { jobId: 'j1', state: 'RUNNING' } },
    });
    expect(violations).toEqual([]);
  });

  it('names snapshot files after the dataschema', () => {
    expect(eventFileName('analysis.completed/v12')).toBe('analysis.completed.v12.json');
    expect(dataschemaOf('analysis.completed.v12.json')).toBe('analysis.completed/v12');
    expect(dataschemaOf('README.json')).toBeUndefined();
  });
});
