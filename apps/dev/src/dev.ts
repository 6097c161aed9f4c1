/**
 * `pnpm dev`: the whole system in one process. Embedded defaults (PGlite, in-memory bus,
 * offline analyzer) unless DATABASE_URL / AMQP_URL / OPENAI_API_KEY say otherwise.
 */
import { ConfigError } from '@tributary/core';
import { startEmbedded } from './embedded.ts';

try {
  const system = await startEmbedded({ port: Number(process.env.PORT ?? 4000) });
  const { url } = system.gateway;
  process.stdout.write(`
Tributary is running: ${url}  (graphql-ws on ${system.gateway.wsUrl})
  demo page  ${new URL('/', url)}
  GraphiQL   ${url} in a browser (both pre-filled with the token below)
  ${system.services.map((s) => `${s.name} ${s.url}`).join('\n  ')}

A development token (tenant "dev", valid 12 h; a new secret is generated at every start
unless AUTH_JWT_SECRET is set):
  export TOKEN=${system.devToken ?? '(authentication is configured externally)'}

Try it:
  curl -s ${url} -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \\
    -d '{"query":"mutation { uploadDocument(input: { title: \\"Hello\\", content: \\"Tributary turns uploads into insights. It is fast and reliable.\\" }) { document { id } job { id status } } }"}'

`);
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    system.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
} catch (error) {
  process.stderr.write(`${error instanceof ConfigError ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
}
