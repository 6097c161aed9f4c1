import {
  getNamedType,
  getOperationAST,
  isAbstractType,
  isListType,
  isNonNullType,
  isObjectType,
  Kind,
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLField,
  type GraphQLObjectType,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValueNode,
} from 'graphql';
import type { SchemaFacts } from './facts.ts';
import { collectTags, KEY_SEP, type Shape } from './tags.ts';

/** Why an operation (or a part of it) is not cached. */
export interface Uncacheable {
  cacheable: false;
  reason: string;
}

/** A query that may be cached: the tags it always carries, and its lookups by key. */
export interface CachePlan {
  cacheable: true;
  staticTags: readonly string[];
  anchors: readonly Anchor[];
}

/** A cache plan for one operation: whether it may be cached, and the tags it always carries. */
export type Plan = Uncacheable | CachePlan;

/** A root field that looks one entity up by its key (`order(id:)`): its result belongs to that entity. */
export interface Anchor {
  responseKey: string;
  type: string;
  /** The key value from the arguments (literals or variables). */
  id(variables: Readonly<Record<string, unknown>> | undefined): string | undefined;
  shape: Shape;
}

const uncacheable = (reason: string): Uncacheable => ({ cacheable: false, reason });
export const isUncacheable = (value: object): value is Uncacheable => 'cacheable' in value && value.cacheable === false;

function literal(node: ValueNode, variables: Readonly<Record<string, unknown>> | undefined): string | undefined {
  if (node.kind === Kind.VARIABLE) {
    const value = variables?.[node.name.value];
    return typeof value === 'string' || typeof value === 'number' ? String(value) : undefined;
  }
  if (node.kind === Kind.STRING || node.kind === Kind.INT) return node.value;
  return undefined;
}

/** Walks one operation's selections against the schema and the supergraph's facts. */
export class Planner {
  constructor(
    private readonly schema: GraphQLSchema,
    private readonly facts: SchemaFacts,
    /** The types results may hold. */
    private readonly types: ReadonlySet<string>,
    private readonly fragments: ReadonlyMap<string, FragmentDefinitionNode>,
    /** Mutations are walked only to find what they changed: every type, and `@volatile` fields, are allowed. */
    private readonly checkTypes: boolean,
  ) {}

  /** Fields of selection sets on a concrete type, grouped by response key (fragments inlined). */
  collect(sets: readonly (SelectionSetNode | undefined)[], type: GraphQLObjectType, into = new Map<string, FieldNode[]>()): Map<string, FieldNode[]> {
    for (const set of sets) {
      for (const selection of set?.selections ?? []) {
        if (selection.kind === Kind.FIELD) {
          const key = selection.alias?.value ?? selection.name.value;
          const list = into.get(key);
          if (list) list.push(selection);
          else into.set(key, [selection]);
        } else {
          const fragment = selection.kind === Kind.INLINE_FRAGMENT ? selection : this.fragments.get(selection.name.value);
          if (!fragment) continue;
          const condition = fragment.typeCondition?.name.value;
          if (condition === undefined || condition === type.name) this.collect([fragment.selectionSet], type, into);
          else {
            const conditionType = this.schema.getType(condition);
            if (conditionType && isAbstractType(conditionType) && this.schema.isSubType(conditionType, type)) this.collect([fragment.selectionSet], type, into);
          }
        }
      }
    }
    return into;
  }

  /**
   * The shape of the selection `nodes` on `type`, or why it is not cacheable. Adds `all:<T>` for
   * every type met into `tags`, and `any:<T>` too when `whole` (a list's members are unknown until
   * it is read again).
   */
  shape(nodes: readonly FieldNode[], type: GraphQLObjectType, tags: Set<string>, whole: boolean): Shape | Uncacheable {
    const entity = this.facts.keys.has(type.name);
    if (this.checkTypes && entity && !this.types.has(type.name)) return uncacheable(`${type.name} is not a cached type`);
    tags.add(`all:${type.name}`);
    if (whole) tags.add(`any:${type.name}`);
    const fields = this.collect(
      nodes.map((n) => n.selectionSet),
      type,
    );
    const children: (readonly [string, Shape])[] = [];
    for (const [responseKey, fieldNodes] of fields) {
      const name = fieldNodes[0]!.name.value;
      if (name === '__typename') continue;
      const definition = type.getFields()[name];
      if (!definition) return uncacheable(`${type.name}.${name} is unknown`);
      if (this.checkTypes && this.facts.volatile.has(`${type.name}.${name}`)) return uncacheable(`${type.name}.${name} is @volatile: no event says when it changes`);
      const named = getNamedType(definition.type);
      if (isAbstractType(named)) return uncacheable(`${type.name}.${name} is abstract`);
      if (!isObjectType(named)) continue;
      const child = this.shape(fieldNodes, named, tags, whole);
      if (isUncacheable(child)) return child;
      children.push([responseKey, child]);
    }
    return { type: type.name, entity, keyResponseKeys: this.keyResponseKeys(type, fields), children };
  }

  /** Response keys of `type`'s key fields in `fields`, when the selection has them all. */
  private keyResponseKeys(type: GraphQLObjectType, fields: ReadonlyMap<string, readonly FieldNode[]>): string[] | null {
    const keyFields = this.facts.keys.get(type.name);
    if (!keyFields) return null;
    const found: string[] = [];
    for (const keyField of keyFields) {
      const match = [...fields].find(([, nodes]) => nodes.some((n) => n.name.value === keyField && !n.arguments?.length));
      if (!match) return null;
      found.push(match[0]);
    }
    return found;
  }

