import { createServer } from 'node:http';
import { createLogger } from '@tributary/core';
import { describe, expect, it } from 'vitest';
import { createUi } from '../src/ui/server.ts';

describe('GraphiQL', () => {
  it('never puts the development token in a production page', { timeout: 60_000 }, async () => {
    const ui = createUi({ logger: createLogger({ service: 'gateway', level: 'silent' }), production: true, devToken: 'dev-token-must-not-leak' });
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (!ui.graphiql(req, res) && !ui.routes(req, res, url)) res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      const text = await (await fetch(`http://127.0.0.1:${port}/graphql`, { headers: { accept: 'text/html' } })).text();
      expect(text).toContain('tributary-config');
      expect(text).not.toContain('dev-token-must-not-leak');
    } finally {
      server.close();
    }
  });
});
