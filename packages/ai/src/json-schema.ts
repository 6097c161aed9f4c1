import { z } from 'zod';
import { analysisOutputSchema } from './types.ts';

type JsonSchema = { [key: string]: unknown };

// Keywords OpenAI's strict structured outputs reject; the zod parse after the call still enforces them.
const UNSUPPORTED = ['minLength', 'maxLength'] as const;

/**
 * A JSON schema from a zod schema that OpenAI's strict structured outputs accept: no `$schema`,
 * every object closed (`additionalProperties: false`) with every property required, and length
 * limits (unsupported there) moved into `description` so the model still reads them.
 * @throws Error when the schema has an optional property (strict mode cannot express it).
 */
export function toStrictJsonSchema(schema: z.ZodType): JsonSchema {
  const { $schema: _, ...json } = z.toJSONSchema(schema, { io: 'output' }) as JsonSchema;
  return strictify(json, '#');
}

function strictify(node: JsonSchema, path: string): JsonSchema {
  const out: JsonSchema = {};
  for (const [key, value] of Object.entries(node)) {
    if ((UNSUPPORTED as readonly string[]).includes(key)) continue;
    if (key === 'properties') {
      out.properties = Object.fromEntries(
        Object.entries(value as Record<string, JsonSchema>).map(([name, child]) => [name, strictify(child, `${path}/${name}`)]),
      );
    } else if (key === 'items' && typeof value === 'object' && value !== null) out.items = strictify(value as JsonSchema, `${path}/items`);
    else out[key] = value;
  }
  if (out.type === 'object') {
    const names = Object.keys((out.properties as object | undefined) ?? {});
    const required = new Set((out.required as string[] | undefined) ?? []);
    const optional = names.filter((name) => !required.has(name));
    if (optional.length > 0) throw new Error(`strict JSON schema: ${path} has optional properties (${optional.join(', ')})`);
    out.required = names;
    out.additionalProperties = false;
  }
  const { minLength: min, maxLength: max } = node as { minLength?: number; maxLength?: number };
  if (min !== undefined || max !== undefined) {
    const limit = max === undefined ? `at least ${min}` : min === undefined || min === 0 ? `at most ${max}` : `${min} to ${max}`;
    out.description = [out.description, `${limit} characters`].filter(Boolean).join('; ');
  }
  return out;
}

/** {@link analysisOutputSchema} as a strict JSON schema, the `response_format` of every LLM call. */
export const analysisJsonSchema: JsonSchema = toStrictJsonSchema(analysisOutputSchema);
