/**
 * `pnpm views:rebuild <service>` — rebuild a service's views from the event log while it runs
 * (`rebuildViews` in views/). Run it with the service's own environment (DATABASE_URL or
 * <SERVICE>_DATABASE_URL, EVENT_BUS_URL (or AMQP_URL), TRIBUTARY_NAMESPACE, the service's required settings).
 *
 *   pnpm views:rebuild <service> [--accept-partial] [--batch N] [--embedded]
 *
 * Embedded mode (no EVENT_BUS_URL or AMQP_URL): the log is the `events` database's table; on PGlite, with pnpm dev
 * stopped and `--embedded` (see {@link embeddedRefusal}).
 *
 * Exit codes: 0 rebuilt and swapped, 1 refused or failed (the live views untouched; the code is
 * printed), 2 usage or configuration error, 130 interrupted (Ctrl-C; live views untouched).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ConfigError, eventBusUrl, loadConfig } from '../config.ts';
import { databaseTarget, openDatabase, type Database } from '../db/index.ts';
import { errorCode, errorMessage } from '../errors.ts';
import { createTransport } from '../events/create.ts';
import type { EventLog } from '../events/log.ts';
import { eventLogMigrations, SqlEventLog } from '../events/log-sql.ts';
import { InMemoryTransport } from '../events/memory.ts';
import type { Transport } from '../events/transport.ts';
import { createLogger, type Logger } from '../log.ts';
import { progress, type Progress } from '../progress.ts';
import { subgraphConfigSchema, type ServiceDefinition, type ServiceDeps, type SubgraphConfig } from '../service.ts';
import { rebuildViews, ViewsErrorCode, type RebuildProgress } from '../views/index.ts';

const USAGE = `usage: pnpm views:rebuild <service> [--accept-partial] [--batch N] [--embedded]
  --accept-partial  rebuild from what the log keeps even when it no longer keeps its oldest events
  --batch N         log entries folded per transaction (default 500)
  --embedded        embedded mode on PGlite: pnpm dev is stopped, open its data directory`;

/** A subgraph folder's name (as pnpm new:subgraph allows), so the argument cannot leave subgraphs/. */
const SERVICE_NAME = new RegExp('^[a-z][a-z0-9-]*$');

/** The workspace root: packages/core/src/cli → four levels up. */
const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

/** The ServiceDefinition a subgraph package exports (as schema/'s loadSubgraphServices finds it, without depending on it). */
export async function loadServiceDefinition(service: string, root = ROOT): Promise<ServiceDefinition | undefined> {
  if (!SERVICE_NAME.test(service)) return undefined;
  const manifest = join(root, 'subgraphs', service, 'package.json');
  if (!existsSync(manifest)) return undefined;
  const { exports } = JSON.parse(readFileSync(manifest, 'utf8')) as { exports?: Record<string, string> };
  const entry = exports?.['.'];
  if (!entry) return undefined;
  const module = (await import(pathToFileURL(join(root, 'subgraphs', service, entry)).href)) as Record<string, unknown>;
  return Object.values(module).find((v): v is ServiceDefinition => typeof v === 'object' && v !== null && (v as ServiceDefinition).name === service && Array.isArray((v as ServiceDefinition).entities));
}

interface Command {
  service: string;
  acceptPartial: boolean;
  /** The operator says pnpm dev is stopped: the CLI may open its PGlite data directories. */
  embedded: boolean;
  batch: number | undefined;
}

