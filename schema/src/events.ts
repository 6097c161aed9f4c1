/**
 * The event step of `pnpm schema:check`: JSON Schema snapshots of the zod contracts, the
 * compatibility rules between a snapshot and the current contract, and golden samples.
 */
import { z } from 'zod';
import type { Violation } from './report.ts';

/** A JSON Schema (draft 2020-12, as zod writes it); the comparison reads only a few keywords. */
export type JsonSchema = { [keyword: string]: unknown };

/**
 * The snapshot of a contract: what it accepts (zod's input side, so unknown keys stay allowed as
 * `z.object` strips rather than rejects them).
 */
export function eventSnapshot(contract: z.ZodType): JsonSchema {
  return z.toJSONSchema(contract, { io: 'input' }) as JsonSchema;
}

/** `job.updated/v1` → `job.updated.v1.json`, the file name of its snapshot and of its sample. */
export function eventFileName(dataschema: string): string {
  return `${dataschema.replace(/\/v(\d+)$/, '.v$1')}.json`;
}

/** `job.updated.v1.json` → `job.updated/v1`; undefined for any other file name. */
export function dataschemaOf(fileName: string): string | undefined {
  const m = /^(.+)\.v(\d+)\.json$/.exec(fileName);
  return m ? `${m[1]}/v${m[2]}` : undefined;
}

export type IncompatibilityRule =
  | 'new-required-field'
  | 'removed-field'
  | 'now-required'
  | 'no-longer-required'
  | 'narrowed-type'
  | 'removed-enum-value'
  | 'narrowed-constraint';

export interface Incompatibility {
  rule: IncompatibilityRule;
  /** JSON path into the event data, `$` being `data` itself. */
  path: string;
  /** What changed at `path`, e.g. `no longer accepts "FAILED"`. */
  message: string;
}

/**
 * What `current` breaks of `snapshot`. Producers and consumers of one version are deployed
 * independently and events outlive deploys (retries, the DLQ, replays), so both directions count:
 * the current contract must accept every payload the snapshot accepted (no new required field,
 * no narrowed type, enums only grow) and keep every field the snapshot's consumers read (no
 * removed field, no required field made optional). Adding an optional field or an enum value is safe.
 */
export function compareEventSchemas(snapshot: JsonSchema, current: JsonSchema): Incompatibility[] {
  const out: Incompatibility[] = [];
  compareNode(snapshot, current, '$', { before: snapshot, after: current, seen: new Map() }, out);
  return out;
}

interface Roots {
  before: JsonSchema;
  after: JsonSchema;
  /** Pairs reached through a `$ref`, so a recursive schema is compared once rather than forever. */
  seen: Map<JsonSchema, Set<JsonSchema>>;
}

