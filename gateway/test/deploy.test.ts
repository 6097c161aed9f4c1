import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '@tributary/core/config';
import { databaseTarget } from '@tributary/core/db';
import { subgraphConfigSchema } from '@tributary/core/service';
import { loadSubgraphServices } from '@tributary/schema/subgraphs';
import { Arg, Copy, DockerfileParser, Env, From, type Instruction } from 'dockerfile-ast';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { configSchema as gatewayConfigSchema, loadGatewayConfig, subgraphUrlOverrides } from '../src/config.ts';
import { defaultSupergraphPath } from '../src/gateway.ts';

// There is no Docker engine in CI: docker-compose.yml, the Dockerfile and .dockerignore are
// parsed and checked against what the services actually read (their config schemas, default
// ports, database naming, start scripts) and against the lockfile.

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const read = (path: string) => readFileSync(join(root, path), 'utf8');

function must<T>(value: T | null | undefined, what: string): T {
  if (value === null || value === undefined) throw new Error(`missing: ${what}`);
  return value;
}

// ---- the services, from the workspace and their code ----

interface PackageJson {
  name: string;
  packageManager?: string;
  scripts?: Record<string, string>;
}

const workspaceDirs = (parse(read('pnpm-workspace.yaml')) as { packages: string[] }).packages
  .flatMap((pattern) =>
    pattern.endsWith('/*')
      ? readdirSync(join(root, pattern.slice(0, -2)), { withFileTypes: true })
          .filter((entry) => entry.isDirectory())
          .map((entry) => `${pattern.slice(0, -2)}/${entry.name}`)
      : [pattern],
  )
  .filter((dir) => existsSync(join(root, dir, 'package.json')));
const packageJson = (dir: string) => JSON.parse(read(`${dir}/package.json`)) as PackageJson;

