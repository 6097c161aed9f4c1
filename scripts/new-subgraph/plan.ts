/**
 * What `pnpm new:subgraph` is asked for, checked against the repository before anything is
 * written: every problem is reported at once, and a request with any problem writes nothing.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { contracts, currentVersion, eventTypeSchema } from '../../packages/contracts/src/index.ts';

/** A subgraph to generate, every name derived from its own. */
export interface SubgraphPlan {
  /** Folder, package (`@tributary/<name>`), supergraph name, database `tributary_<name>`, queues `<ns>.<name>.*`. */
  name: string;
  /** `Wordcount`: the view's GraphQL type, and `<Pascal>EventCount` its rows'. */
  pascal: string;
  /** `WORDCOUNT`: `<NAME>_DATABASE_URL`. */
  constant: string;
  /** The event versions its view folds (`analysis.completed/v1`), in the order given. */
  consumes: string[];
  /** The event type it announces its view's changes with (`wordcount.updated`), if any. */
  publishes: string | undefined;
  /** Its default port (`defaultPort`, compose's PORT). */
  port: number;
  /** A registered event version it does not fold, for the fold's test (none when it folds them all). */
  otherEvent: string | undefined;
}

/** What the repository already has, read before planning. */
export interface RepoFacts {
  /** Each workspace subgraph's name and default port. */
  subgraphs: { name: string; defaultPort: number }[];
  /** The names of every other workspace package (`gateway`, `core`, …) and compose service. */
  otherNames: string[];
  /** The supergraph's type names and Query/Subscription field names. */
  typeNames: Set<string>;
  rootFields: Set<string>;
}

/** The command line, not yet checked. */
export interface Request {
  name: string | undefined;
  consumes: string | undefined;
  publishes: string | undefined;
  port: string | undefined;
}

export const USAGE = 'usage: pnpm new:subgraph <name> [--consumes analysis.completed/v1,…] [--publishes <name>.updated] [--port N]';

/** Parses `argv` (after the script); unknown options and missing values are problems. */
export function parseArgs(argv: readonly string[]): { request: Request; problems: string[] } {
  const request: Request = { name: undefined, consumes: undefined, publishes: undefined, port: undefined };
  const problems: string[] = [];
  const options = { '--consumes': 'consumes', '--publishes': 'publishes', '--port': 'port' } as const;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq < 0 ? arg : arg.slice(0, eq);
    const inline = eq < 0 ? undefined : arg.slice(eq + 1);
    if (flag in options) {
      const value = inline ?? argv[++i];
      if (value === undefined || value.startsWith('--')) problems.push(`${flag} needs a value`);
      else request[options[flag as keyof typeof options]] = value;
    } else if (arg.startsWith('-')) problems.push(`unknown option ${arg}`);
    else if (request.name === undefined) request.name = arg;
    else problems.push(`one name only (got "${request.name}" and "${arg}")`);
  }
  if (request.name === undefined) problems.push('a name is required');
  return { request, problems };
}

const NAME = /^[a-z][a-z0-9]{1,29}$/;

