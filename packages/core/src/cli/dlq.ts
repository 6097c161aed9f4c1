#!/usr/bin/env -S node --import tsx
/**
 * `pnpm dlq` — list, inspect and replay dead-lettered events (on whichever broker EVENT_BUS_URL names).
 *
 *   pnpm dlq list    <queue> [--limit N] [--json]
 *   pnpm dlq inspect <queue> <event-id> [--json]
 *   pnpm dlq replay  <queue> (--id <event-id>... | --all) [--limit N]
 *
 * `<queue>` is `<service>.<consumer>` (prefixed with TRIBUTARY_NAMESPACE) or a full queue name.
 * Needs EVENT_BUS_URL (or AMQP_URL). Exit codes: 0 done, 1 nothing matched, 2 usage or connection error.
 */
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { baseConfigSchema, ConfigError, eventBusUrl, loadConfig } from '../config.ts';
import { errorMessage } from '../errors.ts';
import { createLogger } from '../log.ts';
import { progress } from '../progress.ts';
import { createTransport } from '../events/create.ts';
import { Headers, type DeadLetter, type Transport } from '../events/transport.ts';

const USAGE = `usage:
  pnpm dlq list    <queue> [--limit N] [--json]
  pnpm dlq inspect <queue> <event-id> [--json]
  pnpm dlq replay  <queue> (--id <event-id>... | --all) [--limit N]
<queue> is <service>.<consumer> (e.g. analysis.document-uploaded) or a full queue name.`;


function summarize(letter: DeadLetter) {
  let event: { id?: unknown; type?: unknown; subject?: unknown; tenantid?: unknown } = {};
  try {
    event = JSON.parse(letter.body.toString('utf8'));
  } catch {
    /* a malformed event is a normal resident of a DLQ */
  }
  return {
    messageId: letter.messageId ?? null,
    type: letter.routingKey,
    subject: typeof event.subject === 'string' ? event.subject : null,
    tenant: typeof event.tenantid === 'string' ? event.tenantid : null,
    attempts: letter.headers[Headers.attempt] ?? null,
    errorCode: letter.headers[Headers.errorCode] ?? letter.headers['x-first-death-reason'] ?? null,
    errorMessage: letter.headers[Headers.errorMessage] ?? null,
    failedAt: letter.headers[Headers.failedAt] ?? null,
  };
}

/** A command line that parsed: what to do, on which queue (still as given), with which options. */
interface DlqCommand {
  command: 'list' | 'inspect' | 'replay';
  queueArg: string;
  eventId: string | undefined;
  limit: number | undefined;
  json: boolean;
  ids: string[] | undefined;
}

