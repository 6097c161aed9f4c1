import { ConfigError } from '@tributary/core';
import { describe, expect, it } from 'vitest';
import { startEmbedded, subgraphServices } from '../src/index.ts';

describe('the embedded system', () => {
  it('refuses a production embedded start without authentication', async () => {
    await expect(startEmbedded({ env: { NODE_ENV: 'production', TRIBUTARY_DATA_DIR: 'memory://' }, port: 0 })).rejects.toBeInstanceOf(ConfigError);
  });

  it('runs each of Tributary’s subgraphs once', () => {
    expect(subgraphServices.map((s) => s.name)).toEqual(['documents', 'jobs', 'analysis', 'insights', 'webhooks']);
  });
});
