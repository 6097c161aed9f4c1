import type { Logger } from '@tributary/core';
import type { OutputFile } from 'esbuild';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, extname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { UiConfig } from './config.ts';
import { graphiqlPage, type PageAssets } from './pages.ts';

/** URL prefix of the bundled files. */
export const UI_ASSET_PREFIX = '/ui/';

export interface UiOptions {
  logger: Logger;
  /** Production: the pages never carry a development token. */
  production: boolean;
  /** Pre-fills GraphiQL's token (development only; ignored in production). */
  devToken?: string | undefined;
  /** The query GraphiQL opens with (default: a generic one, with how to send the token). */
  defaultQuery?: string | undefined;
  /** Default `/graphql`. */
  graphqlPath?: string;
  /**
   * A folder written by `pnpm build` (its manifest.json and files) to serve instead of bundling.
   * Default: the built gateway's dist/ui; none when running from the sources (development
   * bundles on the first request).
   */
  prebuiltDir?: string | undefined;
}

export interface Ui {
  /**
   * Answers a browser's `GET /graphql` (Accept: text/html, no `query` parameter) with GraphiQL
   * and returns true; false for every other request, which goes on to the GraphQL handler.
   */
  graphiql(req: IncomingMessage, res: ServerResponse): boolean;
  /** `/ui/*` (GraphiQL's bundle); false for any other path. */
  routes(req: IncomingMessage, res: ServerResponse, url: URL): boolean;
  /** Bundles now instead of on the first request; resolves to the bundle's build time in ms. */
  bundle(): Promise<number>;
}

/** A bundled file, served under its URL path. */
export interface Asset {
  body: Buffer;
  type: string;
  gzip?: Buffer;
}

/** Browser code bundled by {@link bundleBrowserCode}: its files by URL path, and what each entry's page loads. */
export interface BrowserBundle {
  assets: Map<string, Asset>;
  entries: Record<string, PageAssets>;
  ms: number;
}

/** GraphiQL's files, which of them its page loads, and Monaco's workers. */
export interface Bundle {
  assets: Map<string, Asset>;
  graphiql: PageAssets;
  workers: Record<string, string>;
  ms: number;
}

const clientDir = fileURLToPath(new URL('./client/', import.meta.url));

// Defined as true by scripts/build.ts in gateway/dist/main.js, whose UI files are in dist/ui.
declare const TRIBUTARY_PREBUILT_UI: boolean | undefined;
/** Where the built gateway finds the files `pnpm build` wrote; undefined when running from the sources. */
export const defaultPrebuiltUiDir: string | undefined =
  typeof TRIBUTARY_PREBUILT_UI !== 'undefined' && TRIBUTARY_PREBUILT_UI ? fileURLToPath(new URL('./ui/', import.meta.url)) : undefined;

/** dist/ui/manifest.json: what `writeUiBundle` wrote and `readUiBundle` serves. */
interface Manifest {
  graphiql: PageAssets;
  workers: Record<string, string>;
  /** URL path → its file (relative to the manifest), type and gzipped copy. */
  assets: Record<string, { file: string; type: string; gzip?: string }>;
  ms: number;
}
const MANIFEST = 'manifest.json';

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.ttf': 'font/ttf',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

// Everything is served from this origin: no CDN, nothing fetched from elsewhere at run time.
// Monaco sets inline styles, hence 'unsafe-inline' for styles only.
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self' ws: wss:",
  "worker-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'self'",
].join('; ');

/**
 * Monaco's workers, resolved from the @graphiql/react that graphiql itself uses, so the workers
 * always match the editor in the bundle.
 */
function workerEntries(): Record<string, string> {
  const fromGraphiql = createRequire(createRequire(import.meta.url).resolve('graphiql/package.json'));
  const fromReact = createRequire(fromGraphiql.resolve('@graphiql/react/package.json'));
  return {
    'editor.worker': fromReact.resolve('monaco-editor/esm/vs/editor/editor.worker.js'),
    'json.worker': fromReact.resolve('monaco-editor/esm/vs/language/json/json.worker.js'),
    'graphql.worker': fromReact.resolve('monaco-graphql/esm/graphql.worker.js'),
  };
}