/** The command line, or the exit code after the usage was shown (0 for --help, 2 for a mistake). */
function parseCommand(argv: string[], out: (line: string) => void): DlqCommand | number {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { limit: { type: 'string' }, json: { type: 'boolean' }, id: { type: 'string', multiple: true }, all: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (error) {
    out(`${errorMessage(error)}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [command, queueArg, eventId] = positionals;
  if (values.help || !command || !queueArg || !['list', 'inspect', 'replay'].includes(command)) {
    out(USAGE);
    return values.help ? 0 : 2;
  }
  const limit = values.limit === undefined ? undefined : z.coerce.number().int().positive().safeParse(values.limit);
  if (limit && !limit.success) {
    out(`--limit must be a positive integer\n${USAGE}`);
    return 2;
  }
  if (command === 'inspect' && !eventId) {
    out(`inspect needs an event id\n${USAGE}`);
    return 2;
  }
  if (command === 'replay' && !values.all && !values.id?.length) {
    out(`replay needs --id <event-id> (repeatable) or --all\n${USAGE}`);
    return 2;
  }
  return { command: command as DlqCommand['command'], queueArg, eventId, limit: limit?.data, json: values.json ?? false, ids: values.id?.length ? values.id : undefined };
}

/** The CLI as a function, so tests run it in-process. Returns the exit code. */
export async function runDlqCli(argv: string[], env: Record<string, string | undefined>, out: (line: string) => void, progressOut: NodeJS.WriteStream = process.stderr): Promise<number> {
  const cli = parseCommand(argv, out);
  if (typeof cli === 'number') return cli;
  let config;
  try {
    config = loadConfig(baseConfigSchema, env);
    if (!eventBusUrl(config)) throw new ConfigError([{ key: 'EVENT_BUS_URL', message: 'required (or AMQP_URL): the broker whose dead-letter queues to read' }]);
  } catch (error) {
    out(error instanceof ConfigError ? error.message : errorMessage(error));
    return 2;
  }
  const namespace = config.TRIBUTARY_NAMESPACE;
  const queue = cli.queueArg.startsWith(`${namespace}.`) ? cli.queueArg : `${namespace}.${cli.queueArg}`;
  // With the services' own log settings: a broker where the tool declares first gets what they would.
  const transport = createTransport(config, createLogger({ service: 'dlq-cli', level: 'silent' }), `${namespace}-dlq-cli`);
  try {
    await transport.start();
    if (cli.command === 'list') return await list(transport, queue, cli, out);
    if (cli.command === 'inspect') return await inspect(transport, queue, cli, out);
    return await replay(transport, queue, cli, out, progressOut);
  } catch (error) {
    out(`dlq: ${errorMessage(error)}`);
    return 2;
  } finally {
    await transport.close();
  }
}

/** `list`: one line per dead letter (or JSON), oldest first. */
async function list(transport: Transport, queue: string, cli: DlqCommand, out: (line: string) => void): Promise<number> {
  const rows = (await transport.listDeadLetters(queue, cli.limit ?? 50)).map(summarize);
  if (cli.json) out(JSON.stringify(rows, null, 2));
  else if (rows.length === 0) out(`${queue}.dlq is empty`);
  else for (const r of rows) out(`${r.messageId}  ${r.type}  attempts=${r.attempts}  ${r.errorCode}: ${r.errorMessage}  (${r.failedAt})`);
  return 0;
}

/** `inspect`: one dead letter, its headers and its event (raw when it is not JSON); 1 when none has the id. */
async function inspect(transport: Transport, queue: string, cli: DlqCommand, out: (line: string) => void): Promise<number> {
  const letters = await transport.listDeadLetters(queue, cli.limit ?? 100_000);
  const letter = letters.find((l) => l.messageId === cli.eventId);
  if (!letter) {
    out(`no dead letter with id ${cli.eventId} in ${queue}.dlq`);
    return 1;
  }
  const body = letter.body.toString('utf8');
  let event: unknown = body;
  try {
    event = JSON.parse(body);
  } catch {
    /* show raw */
  }
  out(JSON.stringify({ ...summarize(letter), headers: letter.headers, event }, null, 2));
  return 0;
}

/** `replay`: move the named dead letters (or all, up to --limit) back to the queue, with a progress bar; 1 when none moved. */
async function replay(transport: Transport, queue: string, cli: DlqCommand, out: (line: string) => void, progressOut: NodeJS.WriteStream): Promise<number> {
  const waiting = await transport.queueDepth(`${queue}.dlq`).catch(() => undefined);
  const bar = progress(`replaying ${queue}.dlq`, cli.ids?.length ?? (cli.limit && waiting !== undefined ? Math.min(cli.limit, waiting) : waiting), progressOut);
  const options = { ...(cli.ids ? { messageIds: cli.ids } : {}), ...(cli.limit ? { limit: cli.limit } : {}), onMoved: () => bar.tick() };
  const moved = await transport.replayDeadLetters(queue, options);
  bar.done();
  out(`replayed ${moved} event${moved === 1 ? '' : 's'} from ${queue}.dlq to ${queue}`);
  return moved > 0 ? 0 : 1;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.exitCode = await runDlqCli(process.argv.slice(2), process.env, (line) => process.stdout.write(`${line}\n`));
}