/** The checked plan, or every reason the request is refused. */
export function planSubgraph(request: Request, repo: RepoFacts): { plan?: SubgraphPlan; problems: string[] } {
  const problems: string[] = [];
  const name = request.name ?? '';
  const pascal = name.charAt(0).toUpperCase() + name.slice(1);
  if (!NAME.test(name)) {
    // One word: it names an env variable (<NAME>_DATABASE_URL), a database and GraphQL fields, where a dash or capital breaks.
    problems.push(`invalid name "${name}": use 2 to 30 lowercase letters and digits, starting with a letter (e.g. wordcount)`);
  } else {
    if (repo.subgraphs.some((s) => s.name === name) || repo.otherNames.includes(name)) problems.push(`the name "${name}" is taken: there is already a subgraph, package or compose service of that name`);
    for (const type of [pascal, `${pascal}EventCount`]) if (repo.typeNames.has(type)) problems.push(`the name "${name}" is taken: the supergraph already has a type ${type}`);
    for (const field of [name, `${name}Updated`]) if (repo.rootFields.has(field)) problems.push(`the name "${name}" is taken: the supergraph already has a root field ${field}`);
  }

  const known = Object.keys(contracts);
  const consumes: string[] = [];
  for (const entry of (request.consumes ?? 'analysis.completed/v1').split(',').map((e) => e.trim()).filter(Boolean)) {
    // A bare type means the version its producer writes today.
    const version = entry.includes('/') ? entry : (currentVersion as Record<string, string>)[entry];
    if (version === undefined || !known.includes(version)) problems.push(`unknown event type "${entry}" in --consumes: one of ${known.join(', ')}`);
    else if (!consumes.includes(version)) consumes.push(version);
  }
  if (request.consumes !== undefined && consumes.length === 0 && problems.length === 0) problems.push('--consumes names no event');

  let publishes: string | undefined;
  if (request.publishes !== undefined) {
    publishes = request.publishes.trim();
    if (!eventTypeSchema.safeParse(publishes).success) problems.push(`invalid event type "${publishes}" in --publishes: lowercase words with dots, e.g. ${name || 'wordcount'}.updated`);
    else if (publishes in currentVersion) problems.push(`the event type "${publishes}" in --publishes exists already: a subgraph publishes types of its own`);
  }

  const taken = new Map<number, string>([[4000, 'gateway'], ...repo.subgraphs.map((s) => [s.defaultPort, s.name] as [number, string])]);
  let port = Math.max(4000, ...taken.keys()) + 1;
  if (request.port !== undefined) {
    port = Number(request.port);
    if (!/^\d+$/.test(request.port) || port < 1024 || port > 65535) problems.push(`invalid port "${request.port}": a number from 1024 to 65535`);
    else if (taken.has(port)) problems.push(`port ${port} is taken by ${taken.get(port)}`);
  }
  if (problems.length > 0) return { problems };
  const otherEvent = known.find((v) => !consumes.includes(v));
  return { plan: { name, pascal, constant: name.toUpperCase(), consumes, publishes, port, otherEvent }, problems };
}

/** The names in use besides the subgraphs: other workspace packages and docker-compose's services. */
export function otherNames(root: string): string[] {
  const names = new Set<string>(['gateway', 'postgres', 'rabbitmq', 'redis']);
  for (const group of ['packages', 'apps']) {
    for (const entry of readdirSync(join(root, group), { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      names.add(entry.name);
      const pkg = join(root, group, entry.name, 'package.json');
      if (existsSync(pkg)) names.add((JSON.parse(readFileSync(pkg, 'utf8')) as { name: string }).name.replace(/^@tributary\//, ''));
    }
  }
  for (const dir of ['gateway', 'schema', 'bench', 'e2e', 'scripts', 'docs', 'docker']) names.add(dir);
  // A folder under subgraphs/ without a package.json is no subgraph, but its name is still not free.
  for (const entry of readdirSync(join(root, 'subgraphs'), { withFileTypes: true })) if (entry.isDirectory()) names.add(entry.name);
  return [...names];
}

/** The supergraph's type names and root fields, read from its text (no GraphQL parser at the root). */
export function supergraphNames(supergraphSdl: string): Pick<RepoFacts, 'typeNames' | 'rootFields'> {
  const typeNames = new Set([...supergraphSdl.matchAll(/^(?:type|enum|input|scalar|interface|union)\s+(\w+)/gm)].map((m) => m[1]!));
  const rootFields = new Set<string>();
  for (const block of supergraphSdl.matchAll(/^type\s+(?:Query|Mutation|Subscription)\b[^{]*\{([\s\S]*?)^\}/gm)) {
    for (const field of block[1]!.matchAll(/^\s{2}(\w+)\s*[(:]/gm)) rootFields.add(field[1]!);
  }
  return { typeNames, rootFields };
}