  /**
   * The entity types that decide what a value of `type` holds: itself if an entity, else those
   * reachable through value types (`OrderConnection` → `OrderEdge` → `Order`).
   */
  members(type: GraphQLObjectType, seen = new Set<string>()): Set<string> {
    const found = new Set<string>();
    if (seen.has(type.name)) return found;
    seen.add(type.name);
    if (this.facts.keys.has(type.name) || this.facts.wholeTypes.has(type.name)) return found.add(type.name);
    for (const field of Object.values(type.getFields())) {
      const named = getNamedType(field.type);
      const objects = isObjectType(named) ? [named] : isAbstractType(named) ? this.schema.getPossibleTypes(named) : [];
      for (const object of objects) for (const member of this.members(object, seen)) found.add(member);
    }
    return found;
  }

  /**
   * A root field whose arguments are exactly its entity's key (`order(id: ID!): Order`): an
   * anchor, or why its selection is not cacheable; undefined for any other field.
   */
  anchor(responseKey: string, field: GraphQLField<unknown, unknown>, node: FieldNode, type: GraphQLObjectType, tags: Set<string>): Anchor | Uncacheable | undefined {
    const keyFields = this.facts.keys.get(type.name);
    const unwrapped = isNonNullType(field.type) ? field.type.ofType : field.type;
    if (!keyFields || isListType(unwrapped)) return undefined;
    const argNames = field.args.map((a) => a.name);
    if (argNames.length !== keyFields.length || !keyFields.every((k) => argNames.includes(k))) return undefined;
    const values = keyFields.map((k) => node.arguments?.find((a) => a.name.value === k)?.value);
    if (values.some((v) => v === undefined)) return undefined;
    const shape = this.shape([node], type, tags, false);
    if (isUncacheable(shape)) return shape;
    return {
      responseKey,
      type: type.name,
      id: (variables) => {
        const parts = values.map((v) => literal(v!, variables));
        return parts.every((p) => p !== undefined) ? parts.join(KEY_SEP) : undefined;
      },
      shape,
    };
  }
}

/** An operation of a document, its root type, and a planner over the document's fragments. */
export interface OpenedOperation {
  operation: OperationDefinitionNode;
  root: GraphQLObjectType;
  planner: Planner;
}

export function openOperation(
  schema: GraphQLSchema,
  document: DocumentNode,
  operationName: string | null | undefined,
  facts: SchemaFacts,
  types: ReadonlySet<string>,
  checkTypes: boolean,
): OpenedOperation | undefined {
  const operation = getOperationAST(document, operationName);
  const root = operation && schema.getRootType(operation.operation);
  if (!operation || !root) return undefined;
  const fragments = new Map(document.definitions.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION).map((d) => [d.name.value, d]));
  return { operation, root, planner: new Planner(schema, facts, types, fragments, checkTypes) };
}

/** Whether a query may be cached, and the tags its results always carry. */
export function planQuery(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, facts: SchemaFacts, types: ReadonlySet<string>): Plan {
  const opened = openOperation(schema, document, operationName, facts, types, true);
  if (!opened) return uncacheable('no operation');
  const { operation, root, planner } = opened;
  if (operation.operation !== 'query') return uncacheable(operation.operation);
  const staticTags = new Set<string>();
  const anchors: Anchor[] = [];
  for (const [responseKey, nodes] of planner.collect([operation.selectionSet], root)) {
    const name = nodes[0]!.name.value;
    if (name === '__typename') continue;
    const field = root.getFields()[name];
    if (!field || name.startsWith('__')) return uncacheable(`${name} is not cacheable`);
    if (facts.volatile.has(`${root.name}.${name}`)) return uncacheable(`${root.name}.${name} is @volatile: no event says when it changes`);
    const type = getNamedType(field.type);
    if (!isObjectType(type)) return uncacheable(`${root.name}.${name} returns no object type`);
    const anchor = nodes.length === 1 ? planner.anchor(responseKey, field, nodes[0]!, type, staticTags) : undefined;
    if (anchor && isUncacheable(anchor)) return anchor;
    if (anchor) anchors.push(anchor);
    else {
      const listed = planList(planner, root, name, type, nodes, types, staticTags);
      if (listed) return listed;
    }
  }
  return { cacheable: true, staticTags: [...staticTags], anchors };
}

/**
 * A root field other than a lookup by key: a list's members can change without any member
 * changing, so any change of a type that decides its membership drops it. Adds its tags;
 * returns why it is not cacheable, if it is not.
 */
function planList(planner: Planner, root: GraphQLObjectType, name: string, type: GraphQLObjectType, nodes: readonly FieldNode[], types: ReadonlySet<string>, staticTags: Set<string>): Uncacheable | undefined {
  const members = planner.members(type);
  if (members.size === 0) return uncacheable(`${root.name}.${name}: no entity type decides its result`);
  for (const member of members) {
    if (!types.has(member)) return uncacheable(`${member} is not a cached type`);
    staticTags.add(`any:${member}`);
  }
  const shape = planner.shape(nodes, type, staticTags, true);
  return isUncacheable(shape) ? shape : undefined;
}

/** The tags of a result: its static type tags, its anchors' keys, and every entity it holds. */
export function tagsOf(plan: CachePlan, data: Record<string, unknown>, variables: Readonly<Record<string, unknown>> | undefined): string[] {
  const tags = ['*', ...plan.staticTags];
  for (const anchor of plan.anchors) {
    const id = anchor.id(variables);
    tags.push(id === undefined ? `any:${anchor.type}` : `${anchor.type}:${id}`);
    collectTags(data[anchor.responseKey], anchor.shape, tags, true);
  }
  return tags;
}
