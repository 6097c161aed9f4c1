import type { EntityChange } from './rules.ts';

/**
 * A result's tags: `T:<id>` per entity it holds, `any:T` where it depends on a type as a whole
 * (a list, an entity whose key was not selected), `all:T` for every type met, and `*` on every
 * result. Kept per tenant: every tag and key is scoped by {@link scoped}.
 */

/** Joins a compound key's values. */
export const KEY_SEP = '\u001f';
const SEP = '\u0000';

/** A key or tag of one tenant's. */
export const scoped = (tenant: string, value: string): string => tenant + SEP + value;

/** The parts of a cache key, joined so that no part can run into the next. */
export const joinKey = (...parts: readonly string[]): string => parts.join(SEP);

/** Where the entities are in a result: the selection, flattened, with key fields located. */
export interface Shape {
  type: string;
  entity: boolean;
  /** Response keys of the key fields, when the selection has them all. */
  keyResponseKeys: readonly string[] | null;
  children: ReadonlyArray<readonly [string, Shape]>;
}

/**
 * The tags a change drops: `T:<id>` and `any:T` for one entity; for a whole type (no id), `all:T`,
 * which every result holding a T carries.
 */
export const tagOf = (change: EntityChange): string[] => {
  if (change.id === undefined) return [`all:${change.type}`];
  const id = typeof change.id === 'string' ? change.id : change.id.join(KEY_SEP);
  return [`any:${change.type}`, `${change.type}:${id}`];
};

/** Identified entities in a value of `shape`: `T:<id>` tags, or `any:T` when the key is missing. */
export function collectTags(value: unknown, shape: Shape, tags: string[], root: boolean): void {
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    for (const item of value) collectTags(item, shape, tags, false);
    return;
  }
  const object = value as Record<string, unknown>;
  if (shape.entity && !root) {
    const parts = shape.keyResponseKeys?.map((k) => object[k]);
    if (parts && parts.every((p) => typeof p === 'string' || typeof p === 'number')) tags.push(`${shape.type}:${parts.join(KEY_SEP)}`);
    else tags.push(`any:${shape.type}`);
  }
  for (const [key, child] of shape.children) collectTags(object[key], child, tags, false);
}

/** The changes entity tags stand for: `any:T` a whole type, `T:<id>` one entity. */
export function changesOfTags(tags: readonly string[]): EntityChange[] {
  return [...new Set(tags)].map((tag) => {
    if (tag.startsWith('any:')) return { type: tag.slice(4) };
    const at = tag.indexOf(':');
    return { type: tag.slice(0, at), id: tag.slice(at + 1).split(KEY_SEP) };
  });
}