export const isSchema = (v: unknown): v is JsonSchema => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Resolves a local `$ref` (`#/$defs/…`), as zod writes for recursive or registered schemas. */
export function deref(s: JsonSchema, root: JsonSchema): JsonSchema {
  for (let hops = 0; typeof s['$ref'] === 'string' && hops < 32; hops++) {
    let target: unknown = root;
    for (const key of s['$ref'].replace(/^#\/?/, '').split('/').filter(Boolean)) target = isSchema(target) ? target[key] : undefined;
    if (!isSchema(target)) return {};
    s = target;
  }
  return s;
}

/** The alternatives a schema accepts: `anyOf`/`oneOf` branches, and one per entry of a `type` array. */
export function variants(s: JsonSchema, root: JsonSchema): JsonSchema[] {
  s = deref(s, root);
  const union = s['anyOf'] ?? s['oneOf'];
  if (Array.isArray(union)) return union.filter(isSchema).flatMap((v) => variants(v, root));
  if (Array.isArray(s['type'])) return s['type'].map((type) => ({ ...s, type }));
  return [s];
}

/** Undefined: any type. */
const typeOf = (s: JsonSchema): string | undefined => (typeof s['type'] === 'string' ? s['type'] : undefined);
const accepts = (after: string | undefined, before: string | undefined): boolean =>
  after === undefined || after === before || (after === 'number' && before === 'integer');

function compareNode(before: JsonSchema, after: JsonSchema, path: string, roots: Roots, out: Incompatibility[]): void {
  if (typeof before['$ref'] === 'string' || typeof after['$ref'] === 'string') {
    [before, after] = [deref(before, roots.before), deref(after, roots.after)];
    const seen = roots.seen.get(before) ?? new Set();
    if (seen.has(after)) return;
    roots.seen.set(before, seen.add(after));
  }
  const afters = variants(after, roots.after);
  for (const b of variants(before, roots.before)) {
    const candidates = afters.filter((a) => accepts(typeOf(a), typeOf(b)));
    if (candidates.length === 0) {
      const now = afters.map((a) => typeOf(a) ?? 'any').join(' | ');
      const message =
        typeOf(b) === 'null'
          ? 'is no longer nullable'
          : typeOf(b) === 'number' && now.includes('integer')
            ? 'narrowed from number to integer'
            : `no longer accepts ${typeOf(b) ?? 'any type'} (now ${now})`;
      out.push({ rule: 'narrowed-type', path, message });
      continue;
    }
    // The old alternative only needs one new alternative that takes it: report the closest one.
    const attempts = candidates.map((a) => {
      const found: Incompatibility[] = [];
      compareVariant(b, a, path, roots, found);
      return found;
    });
    out.push(...attempts.reduce((x, y) => (y.length < x.length ? y : x)));
  }
}

const lowerBounds = ['minimum', 'exclusiveMinimum', 'minLength', 'minItems', 'minProperties'];
const upperBounds = ['maximum', 'exclusiveMaximum', 'maxLength', 'maxItems', 'maxProperties'];

function compareVariant(b: JsonSchema, a: JsonSchema, path: string, roots: Roots, out: Incompatibility[]): void {
  const valuesOf = (s: JsonSchema): unknown[] | undefined => (Array.isArray(s['enum']) ? s['enum'] : 'const' in s ? [s['const']] : undefined);
  const bValues = valuesOf(b);
  const aValues = valuesOf(a);
  if (aValues) {
    const allowed = new Set(aValues.map((v) => JSON.stringify(v)));
    if (!bValues) out.push({ rule: 'narrowed-type', path, message: `narrowed from any ${typeOf(b) ?? 'value'} to ${JSON.stringify(aValues)}` });
    else
      for (const v of bValues)
        if (!allowed.has(JSON.stringify(v))) out.push({ rule: 'removed-enum-value', path, message: `no longer accepts ${JSON.stringify(v)}` });
  }

  for (const key of ['format', 'pattern'])
    if (a[key] !== undefined && a[key] !== b[key]) out.push({ rule: 'narrowed-constraint', path, message: `now requires ${key} ${String(a[key])}` });
  for (const key of lowerBounds) {
    const [was, now] = [b[key], a[key]];
    if (typeof now === 'number' && (typeof was !== 'number' || now > was))
      out.push({ rule: 'narrowed-constraint', path, message: `${key} raised from ${String(was ?? 'none')} to ${now}` });
  }
  for (const key of upperBounds) {
    const [was, now] = [b[key], a[key]];
    if (typeof now === 'number' && (typeof was !== 'number' || now < was))
      out.push({ rule: 'narrowed-constraint', path, message: `${key} lowered from ${String(was ?? 'none')} to ${now}` });
  }

  const bProps = isSchema(b['properties']) ? b['properties'] : {};
  const aProps = isSchema(a['properties']) ? a['properties'] : {};
  const bRequired = new Set(Array.isArray(b['required']) ? b['required'] : []);
  const aRequired = new Set(Array.isArray(a['required']) ? a['required'] : []);
  for (const [key, bProp] of Object.entries(bProps)) {
    const at = `${path}.${key}`;
    const aProp = aProps[key];
    if (!isSchema(aProp)) out.push({ rule: 'removed-field', path: at, message: 'was removed' });
    else {
      if (isSchema(bProp)) compareNode(bProp, aProp, at, roots, out);
      if (bRequired.has(key) && !aRequired.has(key))
        out.push({ rule: 'no-longer-required', path: at, message: 'is no longer required (consumers of the snapshot rely on it)' });
    }
  }
  for (const key of aRequired) {
    if (bRequired.has(key)) continue;
    const at = `${path}.${String(key)}`;
    if (typeof key === 'string' && key in bProps) out.push({ rule: 'now-required', path: at, message: 'changed from optional to required' });
    else out.push({ rule: 'new-required-field', path: at, message: 'is a new required field (payloads written before lack it)' });
  }

  const bExtra = b['additionalProperties'] ?? true;
  const aExtra = a['additionalProperties'] ?? true;
  if (isSchema(bExtra) && isSchema(aExtra)) compareNode(bExtra, aExtra, `${path}[*]`, roots, out);
  else if (aExtra !== true && bExtra !== false)
    out.push({ rule: 'narrowed-constraint', path, message: 'no longer accepts the same additional properties' });

  if (isSchema(b['items']) && isSchema(a['items'])) compareNode(b['items'], a['items'], `${path}[]`, roots, out);
  if (Array.isArray(b['prefixItems']) && Array.isArray(a['prefixItems']))
    b['prefixItems'].forEach((item: unknown, i) => {
      const next: unknown = (a['prefixItems'] as unknown[])[i];
      if (isSchema(item) && isSchema(next)) compareNode(item, next, `${path}[${i}]`, roots, out);
    });
}

/** The event inputs of the check, each keyed by `dataschema` (`job.updated/v1`). */
export interface EventSources {
  contracts: Readonly<Record<string, z.ZodType>>;
  snapshots: Readonly<Record<string, JsonSchema>>;
  /** Golden `data` payloads, one per version. */
  samples: Readonly<Record<string, unknown>>;
}

/**
 * Checks each contract version against its committed snapshot and golden sample. Every version
 * is compared with its own snapshot only: a consumer parses an event with the contract its
 * `dataschema` names, and an incompatible shape is meant to be a new version (ARCHITECTURE.md),
 * so `v2` owes nothing to `v1`. A snapshot or sample left without a contract means a version
 * was removed while its events may still be in queues, the DLQ or replays: that fails too.
 */
export function checkEvents({ contracts, snapshots, samples }: EventSources): Violation[] {
  const violations: Violation[] = [];
  const orphans = new Set([...Object.keys(snapshots), ...Object.keys(samples)].filter((k) => !(k in contracts)));
  for (const event of [...orphans].sort())
    violations.push({ code: 'EVENT_VERSION_REMOVED', event, message: 'has a committed snapshot or sample but no contract: a version must not be removed while its events may exist' });

  for (const [event, contract] of Object.entries(contracts)) {
    const snapshot = snapshots[event];
    if (!snapshot)
      violations.push({ code: 'EVENT_SNAPSHOT_MISSING', event, message: `has no snapshot schema/events/${eventFileName(event)}`, fix: 'pnpm schema:compose' });
    else
      for (const issue of compareEventSchemas(snapshot, eventSnapshot(contract)))
        violations.push({ code: 'EVENT_INCOMPATIBLE', event, detail: issue.rule, coordinate: issue.path, message: issue.message });

    if (!(event in samples)) {
      violations.push({ code: 'EVENT_SAMPLE_MISSING', event, message: `has no golden sample schema/events/samples/${eventFileName(event)}` });
      continue;
    }
    const parsed = contract.safeParse(samples[event]);
    if (!parsed.success)
      for (const issue of parsed.error.issues)
        violations.push({
          code: 'EVENT_SAMPLE_INVALID',
          event,
          coordinate: ['$', ...issue.path.map(String)].join('.'),
          message: `the golden sample no longer parses: ${issue.message}`,
        });
  }
  return violations;
}
