import { contracts } from '@tributary/contracts';
import { keyValue, valueAt, type ChangeBinding } from '@tributary/core/bindings';
import type { ZodType } from 'zod';

/** One entity (or, without `id`, a whole type) that an event says has changed. */
export interface EntityChange {
  type: string;
  /** The key's value; the values in key-field order for a compound key. */
  id?: string | readonly string[];
}

/** How one event version invalidates: the types it reports changes of, and what its data says changed. */
export interface InvalidationRule {
  /** Only these may be cached. */
  types: readonly string[];
  /** The changes; undefined when the data does not say (the tenant's results are dropped). */
  changes(data: unknown): EntityChange[] | undefined;
}

/** Keyed by the event's `dataschema` (`<type>/v<n>`). */
export type InvalidationRules = Readonly<Record<string, InvalidationRule>>;

/**
 * The cache's invalidation rules from the supergraph's `@changedBy` declarations: per event
 * version, the types it changes and where their keys are in its data. Each declaration is its
 * owner's promise that the event is written in the transaction that changes the type (the
 * outbox), so it never arrives before the change is visible. Types no event is declared for are
 * never cached.
 */
export function invalidationRules(changes: readonly ChangeBinding[]): InvalidationRules {
  const byEvent = new Map<string, ChangeBinding[]>();
  for (const change of changes) byEvent.set(change.event, [...(byEvent.get(change.event) ?? []), change]);
  const rules: Record<string, InvalidationRule> = {};
  for (const [event, bindings] of byEvent) {
    const contract = contractOf(event);
    rules[event] = {
      types: [...new Set(bindings.map((b) => b.type))],
      changes: (data) => {
        // Data that breaks its contract may hold any key: it says nothing reliable.
        if (contract && !contract.safeParse(data).success) return undefined;
        const found: EntityChange[] = [];
        for (const b of bindings) {
          if (!b.key) {
            found.push({ type: b.type });
            continue;
          }
          const id = keyValue(valueAt(data, b.key));
          // A key missing from the data: the event cannot say what changed.
          if (id === undefined) return undefined;
          found.push({ type: b.type, id });
        }
        return found;
      },
    };
  }
  return rules;
}

/** The registered contract of an event version, when there is one (a user's own subgraph may bring events of its own). */
export function contractOf(dataschema: string): ZodType | undefined {
  return Object.hasOwn(contracts, dataschema) ? (contracts as Record<string, ZodType>)[dataschema] : undefined;
}
