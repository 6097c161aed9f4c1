/**
 * The client's answer from the merged subgraph data, in one walk over a selection tree compiled
 * once per operation. It is Apollo Gateway's `computeResponse` (resultShaping.js, 2.14) step for
 * step, so the answer is the same byte for byte: the same key order, null propagation, error
 * messages and paths. What Apollo does again on every request and every object (reading each
 * selection's directives, the field's type and response name through federation-internals'
 * accessors, `isSubtype` per fragment and object) is done here once, when the operation is
 * compiled.
 */
import {
  ERRORS,
  Variable,
  assert,
  isCompositeType,
  isCustomScalarType,
  isListType,
  isNonNullType,
  isObjectType,
  isSubtype,
  isValidLeafValue,
  type CompositeType,
  type EnumType,
  type ScalarType,
  type Operation,
  type OutputType,
  type Schema,
  type SelectionSet,
} from '@apollo/federation-internals';
import type { GraphQLError } from 'graphql';

type Json = Record<string, unknown>;

/** An `if:` of @skip/@include: a literal, or the variable it names. */
type Condition = boolean | { variable: string };

/** How one field's value is completed: Apollo's `updateOutputValue` over the field's type. */
type Completion =
  | { readonly kind: 'nonNull'; readonly of: Completion; readonly type: OutputType }
  | { readonly kind: 'list'; readonly of: Completion; readonly type: OutputType }
  | { readonly kind: 'composite'; readonly type: CompositeType }
  | { readonly kind: 'leaf'; readonly type: ScalarType | EnumType; readonly custom: boolean };

interface Conditions {
  readonly skip: Condition | undefined;
  readonly include: Condition | undefined;
}

interface FieldNode {
  readonly kind: 'field';
  readonly conditions: Conditions | undefined;
  readonly responseName: string;
  readonly typename: boolean;
  readonly completion: Completion;
  /** The field's sub-selections (undefined for a leaf). */
  readonly selections: readonly ShapeNode[] | undefined;
}

interface FragmentNode {
  readonly kind: 'fragment';
  readonly conditions: Conditions | undefined;
  readonly typeCondition: CompositeType | undefined;
  /** Whether the type condition applies to an object of the type with this name (filled as met). */
  readonly applies: Map<string, boolean>;
  readonly selections: readonly ShapeNode[];
}

type ShapeNode = FieldNode | FragmentNode;

/** An operation's selections, compiled for {@link shapeResponse}. */
export interface Shape {
  readonly schema: Schema;
  readonly root: CompositeType;
  readonly selections: readonly ShapeNode[];
  /** The operation's variable defaults, under the request's variables (as Apollo merges them). */
  readonly defaults: Json;
  /** Whether any selection carries @skip/@include (so the variables are needed at all). */
  readonly conditional: boolean;
}

/**
 * Compiles `operation` (built on the API schema), or returns undefined when it selects schema
 * introspection (`__schema`, `__type`), which Apollo answers through graphql-js: those operations
 * are left to Apollo's executor.
 */
export function compileShape(operation: Operation): Shape | undefined {
  const schema = operation.schema();
  const root = schema.schemaDefinition.rootType(operation.rootKind);
  assert(root, () => `no ${operation.rootKind} root type`);
  const state = { conditional: false, introspection: false };
  const selections = compileSelections(operation.selectionSet, schema, state);
  if (state.introspection) return undefined;
  return { schema, root, selections, defaults: operation.collectDefaultedVariableValues(), conditional: state.conditional };
}

function compileSelections(selectionSet: SelectionSet, schema: Schema, state: { conditional: boolean; introspection: boolean }): ShapeNode[] {
  const nodes: ShapeNode[] = [];
  for (const selection of selectionSet.selections()) {
    const element = selection.element;
    const skip = element.appliedDirectivesOf(schema.skipDirective())[0];
    const include = element.appliedDirectivesOf(schema.includeDirective())[0];
    const conditions = skip || include ? { skip: skip ? conditionOf(skip.arguments().if) : undefined, include: include ? conditionOf(include.arguments().if) : undefined } : undefined;
    if (conditions) state.conditional = true;
    if (selection.kind === 'FieldSelection') {
      const field = selection.element;
      if (field.definition.isSchemaIntrospectionField()) state.introspection = true;
      nodes.push({
        kind: 'field',
        conditions,
        responseName: field.responseName(),
        typename: field.name === '__typename',
        completion: completionOf(field.definition.type!),
        selections: selection.selectionSet ? compileSelections(selection.selectionSet, schema, state) : undefined,
      });
    } else {
      nodes.push({
        kind: 'fragment',
        conditions,
        typeCondition: selection.element.typeCondition,
        applies: new Map(),
        selections: compileSelections(selection.selectionSet, schema, state),
      });
    }
  }
  return nodes;
}

