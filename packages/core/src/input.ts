import { BREAK, GraphQLError, Kind, visit, type ASTNode, type DocumentNode, type FragmentDefinitionNode, type OperationDefinitionNode, type ValueNode } from 'graphql';
import { ApiErrorCode } from './graphql.ts';

/** Where a string the database cannot store was found. */
export interface UnstorableInput {
  /** The field (or `@directive`) whose argument holds it. */
  owner: string;
  /** The argument and the way into it: `input.title`, `input.events.1`. */
  field: string;
}

const NUL = '\u0000';

/**
 * The way to the first string holding NUL in a variable's value (an object, list or scalar as
 * sent), or undefined. The path is built only on the way back from a find: a variable such as
 * `_entities`' representations is walked on every entity fetch, and almost never holds one.
 */
function inValue(value: unknown): string[] | undefined {
  if (typeof value === 'string') return value.includes(NUL) ? [] : undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = inValue(value[i]);
      if (found) return [String(i), ...found];
    }
  } else if (typeof value === 'object' && value !== null) {
    for (const key of Object.keys(value)) {
      const found = inValue((value as Record<string, unknown>)[key]);
      if (found) return [key, ...found];
    }
  }
  return undefined;
}

/**
 * The first string holding U+0000 (NUL) in the arguments of `operation` (and of the fragments it
 * spreads): a string literal, or a string anywhere in a variable's value (its default when the
 * request gives none), however deep in input objects and lists. Every string is looked at, of
 * whatever type (String, ID, an enum or custom scalar sent as a string): none can hold NUL once
 * stored, since PostgreSQL's text and jsonb cannot.
 */
export function findUnstorableInput(document: DocumentNode, operation: OperationDefinitionNode, variables: Readonly<Record<string, unknown>> | undefined): UnstorableInput | undefined {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
  const defaults = new Map<string, ValueNode>();
  for (const definition of operation.variableDefinitions ?? []) if (definition.defaultValue) defaults.set(definition.variable.name.value, definition.defaultValue);

  const inNode = (node: ValueNode, path: string[]): string[] | undefined => {
    switch (node.kind) {
      case Kind.STRING:
        return node.value.includes(NUL) ? path : undefined;
      case Kind.VARIABLE: {
        const name = node.name.value;
        if (variables && Object.hasOwn(variables, name)) {
          const found = inValue(variables[name]);
          return found && [...path, ...found];
        }
        const fallback = defaults.get(name);
        return fallback ? inNode(fallback, path) : undefined;
      }
      case Kind.LIST:
        for (let i = 0; i < node.values.length; i++) {
          const found = inNode(node.values[i]!, [...path, String(i)]);
          if (found) return found;
        }
        return undefined;
      case Kind.OBJECT:
        for (const field of node.fields) {
          const found = inNode(field.value, [...path, field.name.value]);
          if (found) return found;
        }
        return undefined;
      default:
        return undefined;
    }
  };

  let found: UnstorableInput | undefined;
  const visited = new Set<string>();
  const queue: (OperationDefinitionNode | FragmentDefinitionNode)[] = [operation];
  while (queue.length > 0 && !found) {
    visit(queue.shift()!, {
      FragmentSpread(spread) {
        const name = spread.name.value;
        const fragment = fragments.get(name);
        if (fragment && !visited.has(name)) {
          visited.add(name);
          queue.push(fragment);
        }
      },
      Argument(argument, _key, parent, _path, ancestors) {
        const path = inNode(argument.value, [argument.name.value]);
        if (!path) return;
        // The field or directive the argument is given to: the nearest of them above it.
        const owner = [...ancestors, parent].reverse().find((node): node is ASTNode => !Array.isArray(node) && typeof node === 'object' && node !== null && 'kind' in node && (node.kind === Kind.FIELD || node.kind === Kind.DIRECTIVE));
        found = { owner: owner?.kind === Kind.DIRECTIVE ? `@${owner.name.value}` : owner?.kind === Kind.FIELD ? owner.name.value : '', field: path.join('.') };
        return BREAK;
      },
    });
  }
  return found;
}

/** The refusal of {@link findUnstorableInput}'s find: BAD_USER_INPUT naming the argument, HTTP 400. */
export function unstorableInputError(found: UnstorableInput): GraphQLError {
  const where = found.owner ? ` of ${found.owner}` : '';
  return new GraphQLError(`\`${found.field}\`${where} contains a NUL character (U+0000), which cannot be stored`, {
    extensions: { code: ApiErrorCode.BAD_USER_INPUT, field: found.field, http: { status: 400 } },
  });
}
