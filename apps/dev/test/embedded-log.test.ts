import { baseConfigSchema, loadConfig } from '@tributary/core';
import type { LogEntry } from '@tributary/core/events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createEmbeddedTransport } from '../src/index.ts';

const message = (text: string) => ({ routingKey: 'document.uploaded', messageId: crypto.randomUUID(), body: Buffer.from(text) });

describe('the embedded bus and its log', () => {
  it('keeps every publish in the events database, across a restart, offsets continuing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tributary-log-'));
    const env = { TRIBUTARY_DATA_DIR: dir };
    try {
      const first = await createEmbeddedTransport(loadConfig(baseConfigSchema, env), env);
      expect(first.transport.log?.kind).toBe('embedded');
      await first.transport.publish([message('one'), message('two')]);
      await first.close();

      const again = await createEmbeddedTransport(loadConfig(baseConfigSchema, env), env);
      await again.transport.publish([message('three')]);
      const entries: LogEntry[] = [];
      await again.transport.log!.read({ from: 'beginning' }, (e) => void entries.push(e));
      await again.close();
      expect(entries.map((e) => [e.offset, e.body.toString()])).toEqual([[0, 'one'], [1, 'two'], [2, 'three']]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('has no log with EVENT_LOG=off', async () => {
    const env = { TRIBUTARY_DATA_DIR: 'memory://', EVENT_LOG: 'off' };
    const bus = await createEmbeddedTransport(loadConfig(baseConfigSchema, env), env);
    expect(bus.transport.log).toBeUndefined();
    await bus.close();
  });
});