function conditionOf(value: unknown): Condition {
  if (value instanceof Variable) return { variable: value.name };
  return value as boolean;
}

function completionOf(type: OutputType): Completion {
  if (isNonNullType(type)) return { kind: 'nonNull', of: completionOf(type.ofType), type };
  if (isListType(type)) return { kind: 'list', of: completionOf(type.ofType), type };
  if (isCompositeType(type)) return { kind: 'composite', type };
  return { kind: 'leaf', type: type as ScalarType | EnumType, custom: isCustomScalarType(type) };
}

const getOwn = (object: object, key: string): unknown => (Object.hasOwn(object, key) ? (object as Json)[key] : undefined);

interface Run {
  readonly schema: Schema;
  readonly variables: Json;
  readonly errors: GraphQLError[];
  readonly path: (string | number)[];
}

/** Apollo's result: the data (null when a non-null violation reached the root) and the value-completion errors. */
export function shapeResponse(shape: Shape, input: Json | undefined, variables: Json | undefined): { data: Json | null | undefined; errors: GraphQLError[] } {
  if (!input) return { data: input, errors: [] };
  const run: Run = {
    schema: shape.schema,
    variables: shape.conditional ? { __proto__: null, ...shape.defaults, ...variables } : (variables ?? {}),
    errors: [],
    path: [],
  };
  const data: Json = Object.create(null);
  const bubbled = applySelections(run, shape.selections, input, data, shape.root);
  return { data: bubbled ? null : data, errors: run.errors };
}

function skipped(conditions: Conditions, variables: Json): boolean {
  return (conditions.skip !== undefined && ifValue(conditions.skip, variables)) || (conditions.include !== undefined && !ifValue(conditions.include, variables));
}

function ifValue(condition: Condition, variables: Json): boolean {
  if (typeof condition === 'boolean') return condition;
  const value = variables[condition.variable];
  assert(value !== undefined && typeof value === 'boolean', () => `Unexpected value ${String(value)} for variable $${condition.variable}`);
  return value;
}

/** Apollo's `applySelectionSet`; true for its NULL_BUBBLE_UP. */
function applySelections(run: Run, selections: readonly ShapeNode[], input: Json, output: Json, parentType: CompositeType): boolean {
  for (const node of selections) {
    if (node.conditions && skipped(node.conditions, run.variables)) continue;
    if (node.kind === 'field') {
      const responseName = node.responseName;
      const outputValue = output[responseName];
      let inputValue = getOwn(input, responseName) ?? null;
      if (node.typename) {
        if (outputValue === undefined) {
          if (inputValue === null && responseName !== '__typename') inputValue = input.__typename ?? null;
          const type = inputValue !== null && typeof inputValue === 'string' ? (run.schema.type(inputValue) ?? parentType) : parentType;
          if (!isObjectType(type)) return true;
          output[responseName] = type.name;
        }
        continue;
      }
      run.path.push(responseName);
      const result = complete(run, node.completion, outputValue, inputValue, node.selections, parentType);
      output[responseName] = result.updated;
      run.path.pop();
      if (result.isInvalid) return true;
    } else {
      const typename = input.__typename;
      assert(!typename || typeof typename === 'string', () => `Got unexpected value for __typename: ${String(typename)}`);
      if (typeConditionApplies(run.schema, node, typename as string | undefined, parentType)) {
        if (applySelections(run, node.selections, input, output, node.typeCondition ?? parentType)) return true;
      }
    }
  }
  return false;
}

function typeConditionApplies(schema: Schema, node: FragmentNode, typename: string | undefined, parentType: CompositeType): boolean {
  const condition = node.typeCondition;
  if (!condition) return true;
  // Apollo tests the object's own type when it has a __typename, else the parent type: the same
  // isSubtype, so one answer per type name.
  const name = typename || parentType.name;
  let applies = node.applies.get(name);
  if (applies === undefined) {
    const type = typename ? schema.type(typename) : parentType;
    applies = !!type && isSubtype(condition, type);
    node.applies.set(name, applies);
  }
  return applies;
}

