/**
 * `pnpm views:rebuild <service>` — rebuild a service's views from the event log while it runs
 * (`rebuildViews` in views/). Run it with the service's own environment (DATABASE_URL or
 * <SERVICE>_DATABASE_URL, AMQP_URL, TRIBUTARY_NAMESPACE, the service's required settings).
 *
 *   pnpm views:rebuild <service> [--accept-partial] [--batch N]
 *
 * Exit codes: 0 rebuilt and swapped, 1 refused or failed (the live views untouched; the code is
 * printed), 2 usage or configuration error, 130 interrupted (Ctrl-C; live views untouched).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ConfigError, loadConfig } from '../config.ts';
import { databaseTarget, openDatabase, type Database } from '../db/index.ts';
import { errorCode, errorMessage } from '../errors.ts';
import { createTransport } from '../events/create.ts';
import type { Transport } from '../events/transport.ts';
import { createLogger } from '../log.ts';
import { progress, type Progress } from '../progress.ts';
import { subgraphConfigSchema, type ServiceDefinition, type ServiceDeps, type SubgraphConfig } from '../service.ts';
import { rebuildViews, ViewsErrorCode, type RebuildProgress } from '../views/index.ts';

const USAGE = `usage: pnpm views:rebuild <service> [--accept-partial] [--batch N]
  --accept-partial  rebuild from what the log keeps even when it no longer keeps its oldest events
  --batch N         log entries folded per transaction (default 500)`;

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
  batch: number | undefined;
}

function parseCommand(argv: string[], out: (line: string) => void): Command | number {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { 'accept-partial': { type: 'boolean' }, batch: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
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
  return { service: positionals[0]!, acceptPartial: values['accept-partial'] ?? false, batch: batch?.data };
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
  if (!config.AMQP_URL) {
    // The embedded bus lives inside `pnpm dev`'s process, and so does its PGlite data: no other
    // process can read that log or open those databases while it runs.
    out(`views:rebuild: ${ViewsErrorCode.VIEWS_LOG_OFF}: AMQP_URL is not set. In embedded mode the log and the views belong to the pnpm dev process; run the rebuild as deployed (DATABASE_URL + AMQP_URL), or see docs/rebuild.md`);
    return 1;
  }
  const logger = createLogger({ service: `${cli.service}-views-rebuild`, level: env.LOG_LEVEL === 'debug' ? 'debug' : 'warn' });
  let db: Database | undefined;
  let transport: Transport | undefined;
  const reporter = progressReporter(progressOut);
  try {
    db = await openDatabase({ service: definition.name, target: databaseTarget(definition.name, env), entities: definition.entities, migrations: definition.migrations, logger, poolSize: 4 });
    transport = createTransport(config, logger, `${config.TRIBUTARY_NAMESPACE}.${definition.name}.views-rebuild.${process.pid}`);
    await transport.start();
    const deps: ServiceDeps = { db, transport, logger, config, env, workers: [] };
    const result = await rebuildViews({
      service: definition.name,
      views: definition.views,
      consumers: definition.consumers?.(deps) ?? [],
      db,
      log: transport.log,
      logger,
      acceptPartial: cli.acceptPartial,
      ...(cli.batch ? { batchSize: cli.batch } : {}),
      ...(signal ? { signal } : {}),
      onProgress: (p) => reporter.update(p),
    });
    reporter.done();
    const note = result.partial ? ' (from the retained log only: older history was not replayed)' : '';
    out(`views:rebuild: ${definition.name}: ${definition.views.tables.join(', ')} rebuilt from ${result.applied} events and swapped${note}; ${result.skipped} skipped, ${result.announcementsDropped} announcements dropped`);
    return 0;
  } catch (error) {
    reporter.done();
    out(`views:rebuild: ${errorCode(error)}: ${errorMessage(error)}`);
    return errorCode(error) === ViewsErrorCode.VIEWS_REBUILD_ABORTED ? 130 : 1;
  } finally {
    await transport?.close().catch(() => {});
    await db?.close().catch(() => {});
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const controller = new AbortController();
  // Ctrl-C before the swap: stop reading, drop the shadow schema, leave the live views as they are.
  process.once('SIGINT', () => controller.abort());
  process.once('SIGTERM', () => controller.abort());
  process.exitCode = await runViewsRebuildCli(process.argv.slice(2), process.env, (line) => process.stdout.write(`${line}\n`), process.stderr, controller.signal);
}
