import type { Logger } from '@tributary/core';
import type { ExtraRoutes } from '@tributary/core/server';
import { bundleBrowserCode, sendAsset, sendPage, sendText, type BrowserBundle, type UiConfig } from '@tributary/gateway/ui';
import { fileURLToPath } from 'node:url';
import { demoPage } from './page.ts';

/** URL prefix of the demo page's bundled files (GraphiQL's are under the gateway's `/ui/`). */
export const DEMO_ASSET_PREFIX = '/demo/';

const clientDir = fileURLToPath(new URL('./client/', import.meta.url));

export interface DemoOptions {
  logger: Logger;
  /** Production: the page never carries a development token. */
  production: boolean;
  /** Pre-fills the page's token (development only; ignored in production). */
  devToken?: string | undefined;
  /** The gateway's GraphQL path, for HTTP and graphql-ws. Default `/graphql`. */
  graphqlPath?: string;
}

export interface Demo {
  /** `/` (the page) and `/demo/*` (its files); false for any other path. For startGateway's `routes`. */
  routes: ExtraRoutes;
  /** Bundles now instead of on the first request; resolves to the bundle's build time in ms. */
  bundle(): Promise<number>;
}

// One bundle per process, shared by every embedded system in it (the options only go into the HTML).
let pending: Promise<BrowserBundle> | undefined;

/**
 * `pnpm dev`'s demo page on the gateway's server, through startGateway's `routes`: upload a
 * document, follow its job live over graphql-ws, see its analysis and the tenant's themes. It
 * shares GraphiQL's headers and the token typed in either (same tab). Bundled from the sources
 * with esbuild on the first request (well under a second) and kept for the life of the process.
 */
export function createDemo(options: DemoOptions): Demo {
  const { logger } = options;
  const config: UiConfig = {
    graphqlPath: options.graphqlPath ?? '/graphql',
    ...(options.devToken && !options.production ? { devToken: options.devToken } : {}),
  };

  const bundle = (): Promise<BrowserBundle> => {
    pending ??= bundleBrowserCode({ dir: clientDir, entries: { demo: 'demo.ts' }, prefix: DEMO_ASSET_PREFIX }).then(
      (built) => {
        logger.info({ ms: built.ms, files: built.assets.size }, `demo: bundled the demo page in ${built.ms} ms`);
        return built;
      },
      (error: unknown) => {
        pending = undefined; // the next request tries again
        logger.error({ err: error instanceof Error ? error.message : String(error) }, 'demo: bundling failed');
        throw error;
      },
    );
    return pending;
  };

  return {
    routes(req, res, url) {
      if (url.pathname !== '/' && !url.pathname.startsWith(DEMO_ASSET_PREFIX)) return false;
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        sendText(res, 405, 'Method Not Allowed');
        return true;
      }
      bundle()
        .then(
          (built) => {
            if (url.pathname === '/') return sendPage(req, res, demoPage(built.entries.demo!, config));
            const asset = built.assets.get(url.pathname);
            if (asset) sendAsset(req, res, asset);
            else sendText(res, 404, 'Not Found');
          },
          () => sendText(res, 500, 'The demo page failed to build; see the log.'),
        )
        .catch((error: unknown) => {
          logger.error({ err: error instanceof Error ? error.message : String(error) }, 'demo: response failed');
          if (res.headersSent) res.destroy();
          else sendText(res, 500, 'Internal Server Error');
        });
      return true;
    },
    bundle: async () => (await bundle()).ms,
  };
}