interface Completed {
  updated: unknown;
  isInvalid?: boolean;
  hasErrors?: boolean;
}

function describeLast(path: readonly (string | number)[], type: OutputType, parentType: CompositeType): string {
  const element = path[path.length - 1];
  assert(element !== undefined, 'Should not have been called on an empty path');
  return typeof element === 'string' ? `field ${parentType}.${element}` : `array element of type ${type} at index ${element}`;
}

/** Apollo's `updateOutputValue`. */
function complete(run: Run, completion: Completion, outputValue: unknown, inputValue: unknown, selections: readonly ShapeNode[] | undefined, parentType: CompositeType): Completed {
  if (outputValue === null || (outputValue !== undefined && !selections)) return { updated: outputValue };
  switch (completion.kind) {
    case 'nonNull': {
      const inner = complete(run, completion.of, outputValue, inputValue, selections, parentType);
      if (inner.updated === null) {
        if (!inner.hasErrors) {
          run.errors.push(ERRORS.INVALID_GRAPHQL.err(`Cannot return null for non-nullable ${describeLast(run.path, completion.of.type, parentType)}.`, { path: Array.from(run.path) }));
        }
        return { updated: null, isInvalid: true, hasErrors: true };
      }
      return { updated: inner.updated };
    }
    case 'list': {
      if (inputValue === null) return { updated: null };
      assert(Array.isArray(inputValue), () => `Invalid non-list value ${String(inputValue)} returned by subgraph for list type ${completion.type}`);
      assert(outputValue === undefined || Array.isArray(outputValue), () => `Invalid non-list value ${String(outputValue)} returned by subgraph for list type ${completion.type}`);
      const outputs = outputValue === undefined ? undefined : (outputValue as unknown[]);
      assert(outputs === undefined || inputValue.length === outputs.length, () => `[${String(inputValue)}].length (${inputValue.length}) !== [${String(outputs)}].length (${outputs!.length})`);
      let shouldNullify = false;
      let hasErrors = false;
      const updated = new Array<unknown>(inputValue.length);
      for (let i = 0; i < inputValue.length; i++) {
        run.path.push(i);
        const element = complete(run, completion.of, outputs?.[i], inputValue[i], selections, parentType);
        run.path.pop();
        if (element.isInvalid) shouldNullify = true;
        if (element.hasErrors) hasErrors = true;
        updated[i] = element.updated;
      }
      return { updated: shouldNullify ? null : updated, hasErrors };
    }
    case 'composite': {
      if (inputValue === null) return { updated: null };
      assert(selections, () => `Invalid empty selection set for composite type ${completion.type}`);
      assert(typeof inputValue === 'object', () => `Invalid non-object value ${String(inputValue)} returned by subgraph for composite type ${completion.type}`);
      assert(outputValue === undefined || typeof outputValue === 'object', () => `Invalid non-object value ${String(inputValue)} returned by subgraph for composite type ${completion.type}`);
      const inputTypename = (inputValue as Json).__typename;
      assert(inputTypename === undefined || typeof inputTypename === 'string', () => `Invalid non-string value ${String(inputTypename)} for __typename at ${run.path.join(',')}`);
      let objectType: CompositeType = completion.type;
      if (inputTypename) {
        const named = run.schema.type(inputTypename);
        if (!named || !isCompositeType(named)) {
          run.errors.push(ERRORS.INVALID_GRAPHQL.err(`Invalid __typename found for object at ${describeLast(run.path, completion.type, parentType)}.`, { path: Array.from(run.path) }));
          return { updated: null, hasErrors: true };
        }
        objectType = named;
      }
      const output = outputValue === undefined ? (Object.create(null) as Json) : (outputValue as Json);
      const bubbled = applySelections(run, selections, inputValue as Json, output, objectType);
      return { updated: bubbled ? null : output, hasErrors: bubbled };
    }
    case 'leaf': {
      if (inputValue === null) return { updated: null };
      assert(outputValue === undefined, () => `Excepted output to be undefined but got ${completion.type} for type ${completion.type}`);
      const valid = completion.custom || isValidLeafValue(run.schema, inputValue, completion.type);
      if (!valid) run.errors.push(ERRORS.INVALID_GRAPHQL.err(`Invalid value found for ${describeLast(run.path, completion.type, parentType)}.`, { path: Array.from(run.path) }));
      return { updated: valid ? inputValue : null, hasErrors: !valid };
    }
  }
}
