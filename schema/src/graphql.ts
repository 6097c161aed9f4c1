/**
 * The GraphQL steps of `pnpm schema:check`: composition errors, breaking changes of the
 * client-facing API schema, and client operations. Every function takes in-memory inputs.
 */
import { Supergraph } from '@apollo/federation-internals';
import { CriticalityLevel, diff, type Change } from '@graphql-inspector/core';
import type { ASTNode, DefinitionNode, DocumentNode, GraphQLError, GraphQLSchema } from 'graphql';
import { z } from 'zod';
import { graphql } from './graphql-js.ts';
import { SchemaCheckError, type Violation } from './report.ts';

const { Kind, parse, Source, validate } = graphql;

/**
 * Composition errors as violations, each naming Apollo's error code, the subgraphs involved and
 * the schema coordinate the error points at.
 * @param sdls the SDL each subgraph was composed from, by name: error locations are offsets into it
 */
export function compositionViolations(errors: readonly GraphQLError[], sdls: Readonly<Record<string, string>>): Violation[] {
  const parsed = new Map<string, DocumentNode>();
  const docOf = (name: string): DocumentNode | undefined => {
    const sdl = sdls[name];
    if (sdl === undefined) return undefined;
    if (!parsed.has(name)) parsed.set(name, parse(sdl));
    return parsed.get(name);
  };
  return errors.map((error) => {
    const subgraphs = new Set<string>();
    const coordinates = new Set<string>();
    for (const node of error.nodes ?? []) {
      // federation-internals tags the AST nodes of its errors with the subgraph they come from
      const subgraph = (node as ASTNode & { subgraph?: unknown }).subgraph;
      if (typeof subgraph !== 'string') continue;
      subgraphs.add(subgraph);
      const doc = docOf(subgraph);
      const coordinate = doc && node.loc ? coordinateAt(doc, node.loc.start) : undefined;
      if (coordinate) coordinates.add(coordinate);
    }
    const code = error.extensions['code'];
    return {
      code: 'COMPOSITION_ERROR',
      detail: typeof code === 'string' ? code : 'UNKNOWN',
      message: error.message,
      ...(subgraphs.size ? { subgraphs: [...subgraphs].sort() } : {}),
      ...(coordinates.size ? { coordinate: [...coordinates].join(', ') } : {}),
    } satisfies Violation;
  });
}

/** The schema coordinate (`Type`, `Type.field`, `Type.field(arg:)`) of the definition at `offset`. */
export function coordinateAt(doc: DocumentNode, offset: number): string | undefined {
  const within = (node: ASTNode): boolean => node.loc !== undefined && node.loc.start <= offset && offset < node.loc.end;
  const type = doc.definitions.find(within);
  if (!type || !('name' in type) || !type.name) return undefined;
  const fields = 'fields' in type ? (type.fields ?? []) : 'values' in type ? (type.values ?? []) : [];
  const field = fields.find(within);
  if (!field) return type.name.value;
  const arg = 'arguments' in field ? field.arguments?.find(within) : undefined;
  return `${type.name.value}.${field.name.value}${arg ? `(${arg.name.value}:)` : ''}`;
}

/** The schema clients see: the supergraph without federation's join/link machinery and inaccessible elements. */
export function apiSchema(supergraphSdl: string): GraphQLSchema {
  return Supergraph.build(supergraphSdl).apiSchema().toGraphQLJSSchema();
}

const approvedChangesSchema = z.array(
  z.strictObject({
    change: z.string().trim().min(1),
    reason: z.string().trim().min(1, 'a reason is required'),
  }),
);

/** An approved breaking change: `change` is the inspector's message or path (e.g. `Query.stats`). */
export type ApprovedChange = z.infer<typeof approvedChangesSchema>[number];

/**
 * Parses `schema/approved-changes.json`.
 * @throws SchemaCheckError `APPROVED_CHANGES_INVALID` when it is not JSON or not a list of `{ change, reason }`
 */
