/**
 * `@tributary/gateway/ui`: what a page of one's own, mounted beside GraphiQL with startGateway's
 * `routes` (`pnpm dev`'s demo page), shares with it: bundling its browser code, its HTML with the
 * {@link UiConfig} its script reads, the same headers, and the token the pages keep under
 * {@link TOKEN_STORAGE_KEY}. Its browser code reads them with `@tributary/gateway/ui/client`.
 */
export { TOKEN_STORAGE_KEY, UI_CONFIG_ELEMENT_ID, type UiConfig } from './config.ts';
export { escapeHtml, htmlPage, type PageAssets, type PageOptions } from './pages.ts';
export { bundleBrowserCode, sendAsset, sendPage, sendText, UI_ASSET_PREFIX, type Asset, type BrowserBundle } from './server.ts';
