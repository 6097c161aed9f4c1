/**
 * `pnpm build` (after `pnpm typecheck`): each service's runnable JavaScript, for production.
 *
 *   <service>/dist/main.js (+ .map)   gateway/dist/main.js, subgraphs/<name>/dist/main.js
 *   gateway/dist/ui/                  GraphiQL, bundled (served from files; the demo page is pnpm dev's)
 *
 * esbuild bundles each service's src/main.ts with the workspace packages it imports
 * (@tributary/* export their TypeScript sources), and leaves every third-party package
 * external: resolved from the service's own node_modules at run time, so MikroORM's dynamic
 * imports, PGlite's wasm files, amqplib, Apollo and openai load exactly as they do from the
 * sources. Each external must be a production dependency of the service itself (what
 * `pnpm deploy --prod` installs into its image); the build fails when one is not, and reports
 * workspace packages left in `dependencies` (the bundle carries them: they belong in
 * devDependencies). @tributary/core is `"sideEffects": false`, so a bundle leaves out the core
 * modules its service does not use, with their imports (the gateway's: no MikroORM, PGlite or pg).
 * Node runs the output with --enable-source-maps (each start script), so stack
 * traces name the TypeScript.
 *
 *   pnpm build                  every service
 *   pnpm build gateway jobs     only those (the Dockerfile builds its one SERVICE)
 */
import { builtinModules } from 'node:module';
import { readFileSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';
import { workspaceSubgraphs } from '../schema/src/subgraphs.ts';

const root = fileURLToPath(new URL('../', import.meta.url));

/** Every deployable service and its package folder: the gateway, then the workspace's subgraphs (one list, derived). */
export const SERVICE_DIRS: Record<string, string> = {
  gateway: 'gateway',
  ...Object.fromEntries(workspaceSubgraphs(root).map((s) => [s.name, s.dir])),
};

/**
 * Imports the built code has but never makes: gateway/src/ui/server.ts imports esbuild only to
 * bundle the UI on the fly from the sources; the built gateway serves dist/ui instead.
 */
const DEVELOPMENT_ONLY: Record<string, string[]> = { gateway: ['esbuild'] };

/** The esbuild define that tells gateway/src/ui/server.ts to serve dist/ui from files. */
export const PREBUILT_UI_DEFINE = 'TRIBUTARY_PREBUILT_UI';

const builtins = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
/** `@scope/name/sub` → `@scope/name`, `name/sub` → `name`. */
const packageName = (specifier: string) => specifier.split('/').slice(0, specifier.startsWith('@') ? 2 : 1).join('/');

/** Bundle workspace packages, leave every other bare specifier to node_modules at run time. */
const externalThirdParty: esbuild.Plugin = {
  name: 'external-third-party',
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, (args) => {
      if (args.path.startsWith('@tributary/')) return undefined;
      return { path: args.path, external: true };
    });
  },
};

interface PackageJson {
  name: string;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

async function buildService(name: string, dir: string): Promise<string[]> {
  const problems: string[] = [];
  const outdir = join(root, dir, 'dist');
  rmSync(outdir, { recursive: true, force: true });
  const started = performance.now();
  const result = await esbuild.build({
    absWorkingDir: join(root, dir),
    entryPoints: ['src/main.ts'],
    outfile: 'dist/main.js',
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20.19',
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'warning',
    // Names stay as written (errors and logs print constructor names; MikroORM reads class names).
    keepNames: true,
    plugins: [externalThirdParty],
    define: name === 'gateway' ? { [PREBUILT_UI_DEFINE]: 'true' } : {},
    banner: { js: `// Built by scripts/build.ts from ${dir}/src/main.ts; run with node --enable-source-maps.` },
  });
  const pkg = JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8')) as PackageJson;
  const externals = new Set<string>();
  for (const output of Object.values(result.metafile.outputs)) {
    for (const entry of output.imports) if (entry.external && !builtins.has(entry.path)) externals.add(packageName(entry.path));
  }
  for (const dep of [...externals].sort()) {
    if (DEVELOPMENT_ONLY[name]?.includes(dep)) {
      if (pkg.dependencies?.[dep]) problems.push(`${pkg.name}: ${dep} is only imported in development; list it in devDependencies`);
    } else if (!pkg.dependencies?.[dep]) problems.push(`${pkg.name}: the bundle imports ${dep} at run time, but it is not among its dependencies`);
  }
  const unused = Object.keys(pkg.dependencies ?? {}).filter((dep) => !dep.startsWith('@tributary/') && !externals.has(dep));
  // Not an error: a dependency may be loaded otherwise (createRequire, or as another one's peer).
  if (unused.length > 0) console.log(`${pkg.name}: dependencies the bundle does not import: ${unused.join(', ')}`);
  for (const dep of Object.keys(pkg.dependencies ?? {})) {
    if (dep.startsWith('@tributary/')) problems.push(`${pkg.name}: ${dep} is bundled into dist/main.js; list it in devDependencies`);
  }
  const bytes = result.metafile.outputs['dist/main.js']?.bytes ?? 0;
  console.log(`${dir}/dist/main.js: ${(bytes / 1024).toFixed(0)} KiB in ${Math.round(performance.now() - started)} ms; external: ${[...externals].sort().join(', ')}`);
  if (name === 'gateway') await buildUi(join(outdir, 'ui'));
  return problems;
}

/** GraphiQL, as gateway/src/ui/server.ts bundles it in development, written to files. */
async function buildUi(outdir: string): Promise<void> {
  const { buildUiBundle, writeUiBundle } = await import('../gateway/src/ui/server.ts');
  const bundle = await buildUiBundle();
  const { files, bytes } = writeUiBundle(bundle, outdir, gzipSync);
  console.log(`${relative(root, outdir)}: ${files} files, ${(bytes / 1024 / 1024).toFixed(1)} MiB in ${bundle.ms} ms`);
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  for (const name of wanted) if (!(name in SERVICE_DIRS)) throw new Error(`unknown service ${name}; one of ${Object.keys(SERVICE_DIRS).join(', ')}`);
  const problems: string[] = [];
  for (const [name, dir] of Object.entries(SERVICE_DIRS)) {
    if (wanted.length > 0 && !wanted.includes(name)) continue;
    problems.push(...(await buildService(name, dir)));
  }
  if (problems.length > 0) {
    console.error(`build failed:\n  ${problems.join('\n  ')}`);
    process.exitCode = 1;
  }
}

// Imported (scripts/image-folders.ts reads SERVICE_DIRS), it builds nothing.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
