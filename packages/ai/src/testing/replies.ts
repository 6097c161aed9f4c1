import { OfflineEmbedder } from '../embeddings.ts';
import { analyzeOffline } from '../offline/analyzer.ts';
import type { Fault } from './faults.ts';

/** A JSON body, as the test server reads and writes them. */
export type Json = Record<string, any>;
/** A reply's status and body. */
export interface Reply {
  status: number;
  body: Json;
}

/** Tokens as the test server counts them: one per four characters. */
export const tokensOf = (text: string) => Math.ceil(text.length / 4);

/** OpenAI's error body. */
export function errorBody(message: string, type: string, code: string | null = null): Json {
  return { error: { message, type, param: null, code } };
}

/**
 * A chat completion: the offline analyzer's analysis of the last user message (or the content a
 * fault asks for), cut at the token cap with `finish_reason: length`; `id` numbers the completion.
 */
export function chatReply(body: Json, fault: Fault | undefined, nextId: () => number): Reply {
  if (typeof body.model !== 'string' || !Array.isArray(body.messages) || body.messages.length === 0) {
    return { status: 400, body: errorBody('model and messages are required.', 'invalid_request_error') };
  }
  const format = body.response_format;
  if (format?.type === 'json_schema') {
    const problem = format.json_schema?.name ? (format.json_schema.strict ? strictSchemaProblem(format.json_schema.schema, '#') : undefined) : 'json_schema.name is required';
    if (problem) return { status: 400, body: errorBody(`Invalid schema for response_format: ${problem}`, 'invalid_request_error', 'invalid_json_schema') };
  }
  const texts: string[] = body.messages.map((m: Json) => (typeof m.content === 'string' ? m.content : JSON.stringify(m.content ?? '')));
  let content = chatContent(body, fault);
  let finishReason = 'stop';
  const cap = body.max_completion_tokens ?? body.max_tokens;
  if (typeof cap === 'number' && tokensOf(content) > cap) {
    content = content.slice(0, cap * 4);
    finishReason = 'length';
  }
  const prompt = texts.reduce((sum, t) => sum + tokensOf(t), 0);
  const completion = tokensOf(content);
  return {
    status: 200,
    body: {
      id: `chatcmpl-test${nextId()}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: body.model,
      choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: finishReason }],
      usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
    },
  };
}

/** The message content: the offline analysis of the last user message without its tags, or what an invalid-json or schema-violation fault sends. */
function chatContent(body: Json, fault: Fault | undefined): string {
  if (fault?.type === 'invalid-json') return '{"summary": "this reply stops in the middle of a stri';
  if (fault?.type === 'schema-violation') return JSON.stringify({ summary: '', themes: 'none', keywords: [], sentiment: { label: 'HAPPY', score: 7 } });
  const user = [...body.messages].reverse().find((m: Json) => m.role === 'user');
  const text = String(user?.content ?? '').replace(/<\/?[a-z_]+>/gi, ' ');
  return JSON.stringify(text.trim() ? analyzeOffline({ text }) : { summary: '-', themes: [], keywords: [], sentiment: { label: 'NEUTRAL', score: 0 } });
}

/** Embeddings: offline hashed vectors of `dimensions` (the request's, else the server's default), float or base64. */
export function embeddingsReply(body: Json, defaultDimensions: number): Reply {
  const input: unknown[] = typeof body.input === 'string' ? [body.input] : Array.isArray(body.input) ? body.input : [];
  if (typeof body.model !== 'string' || input.length === 0 || !input.every((t) => typeof t === 'string')) {
    return { status: 400, body: errorBody('model and input (a string or strings) are required.', 'invalid_request_error') };
  }
  const texts = input as string[];
  if (texts.some((t) => t.trim() === '')) return { status: 400, body: errorBody("'$.input' is invalid: empty string.", 'invalid_request_error') };
  const embedder = new OfflineEmbedder(body.dimensions ?? defaultDimensions);
  const data = texts.map((text, index) => {
    const vector = embedder.vector(text);
    const embedding = body.encoding_format === 'base64' ? Buffer.from(new Float32Array(vector).buffer).toString('base64') : vector;
    return { object: 'embedding', index, embedding };
  });
  const prompt = texts.reduce((sum, t) => sum + tokensOf(t), 0);
  return { status: 200, body: { object: 'list', data, model: body.model, usage: { prompt_tokens: prompt, total_tokens: prompt } } };
}

/** What OpenAI's strict mode rejects: an object not closed or with an optional property, string length limits. */
function strictSchemaProblem(schema: unknown, path: string): string | undefined {
  if (typeof schema !== 'object' || schema === null) return `${path} is not a schema`;
  const node = schema as Json;
  const unsupported = ['minLength', 'maxLength'].find((keyword) => keyword in node);
  if (unsupported) return `${path}: '${unsupported}' is not permitted`;
  if (node.type === 'object') {
    if (node.additionalProperties !== false) return `${path}: additionalProperties must be false`;
    const names = Object.keys(node.properties ?? {});
    const required = new Set<string>(node.required ?? []);
    const missing = names.filter((n) => !required.has(n));
    if (missing.length > 0) return `${path}: every property must be required (${missing.join(', ')})`;
    for (const name of names) {
      const problem = strictSchemaProblem(node.properties[name], `${path}/properties/${name}`);
      if (problem) return problem;
    }
  }
  if (node.type === 'array' && node.items !== undefined) return strictSchemaProblem(node.items, `${path}/items`);
  return undefined;
}