const esbuildCommon = (dir: string) =>
  ({
    absWorkingDir: dir,
    bundle: true,
    minify: true,
    write: false,
    metafile: true,
    outdir: 'out',
    platform: 'browser',
    target: 'es2022',
    logLevel: 'silent',
    define: { 'process.env.NODE_ENV': '"production"' },
  }) as const;

/** An output file's URL: `prefix` and its path under the build's outdir. */
const urlOf = (dir: string, prefix: string, path: string) => prefix + relative(join(dir, 'out'), path).split('\\').join('/');

function addAssets(assets: Map<string, Asset>, dir: string, prefix: string, files: OutputFile[]): void {
  for (const file of files) assets.set(urlOf(dir, prefix, file.path), { body: Buffer.from(file.contents), type: TYPES[extname(file.path)] ?? 'application/octet-stream' });
}

/**
 * Bundles browser entry points with esbuild into memory: minified ES modules with shared chunks,
 * each entry's CSS as one file, fonts and images as files, every URL under `prefix` with a
 * content hash in its name. esbuild is loaded here only (a development dependency: the built
 * gateway serves files `pnpm build` wrote). For GraphiQL here, and for pages of one's own
 * mounted beside it (the `routes` of startGateway).
 * @param options.dir the folder the entries are in (their imports resolve from there)
 * @param options.entries entry file (relative to `dir`) by entry name
 */
export async function bundleBrowserCode(options: { dir: string; entries: Record<string, string>; prefix: string }): Promise<BrowserBundle> {
  const { dir, entries, prefix } = options;
  const started = performance.now();
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    ...esbuildCommon(dir),
    entryPoints: entries,
    format: 'esm',
    splitting: true,
    publicPath: prefix,
    entryNames: '[name]-[hash]',
    chunkNames: 'chunk-[hash]',
    assetNames: '[name]-[hash]',
    loader: { '.ttf': 'file', '.woff': 'file', '.woff2': 'file', '.svg': 'file', '.png': 'file' },
  });
  const assets = new Map<string, Asset>();
  addAssets(assets, dir, prefix, result.outputFiles);
  const entry = (file: string): PageAssets => {
    for (const [path, output] of Object.entries(result.metafile.outputs)) {
      if (output.entryPoint !== file) continue;
      return { script: urlOf(dir, prefix, join(dir, path)), styles: output.cssBundle ? [urlOf(dir, prefix, join(dir, output.cssBundle))] : [] };
    }
    throw new Error(`the bundle has no output for ${file}`);
  };
  return { assets, entries: Object.fromEntries(Object.entries(entries).map(([name, file]) => [name, entry(file)])), ms: Math.round(performance.now() - started) };
}

/** Bundles GraphiQL and Monaco's workers with esbuild, into memory. */
export async function buildUiBundle(): Promise<Bundle> {
  const started = performance.now();
  const esbuild = await import('esbuild');
  const [pages, workers] = await Promise.all([
    bundleBrowserCode({ dir: clientDir, entries: { graphiql: 'graphiql.ts' }, prefix: UI_ASSET_PREFIX }),
    esbuild.build({ ...esbuildCommon(clientDir), entryPoints: workerEntries(), format: 'iife', entryNames: '[name]-[hash]' }),
  ]);
  const assets = pages.assets;
  addAssets(assets, clientDir, UI_ASSET_PREFIX, workers.outputFiles);
  const workerUrls: Record<string, string> = {};
  for (const [path, output] of Object.entries(workers.metafile.outputs)) {
    const label = /([^/]+)\.worker-[^/]*\.js$/.exec(path)?.[1];
    if (label && output.entryPoint) workerUrls[label] = urlOf(clientDir, UI_ASSET_PREFIX, join(clientDir, path));
  }
  return { assets, graphiql: pages.entries.graphiql!, workers: workerUrls, ms: Math.round(performance.now() - started) };
}

const isCompressible = (asset: { type: string; body: Buffer }) => asset.type.startsWith('text/') && asset.body.length > 1024;

