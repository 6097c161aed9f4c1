import { configSchema } from '@tributary/gateway';

/**
 * The gateway's settings for where subgraphs listen, from their URLs by name: each in its own
 * `<NAME>_URL` where the gateway has one (`DOCUMENTS_URL`, …, as docker-compose.yml sets them),
 * the others in SUBGRAPH_URLS, followed by the entries of `theirs` (a caller's SUBGRAPH_URLS) for
 * any other subgraph (one of their own in their SUPERGRAPH_PATH); an entry of theirs for one of
 * `urls` is dropped, since the gateway refuses a subgraph named twice.
 */
export function gatewaySubgraphUrls(urls: Readonly<Record<string, string>>, theirs = ''): Record<string, string> {
  const env: Record<string, string> = {};
  const listed: string[] = [];
  for (const [name, url] of Object.entries(urls)) {
    const key = `${name.toUpperCase()}_URL`;
    if (key in configSchema.shape) env[key] = url;
    else listed.push(`${name}=${url}`);
  }
  const others = theirs
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry && !Object.hasOwn(urls, (entry.split('=')[0] ?? '').trim()));
  env.SUBGRAPH_URLS = [...listed, ...others].join(',');
  return env;
}