export function parseApprovedChanges(text: string, file = 'schema/approved-changes.json'): ApprovedChange[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SchemaCheckError('APPROVED_CHANGES_INVALID', `${file} is not JSON: ${(e as Error).message}`, { cause: e });
  }
  const parsed = approvedChangesSchema.safeParse(json);
  if (!parsed.success) throw new SchemaCheckError('APPROVED_CHANGES_INVALID', `${file}: ${z.prettifyError(parsed.error).replaceAll('\n', ' ')}`);
  return parsed.data;
}

export interface BreakingChangeResult {
  violations: Violation[];
  /** Dangerous changes, approved breaking changes with their reason, approvals that matched nothing. */
  notes: string[];
  counts: { breaking: number; approved: number; dangerous: number; safe: number };
}

/**
 * Classifies every change from `base` to `current` with @graphql-inspector/core. A breaking change
 * fails unless an entry of `approved` names its message or path; dangerous changes are notes.
 */
export async function checkBreakingChanges(
  base: GraphQLSchema,
  current: GraphQLSchema,
  approved: readonly ApprovedChange[] = [],
): Promise<BreakingChangeResult> {
  const changes: Change[] = await diff(base, current);
  const used = new Set<ApprovedChange>();
  const result: BreakingChangeResult = { violations: [], notes: [], counts: { breaking: 0, approved: 0, dangerous: 0, safe: 0 } };
  for (const change of changes) {
    const level = change.criticality.level;
    if (level === CriticalityLevel.NonBreaking) result.counts.safe++;
    else if (level === CriticalityLevel.Dangerous) {
      result.counts.dangerous++;
      result.notes.push(`dangerous: ${change.message}`);
    } else {
      const approval = approved.find((a) => a.change === change.message || a.change === change.path);
      if (approval) {
        used.add(approval);
        result.counts.approved++;
        result.notes.push(`approved breaking change: ${change.message} (${approval.reason})`);
        continue;
      }
      result.counts.breaking++;
      result.violations.push({
        code: 'BREAKING_CHANGE',
        detail: change.type,
        message: change.criticality.reason ? `${change.message}: ${change.criticality.reason}` : change.message,
        ...(change.path ? { coordinate: change.path } : {}),
      });
    }
  }
  // An approval outlives its change once the base moves past it; say so rather than fail.
  for (const a of approved) if (!used.has(a)) result.notes.push(`approval matched no change (can be removed): ${a.change}`);
  return result;
}

/**
 * Validates client operations against the API schema. The files are validated as one document,
 * so fragments may be shared across files and operation names must be unique; each error names
 * its file, line, the operation (or fragment) and graphql-js's message, which names the field.
 * @param files operation documents by repo-relative file name
 */
export function checkOperations(schema: GraphQLSchema, files: Readonly<Record<string, string>>): { violations: Violation[]; operations: number } {
  const violations: Violation[] = [];
  const docs = new Map<string, DocumentNode>();
  for (const [file, text] of Object.entries(files)) {
    try {
      docs.set(file, parse(new Source(text, file)));
    } catch (e) {
      violations.push({ code: 'INVALID_OPERATION', file, detail: 'SYNTAX', message: (e as GraphQLError).message });
    }
  }
  const definitions = [...docs.values()].flatMap((d) => d.definitions);
  for (const error of validate(schema, { kind: Kind.DOCUMENT, definitions })) {
    const loc = error.nodes?.[0]?.loc;
    const file = loc?.source.name;
    const definition = file !== undefined && loc ? docs.get(file)?.definitions.find((d) => d.loc && d.loc.start <= loc.start && loc.start < d.loc.end) : undefined;
    const line = error.locations?.[0];
    violations.push({
      code: 'INVALID_OPERATION',
      message: error.message,
      ...(file !== undefined ? { file: line ? `${file}:${line.line}:${line.column}` : file } : {}),
      ...(definition ? { operation: definitionName(definition) } : {}),
    });
  }
  return { violations, operations: definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION).length };
}

function definitionName(d: DefinitionNode): string {
  if (d.kind === Kind.OPERATION_DEFINITION) return d.name?.value ?? `(anonymous ${d.operation})`;
  if (d.kind === Kind.FRAGMENT_DEFINITION) return `fragment ${d.name.value}`;
  return d.kind;
}
