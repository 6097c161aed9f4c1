import { UI_CONFIG_ELEMENT_ID, type UiConfig } from './config.ts';

/** The bundled files a page loads. */
export interface PageAssets {
  script: string;
  styles: string[];
}

/** Text made safe for HTML text and attribute values. */
export const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// JSON in a <script> element: `<` escaped, so no `</script>` or `<!--` can end or change it.
const configElement = (config: UiConfig) => `<script id="${UI_CONFIG_ELEMENT_ID}" type="application/json">${JSON.stringify(config).replace(/</g, '\\u003c')}</script>`;

function head(title: string, assets: PageAssets): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<link rel="icon" href="data:,">
${assets.styles.map((href) => `<link rel="stylesheet" href="${escapeHtml(href)}">`).join('\n')}
</head>`;
}

/** What a page gets: its title, its bundled files, its body's markup and the {@link UiConfig} its script reads. */
export interface PageOptions {
  title: string;
  assets: PageAssets;
  /** The markup inside `<body>`, before the config element and the script (trusted: written by the page's owner). */
  body: string;
  config: UiConfig;
}

/** A whole HTML page loading one bundled script (and its styles), with its {@link UiConfig} embedded. */
export function htmlPage({ title, assets, body, config }: PageOptions): string {
  return `${head(title, assets)}
<body>
${body.trim()}
${configElement(config)}
<script type="module" src="${escapeHtml(assets.script)}"></script>
</body>
</html>
`;
}

export function graphiqlPage(assets: PageAssets, config: UiConfig): string {
  return htmlPage({ title: 'GraphiQL · Tributary', assets, body: '<div id="graphiql" role="main">Loading GraphiQL…</div>', config });
}