function parseCommand(argv: string[], out: (line: string) => void): Command | number {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { 'accept-partial': { type: 'boolean' }, embedded: { type: 'boolean' }, batch: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  } catch (error) {
    out(`${errorMessage(error)}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help || positionals.length !== 1) {
    out(USAGE);
    return values.help ? 0 : 2;
  }
  const batch = values.batch === undefined ? undefined : z.coerce.number().int().min(1).max(10_000).safeParse(values.batch);
  if (batch && !batch.success) {
    out(`--batch must be an integer from 1 to 10000\n${USAGE}`);
    return 2;
  }
  return { service: positionals[0]!, acceptPartial: values['accept-partial'] ?? false, embedded: values.embedded ?? false, batch: batch?.data };
}

/** A bar per phase: the replay's, then the catch-up's, each over the log's entries. */
function progressReporter(out: NodeJS.WriteStream): { update(p: RebuildProgress): void; done(): void } {
  let bar: Progress | undefined;
  let phase: RebuildProgress['phase'] | undefined;
  let shown = 0;
  return {
    update(p) {
      if (p.phase !== phase) {
        bar?.done();
        phase = p.phase;
        bar = p.phase === 'done' ? undefined : progress(`views:rebuild ${p.phase}`, p.total, out);
        shown = 0;
      }
      if (bar && p.done > shown) {
        bar.tick(p.done - shown);
        shown = p.done;
      }
    },
    done: () => bar?.done(),
  };
}

/** The CLI as a function, so tests run it in-process. Returns the exit code. */
export async function runViewsRebuildCli(argv: string[], env: Record<string, string | undefined>, out: (line: string) => void, progressOut: NodeJS.WriteStream = process.stderr, signal?: AbortSignal): Promise<number> {
  const cli = parseCommand(argv, out);
  if (typeof cli === 'number') return cli;
  const definition = await loadServiceDefinition(cli.service);
  if (!definition) {
    out(`views:rebuild: no subgraph named "${cli.service}" (a folder under subgraphs/ exporting its ServiceDefinition)`);
    return 2;
  }
  if (!definition.views) {
    out(`views:rebuild: ${ViewsErrorCode.VIEWS_NOT_DECLARED}: ${cli.service} declares no views (ServiceDefinition.views)`);
    return 1;
  }
  let config: SubgraphConfig;
  try {
    config = loadConfig((definition.configSchema ?? subgraphConfigSchema) as z.ZodType<SubgraphConfig>, env);
  } catch (error) {
    out(error instanceof ConfigError ? error.message : errorMessage(error));
    return 2;
  }
  const logger = createLogger({ service: `${cli.service}-views-rebuild`, level: env.LOG_LEVEL === 'debug' ? 'debug' : 'warn' });
  const refusal = embeddedRefusal(cli, definition.name, config, env);
  if (refusal) {
    out(`views:rebuild: ${refusal}`);
    return 1;
  }
  let db: Database | undefined;
  let source: LogSource | undefined;
  const reporter = progressReporter(progressOut);
  try {
    db = await openDatabase({ service: definition.name, target: databaseTarget(definition.name, env), entities: definition.entities, migrations: definition.migrations, logger, poolSize: 4 });
    source = await openLog(config, env, logger, definition.name);
    const deps: ServiceDeps = { db, transport: source.transport, logger, config, env, workers: [] };
    const result = await rebuildViews({
      service: definition.name,
      views: definition.views,
      consumers: definition.consumers?.(deps) ?? [],
      db,
      log: source.log,
      logger,
      acceptPartial: cli.acceptPartial,
      ...(cli.batch ? { batchSize: cli.batch } : {}),
      ...(signal ? { signal } : {}),
      onProgress: (p) => reporter.update(p),
    });
    reporter.done();
    const note = result.partial ? ' (from the retained log only: older history was not replayed)' : '';
    out(`views:rebuild: ${definition.name}: ${definition.views.tables.join(', ')} rebuilt from ${result.applied} events and swapped${note}; ${result.skipped} skipped, ${result.announced} announced with the swap`);
    return 0;
  } catch (error) {
    reporter.done();
    out(`views:rebuild: ${errorCode(error)}: ${errorMessage(error)}`);
    return errorCode(error) === ViewsErrorCode.VIEWS_REBUILD_ABORTED ? 130 : 1;
  } finally {
    await source?.close().catch(() => {});
    await db?.close().catch(() => {});
  }
}

/** Where the history is read from: the broker's log, or embedded mode's table; and what the consumers are built with. */
interface LogSource {
  log: EventLog | undefined;
  transport: Transport;
  close(): Promise<void>;
}

/**
 * Why embedded mode cannot be rebuilt from here, if it cannot. Without a broker the log is a table
 * in the `events` database and the views are in the service's; on PostgreSQL (DATABASE_URL) other
 * processes can use them while pnpm dev runs, but a PGlite data directory must be opened by one
 * process at a time (a second one corrupts it, and PGlite leaves no lock to find it by): there the
 * operator stops pnpm dev and says so with --embedded.
 */
function embeddedRefusal(cli: Command, service: string, config: SubgraphConfig, env: Record<string, string | undefined>): string | undefined {
  if (eventBusUrl(config) || config.EVENT_LOG === 'off') return undefined;
  const targets = [databaseTarget('events', env), databaseTarget(service, env)];
  if (targets.some((t) => t.kind === 'pglite' && t.dataDir === 'memory://')) return `${ViewsErrorCode.VIEWS_LOG_OFF}: TRIBUTARY_DATA_DIR is memory://: nothing outlives the pnpm dev process`;
  if (targets.some((t) => t.kind === 'pglite') && !cli.embedded) {
    return `${ViewsErrorCode.VIEWS_EMBEDDED_IN_USE}: embedded mode keeps the log and the views in PGlite under TRIBUTARY_DATA_DIR, which one process opens at a time: stop pnpm dev, then rerun with --embedded (see docs/rebuild.md)`;
  }
  return undefined;
}

async function openLog(config: SubgraphConfig, env: Record<string, string | undefined>, logger: Logger, service: string): Promise<LogSource> {
  if (eventBusUrl(config)) {
    const transport = createTransport(config, logger, `${config.TRIBUTARY_NAMESPACE}.${service}.views-rebuild.${process.pid}`);
    await transport.start();
    return { log: transport.log, transport, close: () => transport.close() };
  }
  // Never started: the consumers are only built, for their handlers.
  const transport = new InMemoryTransport(config.TRIBUTARY_NAMESPACE);
  if (config.EVENT_LOG === 'off') return { log: undefined, transport, close: async () => {} };
  const db = await openDatabase({ service: 'events', target: databaseTarget('events', env), entities: [], migrations: eventLogMigrations, logger, poolSize: 2 });
  // No retention options: trimming is the owner's (pnpm dev's) job, not a reader's.
  const log = new SqlEventLog(db, { logger });
  return {
    log,
    transport,
    close: async () => {
      log.close();
      await db.close();
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const controller = new AbortController();
  // Ctrl-C before the swap: stop reading, drop the shadow schema, leave the live views as they are.
  process.once('SIGINT', () => controller.abort());
  process.once('SIGTERM', () => controller.abort());
  process.exitCode = await runViewsRebuildCli(process.argv.slice(2), process.env, (line) => process.stdout.write(`${line}\n`), process.stderr, controller.signal);
}