/** Deployable packages: the ones with a `start` script. */
const servicePackages = workspaceDirs
  .map((dir) => ({ dir, pkg: packageJson(dir) }))
  .filter(({ pkg }) => pkg.scripts?.start !== undefined)
  .map(({ dir, pkg }) => ({ dir, pkg, name: pkg.name.replace(/^@tributary\//, '') }));

type Environment = Record<string, string | undefined>;
type ConfigShape = Record<string, z.ZodType>;

interface ServiceSpec {
  name: string;
  shape: ConfigShape;
  defaultPort: number;
  /** Settings read outside the schema. */
  passThrough: string[];
  load(env: Environment): { PORT?: number | undefined };
  subgraph: boolean;
}

function shapeOf(schema: unknown): ConfigShape {
  if (!(schema instanceof z.ZodObject)) throw new Error('a config schema must be a z.object to be checked');
  return schema.shape as ConfigShape;
}

// Structural, so each service's own config type fits.
interface Definition {
  name: string;
  defaultPort: number;
  configSchema?: unknown;
}
const subgraphDefinitions: Definition[] = await loadSubgraphServices();

const specs: ServiceSpec[] = [
  ...subgraphDefinitions.map((definition): ServiceSpec => {
    // What startService validates the environment with.
    const schema = definition.configSchema ?? subgraphConfigSchema;
    return {
      name: definition.name,
      shape: shapeOf(schema),
      defaultPort: definition.defaultPort,
      // databaseTarget() reads it: the service's own database, named in the URL.
      passThrough: [`${definition.name.toUpperCase()}_DATABASE_URL`],
      load: (env) => loadConfig(schema as z.ZodType<{ PORT?: number }>, env),
      subgraph: true,
    };
  }),
  {
    name: 'gateway',
    shape: shapeOf(gatewayConfigSchema),
    defaultPort: gatewayConfigSchema.shape.PORT.parse(undefined),
    passThrough: [],
    load: (env) => loadGatewayConfig(env),
    subgraph: false,
  },
];
const spec = (name: string) => must(specs.find((s) => s.name === name), `service ${name}`);
const subgraphs = specs.filter((s) => s.subgraph);
const isRequired = (type: z.ZodType) => !type.safeParse(undefined).success;

/** Schema keys compose deliberately leaves out, and why. */
const NOT_IN_COMPOSE: Record<string, string> = {
  AMQP_URL: 'compose names the broker with EVENT_BUS_URL (AMQP_URL beside it would be a second, conflicting setting)',
  DATABASE_URL: 'each subgraph gets <SERVICE>_DATABASE_URL, naming its own database',
  TRIBUTARY_DATA_DIR: 'embedded PGlite only; the image sets it',
  SUPERGRAPH_PATH: 'the image puts the supergraph where the gateway looks by default',
  AUTH_JWKS_URL: 'compose verifies tokens with AUTH_JWT_SECRET, and only one method may be set',
  AUTH_PUBLIC_KEY: 'compose verifies tokens with AUTH_JWT_SECRET, and only one method may be set',
  AUTH_ALGORITHMS: 'only for AUTH_JWKS_URL / AUTH_PUBLIC_KEY',
};

// ---- docker-compose.yml ----

type ComposeValue = string | number | boolean | null;
interface ComposeService {
  image?: string;
  hostname?: string;
  build?: { context?: string; dockerfile?: string; args?: Record<string, ComposeValue> };
  environment?: Record<string, ComposeValue>;
  healthcheck?: { test?: string[] | string };
  depends_on?: Record<string, { condition?: string; required?: boolean }>;
  profiles?: string[];
  command?: string[];
  ports?: (string | number)[];
  volumes?: string[];
}
interface Compose {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

const compose = parse(read('docker-compose.yml'), { merge: true }) as Compose;
const service = (name: string) => must(compose.services[name], `compose service ${name}`);

/** The host environment `docker compose up` runs with in these tests: just the two secrets. */
const host: Environment = { INTERNAL_SIGNING_SECRET: 's'.repeat(48), AUTH_JWT_SECRET: 'j'.repeat(48) };

/**
 * Compose's substitution: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
 * ${VAR?error}, ${VAR:+replacement}, ${VAR+replacement} (the argument itself interpolated, so a
 * default may hold further substitutions: `${A:-x${B:-y}}`).
 */
function interpolate(text: string, env: Environment): string {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const rest = text.slice(i);
    if (rest.startsWith('$$')) {
      out += '$';
      i += 2;
      continue;
    }
    const bare = /^\$([A-Za-z_]\w*)/.exec(rest);
    if (bare) {
      out += env[bare[1]!] ?? '';
      i += bare[0].length;
      continue;
    }
    const braced = /^\$\{([A-Za-z_]\w*)(:?[-?+])?/.exec(rest);
    if (!braced) {
      out += text[i];
      i += 1;
      continue;
    }
    // The argument runs to the matching brace: nested ${…} inside it are its own.
    let depth = 1;
    let end = i + braced[0].length;
    for (; end < text.length && depth > 0; end++) {
      if (text.startsWith('${', end)) {
        depth++;
        end++;
      } else if (text[end] === '}') depth--;
    }
    if (depth > 0) throw new Error(`unclosed substitution in ${text}`);
    const [, name, operator] = braced as unknown as [string, string, string | undefined];
    const argument = text.slice(i + braced[0].length, end - 1);
    i = end;
    const value = env[name];
    const missing = operator?.startsWith(':') ? !value : value === undefined;
    if (operator?.endsWith('+')) out += missing ? '' : interpolate(argument, env);
    else if (missing && operator?.endsWith('?')) throw new Error(`${name}: ${argument}`);
    else if (missing && operator?.endsWith('-')) out += interpolate(argument, env);
    else out += value ?? '';
  }
  return out;
}

/** The container's environment: a key without a value passes the host's through, if set. */
function containerEnv(name: string, env: Environment = host): Record<string, string> {
  const raw = service(name).environment ?? {};
  if (Array.isArray(raw)) throw new Error(`${name}: use the mapping form of environment`);
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (value === null) {
      const passed = env[key];
      if (passed !== undefined) out[key] = passed;
    } else {
      out[key] = interpolate(String(value), env);
    }
  }
  return out;
}

/** Run a `node -e` health check script with `fetch` and `process` stubbed: which URL, which exit code. */
async function probe(script: string, env: Environment, answer: 'ready' | 'unavailable' | 'refused') {
  let url = '';
  let code: number | undefined;
  const fetch = (input: string) => {
    url = input;
    return answer === 'refused' ? Promise.reject(new Error('ECONNREFUSED')) : Promise.resolve({ ok: answer === 'ready' });
  };
  const process = { env, exit: (exitCode: number) => void (code = exitCode) };
  new Function('fetch', 'process', script)(fetch, process);
  await new Promise((done) => setTimeout(done, 0));
  return { url, code };
}

function nodeScript(command: string[], where: string): string {
  const [node, flag, script, ...rest] = command;
  expect(node, where).toBe('node');
  expect(flag, where).toBe('-e');
  expect(rest, where).toEqual([]);
  return must(script, `${where}: script`);
}

const published = (ports: (string | number)[] | undefined) =>
  (ports ?? []).map((port) => Number(interpolate(String(port), host).split(':').at(-1)?.replace(/\/.*$/, '')));

function volume(entry: string) {
  const [source, target] = entry.split(':');
  return { source: must(source, entry), target: must(target, entry) };
}

// ---- the Dockerfile ----

interface Stage {
  name: string | null;
  image: string | null;
  instructions: Instruction[];
}
const dockerfile = DockerfileParser.parse(read('Dockerfile'));
const stages: Stage[] = [];
for (const instruction of dockerfile.getInstructions()) {
  if (instruction instanceof From) stages.push({ name: instruction.getBuildStage(), image: instruction.getImage(), instructions: [] });
  else stages.at(-1)?.instructions.push(instruction);
}
const runtime = must(stages.at(-1), 'a FROM');
const content = (instruction: Instruction) => instruction.getArgumentsContent() ?? '';
const ofKind = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.getKeyword() === keyword);
const argDefault = (name: string) =>
  must(
    dockerfile
      .getInstructions()
      .filter((i): i is Arg => i instanceof Arg)
      .map((i) => i.getProperty())
      .find((p) => p?.getName() === name)
      ?.getValue(),
    `ARG ${name} with a default`,
  );

function deployStep() {
  for (const stage of stages.slice(0, -1)) {
    const run = ofKind(stage, 'RUN').find((i) => /\bpnpm\b.*\bdeploy\b/.test(content(i)));
    if (run) return { stage, run: content(run) };
  }
  throw new Error('no build stage runs pnpm deploy');
}

/** Where a path of the build stage lands in the image, through `COPY --from=<build stage>`. */
function inImage(buildPath: string): string {
  const { stage } = deployStep();
  const copy = must(
    runtime.instructions.find((i): i is Copy => i instanceof Copy && i.getFromFlag()?.getValue() === stage.name),
    `COPY --from=${stage.name ?? ''}`,
  );
  const [source, target] = copy.getArguments().map((a) => a.getValue());
  const inside = posix.relative(must(source, 'COPY source'), buildPath);
  expect(inside.startsWith('..'), `${buildPath} is copied into the image`).toBe(false);
  return posix.join(must(target, 'COPY target'), inside);
}

// ---- the lockfile ----

interface Lockfile {
  importers: Record<string, { dependencies?: Record<string, { version: string }>; optionalDependencies?: Record<string, { version: string }>; devDependencies?: Record<string, { version: string }> }>;
  snapshots: Record<string, { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> } | null>;
}
const lockfile = must(
  parseAllDocuments(read('pnpm-lock.yaml'))
    .map((doc) => doc.toJS() as Partial<Lockfile>)
    .find((doc): doc is Lockfile => doc.importers?.gateway !== undefined),
  'the workspace in pnpm-lock.yaml',
);

/** Every package `pnpm deploy --prod` installs for a workspace package: production and optional dependencies, transitively. */
function productionClosure(dir: string): Set<string> {
  const names = new Set<string>();
  const seen = new Set<string>();
  const visit = (from: string | null, name: string, version: string) => {
    names.add(name);
    if (version.startsWith('link:')) return visitImporter(posix.join(must(from, `link from a dependency: ${name}`), version.slice('link:'.length)));
    const key = /^\d/.test(version) ? `${name}@${version}` : version; // else an alias: name@version
    names.add(key.replace(/\(.*$/, '').replace(/(.)@[^@]*$/, '$1'));
    if (seen.has(key)) return;
    seen.add(key);
    const snapshot = lockfile.snapshots[key];
    if (snapshot === undefined) throw new Error(`pnpm-lock.yaml has no snapshot ${key}`);
    for (const [dep, v] of Object.entries({ ...snapshot?.dependencies, ...snapshot?.optionalDependencies })) visit(null, dep, v);
  };
  const visitImporter = (importer: string) => {
    if (seen.has(`importer:${importer}`)) return;
    seen.add(`importer:${importer}`);
    const entry = must(lockfile.importers[importer], `importer ${importer} in pnpm-lock.yaml`);
    for (const [dep, { version }] of Object.entries({ ...entry.dependencies, ...entry.optionalDependencies })) visit(importer, dep, version);
  };
  visitImporter(dir);
  return names;
}

// ---- .dockerignore ----

/** Whether .dockerignore keeps a path out of the build context (last matching rule wins; a directory takes its contents). */
function ignored(path: string): boolean {
  const rules = read('.dockerignore')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
  let out = false;
  for (const rule of rules) {
    const negated = rule.startsWith('!');
    const pattern = (negated ? rule.slice(1) : rule).replace(/^\/+|\/+$/g, '');
    const source = pattern
      .split(/(\*\*\/?|\*|\?)/)
      .map((part) => (part === '**/' ? '(?:.*/)?' : part === '**' ? '.*' : part === '*' ? '[^/]*' : part === '?' ? '[^/]' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
      .join('');
    if (new RegExp(`^${source}(?:/.*)?$`).test(path)) out = !negated;
  }
  return out;
}

describe('docker-compose.yml', () => {
  it('has one service per deployable package, built from the Dockerfile with its SERVICE', () => {
    expect(servicePackages.map((p) => p.name).sort()).toEqual(specs.map((s) => s.name).sort());
    const built = Object.entries(compose.services).filter(([, s]) => s.build !== undefined);
    expect(built.map(([name]) => name).sort()).toEqual(specs.map((s) => s.name).sort());
    for (const { name, pkg } of servicePackages) {
      // The Dockerfile deploys @tributary/${SERVICE}.
      expect(pkg.name).toBe(`@tributary/${name}`);
      const build = must(service(name).build, `${name}.build`);
      expect(resolve(root, build.context ?? '.'), name).toBe(root);
      expect(build.dockerfile ?? 'Dockerfile', name).toBe('Dockerfile');
      expect(build.args?.SERVICE, name).toBe(name);
    }
  });

  it('checks each service on /ready at the port it listens on, its default port', async () => {
    for (const s of specs) {
      const env = containerEnv(s.name);
      expect(Number(env.PORT), s.name).toBe(s.defaultPort);
      expect(s.load(env).PORT, s.name).toBe(s.defaultPort);
      const test = must(service(s.name).healthcheck?.test, `${s.name}.healthcheck.test`);
      if (!Array.isArray(test) || test[0] !== 'CMD') throw new Error(`${s.name}: use the exec form ["CMD", "node", "-e", …]`);
      const script = interpolate(nodeScript(test.slice(1), s.name), host);
      expect(await probe(script, env, 'ready'), s.name).toEqual({ url: `http://127.0.0.1:${s.defaultPort}/ready`, code: 0 });
      expect((await probe(script, env, 'unavailable')).code, s.name).toBe(1);
      expect((await probe(script, env, 'refused')).code, s.name).toBe(1);
    }
  });

  it('sets on each service only settings its config schema reads, or its own database URL', () => {
    for (const s of specs) {
      const unknown = Object.keys(service(s.name).environment ?? {}).filter((key) => !(key in s.shape) && !s.passThrough.includes(key));
      expect(unknown, `${s.name} sets settings it never reads`).toEqual([]);
    }
  });

  it('sets every required setting and passes every other one through', () => {
    for (const s of specs) {
      const environment = service(s.name).environment ?? {};
      const required = Object.entries(s.shape).filter(([, type]) => isRequired(type)).map(([key]) => key);
      expect(required.filter((key) => environment[key] === undefined || environment[key] === null), `${s.name}: required`).toEqual([]);
      const missing = Object.keys(s.shape).filter((key) => !(key in environment) && !(key in NOT_IN_COMPOSE));
      expect(missing, `${s.name}: settings neither in compose nor in NOT_IN_COMPOSE`).toEqual([]);
    }
    const known = new Set(specs.flatMap((s) => Object.keys(s.shape)));
    expect(Object.keys(NOT_IN_COMPOSE).filter((key) => !known.has(key))).toEqual([]);
  });

  it('gives each service a configuration it accepts, and refuses to start without the secrets', () => {
    for (const s of specs) {
      expect(() => s.load(containerEnv(s.name)), s.name).not.toThrow();
      // A setting with no safe default (a secret) has none in compose either: `${VAR:?message}`.
      const environment = service(s.name).environment ?? {};
      const secrets = Object.entries(s.shape).filter(([, type]) => isRequired(type)).map(([key]) => key);
      if (s.name === 'gateway') secrets.push('AUTH_JWT_SECRET'); // loadGatewayConfig requires one AUTH_* method
      for (const key of secrets) expect(() => interpolate(String(environment[key]), {}), `${s.name}.${key}`).toThrow(key);
    }
  });

  it('shares the namespace, the broker and the signing secret across services', () => {
    for (const key of ['TRIBUTARY_NAMESPACE', 'EVENT_BUS_URL', 'INTERNAL_SIGNING_SECRET', 'NODE_ENV']) {
      const values = new Set(specs.map((s) => containerEnv(s.name)[key]));
      expect([...values], key).toHaveLength(1);
    }
    const amqp = new URL(must(containerEnv('gateway').EVENT_BUS_URL, 'EVENT_BUS_URL'));
    const rabbitmq = containerEnv('rabbitmq');
    expect([amqp.protocol, amqp.hostname, amqp.port || '5672']).toEqual(['amqp:', 'rabbitmq', '5672']);
    expect([decodeURIComponent(amqp.username), decodeURIComponent(amqp.password)]).toEqual([rabbitmq.RABBITMQ_DEFAULT_USER, rabbitmq.RABBITMQ_DEFAULT_PASS]);
    const custom = { ...host, RABBITMQ_USER: 'mq-user', RABBITMQ_PASSWORD: 'mq-pass' };
    expect(containerEnv('documents', custom).EVENT_BUS_URL).toBe('amqp://mq-user:mq-pass@rabbitmq:5672');
    expect(service('rabbitmq').image).toMatch(/^rabbitmq:.*management/);
    expect(NOT_IN_COMPOSE.AMQP_URL).toBeDefined();
  });

  it('runs Redis Streams or NATS JetStream instead under their profile, with the data kept on a volume', () => {
    const brokers = { redis: { service: 'redis-events', url: 'redis://redis-events:6379' }, nats: { service: 'nats', url: 'nats://nats:4222' } };
    for (const [profile, broker] of Object.entries(brokers)) {
      const s = service(broker.service);
      expect(s.profiles, broker.service).toEqual([profile]);
      expect(s.healthcheck?.test, broker.service).toBeDefined();
      expect(s.volumes?.map(volume).map((v) => v.source), broker.service).toHaveLength(1);
      // Every service takes the URL given, and accepts it.
      for (const spec of specs) {
        const env = containerEnv(spec.name, { ...host, EVENT_BUS_URL: broker.url });
        expect(env.EVENT_BUS_URL, spec.name).toBe(broker.url);
        expect(() => spec.load(env), spec.name).not.toThrow();
      }
    }
    // Redis answers only once the write is in its append-only file, fsynced: a confirmed publish survives a crash.
    expect(service('redis-events').command).toEqual(expect.arrayContaining(['--appendonly', 'yes', '--appendfsync', 'always']));
    expect(service('nats').command).toEqual(expect.arrayContaining(['-js', '-sd', '/data']));
    expect(service('rabbitmq').profiles).toBeUndefined(); // the default broker
  });

  it('gives each subgraph its own database, which the PostgreSQL init script creates', () => {
    const postgres = containerEnv('postgres');
    const databases = subgraphs.map((s) => {
      const target = databaseTarget(s.name, containerEnv(s.name));
      if (target.kind !== 'postgres') throw new Error(`${s.name} would use embedded PGlite`);
      expect(target.dbName, s.name).toBe(`tributary_${s.name}`);
      const url = new URL(target.url);
      expect([url.hostname, url.port || '5432', decodeURIComponent(url.username), decodeURIComponent(url.password)], s.name).toEqual([
        'postgres',
        '5432',
        postgres.POSTGRES_USER,
        postgres.POSTGRES_PASSWORD,
      ]);
      return target.dbName;
    });
    const init = (service('postgres').volumes ?? []).map(volume).filter((v) => v.target.startsWith('/docker-entrypoint-initdb.d/'));
    expect(init).toHaveLength(1);
    const sql = readFileSync(resolve(root, must(init[0], 'init script').source), 'utf8');
    const created = [...sql.matchAll(/create\s+database\s+"?(\w+)"?/gi)].map((m) => m[1]);
    expect(created.sort()).toEqual(databases.sort());
  });

  it("points the gateway at each subgraph's compose service and port, keeping the user's SUBGRAPH_URLS", () => {
    // Through the gateway's own reading of its settings: `<NAME>_URL` or an entry of SUBGRAPH_URLS.
    const urls = (env: Environment) => subgraphUrlOverrides(loadGatewayConfig(containerEnv('gateway', env)));
    const expected = Object.fromEntries(subgraphs.map((s) => [s.name, `http://${s.name}:${containerEnv(s.name).PORT}/graphql`]));
    expect({ ...urls(host) }).toEqual(expected);
    const own = 'reviews=http://reviews:4010/graphql';
    expect({ ...urls({ ...host, SUBGRAPH_URLS: own }) }).toEqual({ ...expected, reviews: 'http://reviews:4010/graphql' });
  });

  it('starts each service once the services it needs are healthy', () => {
    const needs = (name: string) => Object.keys(service(name).depends_on ?? {}).sort();
    // A service given REDIS_URL waits for Redis as well.
    const redis = (name: string) => (containerEnv(name).REDIS_URL ? ['redis'] : []);
    // Each broker only when its profile runs it (`required: false`); the others always.
    const brokers = ['nats', 'rabbitmq', 'redis-events'];
    for (const s of subgraphs) expect(needs(s.name), s.name).toEqual(['postgres', ...brokers, ...redis(s.name)].sort());
    expect(needs('gateway')).toEqual([...brokers, ...redis('gateway'), ...subgraphs.map((s) => s.name)].sort());
    for (const s of specs) {
      const dependsOn = service(s.name).depends_on;
      if (Array.isArray(dependsOn)) throw new Error(`${s.name}: depends_on needs conditions`);
      for (const [dependency, { condition, required }] of Object.entries(dependsOn ?? {})) {
        expect(condition, `${s.name} → ${dependency}`).toBe('service_healthy');
        expect(required, `${s.name} → ${dependency}`).toBe(brokers.includes(dependency) ? false : undefined);
        expect(service(dependency).healthcheck?.test, `${dependency} has a health check`).toBeDefined();
      }
    }
  });

  it('runs Redis for the shared rate limits, and points the gateway and analysis at it', () => {
    const redis = service('redis');
    expect(redis.image).toMatch(/^redis:7(\.|-|$)/);
    expect(redis.healthcheck?.test).toEqual(['CMD', 'redis-cli', 'ping']);
    for (const name of ['gateway', 'analysis']) {
      const s = spec(name);
      const url = new URL(must((s.load(containerEnv(name)) as { REDIS_URL?: string }).REDIS_URL, `${name}.REDIS_URL`));
      expect([url.protocol, url.hostname, url.port || '6379'], name).toEqual(['redis:', 'redis', '6379']);
      // The user's own Redis replaces it.
      expect((s.load(containerEnv(name, { ...host, REDIS_URL: 'rediss://cache.example.com:6380' })) as { REDIS_URL?: string }).REDIS_URL, name).toBe('rediss://cache.example.com:6380');
    }
    expect(loadGatewayConfig(containerEnv('gateway')).RATE_LIMIT_ON_REDIS_ERROR).toBe('allow');
    expect(loadGatewayConfig(containerEnv('gateway', { ...host, RATE_LIMIT_ON_REDIS_ERROR: 'deny' })).RATE_LIMIT_ON_REDIS_ERROR).toBe('deny');
  });

  it('keeps PostgreSQL and RabbitMQ data in named volumes', () => {
    const named = Object.keys(compose.volumes ?? {});
    for (const [name, dataDir] of [
      ['postgres', '/var/lib/postgresql/data'],
      ['rabbitmq', '/var/lib/rabbitmq'],
    ] as const) {
      const mount = (service(name).volumes ?? []).map(volume).find((v) => v.target === dataDir);
      expect(named, `${name} data`).toContain(mount?.source);
    }
    // RabbitMQ keeps its data under rabbit@<hostname>; a random container hostname would orphan it.
    expect(service('rabbitmq').hostname).toBeTruthy();
  });

  it('publishes the gateway and the RabbitMQ management UI', () => {
    expect(published(service('gateway').ports)).toContain(spec('gateway').defaultPort);
    expect(published(service('rabbitmq').ports)).toContain(15672);
    for (const s of subgraphs) expect(service(s.name).ports, `${s.name} is reached through the gateway`).toBeUndefined();
  });
});

describe('Dockerfile', () => {
  it('builds in stages, deploying @tributary/$SERVICE with production dependencies only', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const { stage, run } = deployStep();
    expect(stage).not.toBe(runtime);
    expect(run).toMatch(/--filter[ =]"?@tributary\/\$\{SERVICE\b/);
    expect(run).toMatch(/\s--prod\b/);
    expect(run).toMatch(/\s--frozen-lockfile\b/);
    expect(ofKind(stage, 'ARG').map(content)).toContain('SERVICE');
    // The runtime stage starts from a base image, not from the build, and carries no pnpm.
    expect(stages.map((s) => s.name)).not.toContain(runtime.image);
    expect(runtime.instructions.map(content).filter((c) => /\bpnpm\b/.test(c))).toEqual([]);
  });

  it("runs the package's start command as a non-root user, in production, with a /ready health check", async () => {
    const keywords = runtime.instructions.map((i) => i.getKeyword());
    const users = ofKind(runtime, 'USER').map(content);
    expect(users.length).toBeGreaterThan(0);
    expect(users.at(-1)).not.toMatch(/^(root|0)(:|$)/);
    expect(keywords.lastIndexOf('USER')).toBeLessThan(keywords.lastIndexOf('CMD'));

    const env = Object.fromEntries(
      runtime.instructions
        .filter((i): i is Env => i instanceof Env)
        .flatMap((i) => i.getProperties())
        .map((p) => [p.getName(), p.getValue() ?? '']),
    );
    expect(env.NODE_ENV).toBe('production');

    const cmd = JSON.parse(content(must(ofKind(runtime, 'CMD').at(-1), 'CMD'))) as string[];
    // The script's `exec` is for its shell (see below); the exec form of CMD has no shell.
    for (const { name, pkg } of servicePackages) expect(cmd.join(' '), name).toBe(pkg.scripts?.start?.replace(/^exec /, ''));

    const healthcheck = content(must(ofKind(runtime, 'HEALTHCHECK').at(-1), 'HEALTHCHECK'));
    const command = JSON.parse(healthcheck.slice(healthcheck.indexOf('CMD') + 3).trim()) as string[];
    const script = nodeScript(command, 'HEALTHCHECK');
    for (const s of specs) {
      // The image's environment, ${SERVICE} being the build arg.
      const imageEnv = Object.fromEntries(Object.entries(env).map(([key, value]) => [key, value.replace(/\$\{?SERVICE\}?/g, s.name)]));
      expect(await probe(script, imageEnv, 'ready'), s.name).toEqual({ url: `http://127.0.0.1:${s.defaultPort}/ready`, code: 0 });
      expect((await probe(script, { ...imageEnv, PORT: '4321' }, 'ready')).url, s.name).toBe('http://127.0.0.1:4321/ready');
      expect((await probe(script, imageEnv, 'unavailable')).code, s.name).toBe(1);
    }
  });

  it('pins pnpm to the version the workspace uses, and carries no tsx, typescript or esbuild in any image', () => {
    expect(`pnpm@${argDefault('PNPM_VERSION')}`).toBe(packageJson('.').packageManager);
    // The images run built JavaScript: what `pnpm deploy --prod` installs has no loader, compiler or bundler.
    for (const { dir, name } of servicePackages) {
      const closure = productionClosure(dir);
      for (const tool of ['tsx', 'typescript', 'esbuild']) expect(closure.has(tool), `${name} carries ${tool}`).toBe(false);
    }
    expect(runtime.instructions.map(content).filter((c) => /npm\s+(i|install)\b/.test(c))).toEqual([]);
  });

  it('runs the built output on node:24-slim: the build stage bundles the service before deploying it with its dist', () => {
    const image = (stage: Stage) => must(stage.image, 'FROM image').replace(/\$\{NODE_VERSION\}|\$NODE_VERSION\b/g, argDefault('NODE_VERSION'));
    expect(image(runtime)).toBe('node:24-slim');
    const { stage, run } = deployStep();
    expect(image(stage)).toBe('node:24-slim');
    // scripts/build.ts (what `pnpm build` runs after typecheck) for $SERVICE, then the deploy, which copies its dist.
    const build = /\bscripts\/build\.ts\s+"?\$\{SERVICE\b/.exec(run) ?? /\bpnpm\s+build\s+"?\$\{SERVICE\b/.exec(run);
    expect(build, 'the build stage builds ${SERVICE}').not.toBeNull();
    expect(build!.index).toBeLessThan(run.search(/\bdeploy\b/));
    expect(run.slice(0, build!.index)).toMatch(/\bpnpm\s+install\s+--frozen-lockfile\b/);
    for (const { dir, name, pkg } of servicePackages) {
      const files = (JSON.parse(read(`${dir}/package.json`)) as { files?: string[] }).files;
      // `pnpm deploy` copies a package's "files": its built output, not its sources or tests.
      expect(files, `${name} files`).toEqual(['dist']);
      const script = must(pkg.scripts?.start?.split(/\s+/).at(-1), `${name} start`);
      expect(posix.normalize(script).startsWith('dist/'), `${name} starts ${script}`).toBe(true);
    }
  });

  it('starts each service as one node process running its built JavaScript, with source maps', () => {
    for (const { name, pkg } of servicePackages) {
      // pnpm runs a script with `sh -c` and signals the shell, which does not pass SIGTERM on:
      // `exec` makes node pnpm's own child, so `kill <pnpm>` stops the service gracefully.
      const [shellExec, command, ...args] = must(pkg.scripts?.start, `${name} start`).split(/\s+/);
      expect(shellExec, name).toBe('exec');
      expect(command, name).toBe('node');
      expect(args, `${name}: no loader`).not.toContain('--import');
      expect(args.join(' '), name).not.toMatch(/tsx|\.ts\b/);
      expect(args, `${name}: stack traces name the TypeScript`).toContain('--enable-source-maps');
      expect(args.at(-1), name).toBe('dist/main.js');
    }
  });

  it('lays the image out so that CMD starts the package and the gateway finds the supergraph', () => {
    const { run } = deployStep();
    const deployed = must(/\bdeploy\b.*?\s(\/[^\s"]+)\s*(?:&&|$)/.exec(run)?.[1], 'pnpm deploy target');
    const workdir = content(must(ofKind(runtime, 'WORKDIR').at(-1), 'WORKDIR'));
    expect(inImage(deployed)).toBe(workdir);

    const supergraph = relative(root, defaultSupergraphPath);
    const copied = must(new RegExp(`\\bcp\\s+${supergraph.replace(/\./g, '\\.')}\\s+(\\S+)`).exec(run)?.[1], `cp ${supergraph}`);
    const gatewayDir = must(servicePackages.find((p) => p.name === 'gateway'), 'gateway package').dir;
    // defaultSupergraphPath is relative to the gateway package; in the image the package is WORKDIR.
    expect(inImage(copied)).toBe(posix.resolve(workdir, relative(join(root, gatewayDir), defaultSupergraphPath)));
  });

  it('keeps host installs out of the build context and everything the build needs in', () => {
    for (const path of ['node_modules', 'gateway/node_modules', 'gateway/dist/main.js', 'subgraphs/jobs/dist', '.git', '.tributary', 'subgraphs/jobs/test/x.test.ts']) expect(ignored(path), path).toBe(true);
    const needed = ['package.json', 'pnpm-lock.yaml', 'pnpm-workspace.yaml', 'tsconfig.base.json', 'scripts/build.ts', relative(root, defaultSupergraphPath), ...workspaceDirs.map((dir) => `${dir}/package.json`)];
    needed.push('gateway/src/ui/client/graphiql.ts');
    for (const { dir } of servicePackages) needed.push(`${dir}/src/main.ts`);
    expect(needed.filter(ignored)).toEqual([]);
  });

  it('keeps the openai SDK out of every image but the analysis one', () => {
    const withOpenai = servicePackages.filter(({ dir }) => productionClosure(dir).has('openai')).map((p) => p.name);
    expect(withOpenai).toEqual(['analysis']);
  });
});