/**
 * Writes a bundle to `dir` (each file under its URL's name, a gzipped copy of each compressible
 * one, and manifest.json), for `readUiBundle`. Used by `pnpm build`.
 */
export function writeUiBundle(bundle: Bundle, dir: string, gzip: (data: Buffer) => Buffer = gzipSync): { files: number; bytes: number } {
  mkdirSync(dir, { recursive: true });
  const manifest: Manifest = { graphiql: bundle.graphiql, workers: bundle.workers, assets: {}, ms: bundle.ms };
  let bytes = 0;
  for (const [url, asset] of bundle.assets) {
    const file = url.slice(UI_ASSET_PREFIX.length);
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    writeFileSync(join(dir, file), asset.body);
    bytes += asset.body.length;
    const entry: Manifest['assets'][string] = { file, type: asset.type };
    if (isCompressible(asset)) {
      entry.gzip = `${file}.gz`;
      writeFileSync(join(dir, entry.gzip), gzip(asset.body));
    }
    manifest.assets[url] = entry;
  }
  writeFileSync(join(dir, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
  return { files: bundle.assets.size, bytes };
}

/** A bundle `writeUiBundle` wrote, read into memory (a few MB, read once per process). */
export function readUiBundle(dir: string): Bundle {
  const manifest = JSON.parse(readFileSync(join(dir, MANIFEST), 'utf8')) as Manifest;
  const assets = new Map<string, Asset>();
  for (const [url, entry] of Object.entries(manifest.assets)) {
    assets.set(url, { body: readFileSync(join(dir, entry.file)), type: entry.type, ...(entry.gzip ? { gzip: readFileSync(join(dir, entry.gzip)) } : {}) });
  }
  return { assets, graphiql: manifest.graphiql, workers: manifest.workers, ms: 0 };
}

/**
 * An HTML page, never cached (it may carry a development token), under a Content-Security-Policy
 * that lets it load and connect to its own origin only.
 */
export function sendPage(req: IncomingMessage, res: ServerResponse, html: string): void {
  const body = Buffer.from(html);
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': body.length,
    // The page may carry a development token: never cached.
    'cache-control': 'no-store',
    'content-security-policy': CONTENT_SECURITY_POLICY,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** A bundled file, cached for good (its name carries a content hash), gzipped when the client takes it. */
export function sendAsset(req: IncomingMessage, res: ServerResponse, asset: Asset): void {
  const compressible = isCompressible(asset);
  const gzip = compressible && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
  const body = gzip ? (asset.gzip ??= gzipSync(asset.body)) : asset.body;
  res.writeHead(200, {
    'content-type': asset.type,
    'content-length': body.length,
    // File names carry a content hash.
    'cache-control': 'public, max-age=31536000, immutable',
    'x-content-type-options': 'nosniff',
    ...(compressible ? { vary: 'accept-encoding' } : {}),
    ...(gzip ? { 'content-encoding': 'gzip' } : {}),
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

export function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

// One bundle per process (per folder), shared by every gateway in it: it does not depend on the
// options, which only go into the HTML.
let pending: Promise<Bundle> | undefined;
const prebuilt = new Map<string, Bundle>();

/**
 * The files `pnpm build` wrote to `dir`, read into memory once per process (per folder). A built
 * gateway without them gets a rejected promise: esbuild is not in its image, so it says what is
 * missing instead of bundling.
 */
function prebuiltFiles(dir: string, logger: Logger): Promise<Bundle> {
  let loaded = prebuilt.get(dir);
  if (!loaded && existsSync(join(dir, MANIFEST))) {
    loaded = readUiBundle(dir);
    prebuilt.set(dir, loaded);
    logger.debug({ dir, files: loaded.assets.size }, 'ui: serving the GraphiQL files built by pnpm build');
  }
  const files = loaded ? Promise.resolve(loaded) : Promise.reject(new Error(`no UI files at ${dir}: run pnpm build`));
  files.catch(() => logger.error({ dir }, 'ui: the built gateway has no UI files (run pnpm build); GraphiQL answers 500'));
  return files;
}

/** GraphiQL bundled into memory on the first call, once per process; a bundling that failed is tried again by the next call. */
function bundledFiles(logger: Logger): Promise<Bundle> {
  if (!pending) {
    logger.info('ui: bundling GraphiQL into memory (first request)');
    pending = buildUiBundle().then(
      (built) => {
        let bytes = 0;
        for (const asset of built.assets.values()) bytes += asset.body.length;
        logger.info({ ms: built.ms, files: built.assets.size, bytes }, `ui: bundled GraphiQL in ${built.ms} ms`);
        return built;
      },
      (error: unknown) => {
        pending = undefined; // the next request tries again
        logger.error({ err: error instanceof Error ? error.message : String(error) }, 'ui: bundling failed');
        throw error;
      },
    );
  }
  return pending;
}

/** Answers with the bundle once there is one: a 500 when it could not be had, or when the answer failed. */
function serveBundle(bundle: Promise<Bundle>, res: ServerResponse, logger: Logger, answer: (built: Bundle) => void): void {
  bundle
    .then(answer, () => sendText(res, 500, 'The UI bundle failed to build; see the gateway log.'))
    .catch((error: unknown) => {
      logger.error({ err: error instanceof Error ? error.message : String(error) }, 'ui: response failed');
      if (res.headersSent) res.destroy();
      else sendText(res, 500, 'Internal Server Error');
    });
}

const isRead = (req: IncomingMessage) => req.method === 'GET' || req.method === 'HEAD';

/** A browser's `GET /graphql` (Accept: text/html, no `query` parameter): what GraphiQL answers. */
function isGraphiqlRequest(req: IncomingMessage, graphqlPath: string): boolean {
  if (!isRead(req)) return false;
  const accept = String(req.headers.accept ?? '');
  if (!accept.includes('text/html')) return false;
  let url: URL;
  try {
    url = new URL(req.url ?? '/', 'http://localhost');
  } catch {
    return false;
  }
  return url.pathname === graphqlPath && !url.searchParams.has('query');
}

/**
 * The gateway's browser page: GraphiQL on a browser's `GET /graphql`, its files under `/ui/`.
 * The built gateway serves the files `pnpm build` bundled (gateway/dist/ui), read into memory
 * when the gateway starts. From the sources (`pnpm dev`, tests) they are bundled with esbuild
 * into memory on the first request (graphiql, React, Monaco and their CSS: about 3 s on 2
 * cores) and cached for the life of the process. Nothing is loaded from a CDN.
 */
export function createUi(options: UiOptions): Ui {
  const { logger } = options;
  const graphqlPath = options.graphqlPath ?? '/graphql';
  const devToken = options.production ? undefined : options.devToken;
  const prebuiltDir = 'prebuiltDir' in options ? options.prebuiltDir : defaultPrebuiltUiDir;
  const files = prebuiltDir !== undefined ? prebuiltFiles(prebuiltDir, logger) : undefined;
  const bundle = (): Promise<Bundle> => files ?? bundledFiles(logger);
  const serve = (res: ServerResponse, answer: (built: Bundle) => void): void => serveBundle(bundle(), res, logger, answer);

  const configFor = (built: Bundle): UiConfig => ({
    graphqlPath,
    ...(devToken ? { devToken } : {}),
    ...(options.defaultQuery ? { defaultQuery: options.defaultQuery } : {}),
    workers: built.workers,
  });

  return {
    graphiql(req, res) {
      if (!isGraphiqlRequest(req, graphqlPath)) return false;
      serve(res, (built) => sendPage(req, res, graphiqlPage(built.graphiql, configFor(built))));
      return true;
    },
    routes(req, res, url) {
      if (!url.pathname.startsWith(UI_ASSET_PREFIX)) return false;
      if (!isRead(req)) {
        sendText(res, 405, 'Method Not Allowed');
        return true;
      }
      serve(res, (built) => {
        const asset = built.assets.get(url.pathname);
        if (asset) sendAsset(req, res, asset);
        else sendText(res, 404, 'Not Found');
      });
      return true;
    },
    bundle: async () => (await bundle()).ms,
  };
}
