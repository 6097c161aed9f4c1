import { describe, expect, it } from 'vitest';
import { baseConfigSchema, ConfigError, loadConfig, parseLogRetention } from '../src/config.ts';
import { MemoryEventLog } from '../src/events/log-memory.ts';

describe('event log settings', () => {
  it('keeps the log on, for 7 days and 10 GB, when nothing is set', () => {
    const config = loadConfig(baseConfigSchema, {});
    expect(config.EVENT_LOG).toBe('on');
    expect(config.EVENT_LOG_RETENTION).toEqual({ maxAgeMs: 7 * 86_400_000, maxBytes: 10e9 });
  });

  it('reads an age, a size or both', () => {
    expect(parseLogRetention('12h')).toEqual({ maxAgeMs: 12 * 3_600_000 });
    expect(parseLogRetention('500MB')).toEqual({ maxBytes: 500e6 });
    expect(parseLogRetention(' 30d , 1TB ')).toEqual({ maxAgeMs: 30 * 86_400_000, maxBytes: 1e12 });
    expect(loadConfig(baseConfigSchema, { EVENT_LOG: 'off', EVENT_LOG_RETENTION: '90m' })).toMatchObject({ EVENT_LOG: 'off', EVENT_LOG_RETENTION: { maxAgeMs: 5_400_000 } });
  });

  it('refuses anything else with a sentence saying what to write, with the other errors', () => {
    for (const bad of ['7 days', '10', '7d,8d', '0d', 'forever', '10GB,']) expect(typeof parseLogRetention(bad)).toBe('string');
    let error: unknown;
    try {
      loadConfig(baseConfigSchema, { EVENT_LOG: 'maybe', EVENT_LOG_RETENTION: '7 weeks' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const issues = (error as ConfigError).issues;
    expect(issues.map((i) => i.key).sort()).toEqual(['EVENT_LOG', 'EVENT_LOG_RETENTION']);
    expect(issues.find((i) => i.key === 'EVENT_LOG_RETENTION')!.message).toMatch(/e\.g\. 7d,10GB/);
  });
});

describe('the array log', () => {
  it('keeps within its bytes, dropping the oldest first', () => {
    const log = new MemoryEventLog({ maxBytes: 25 });
    for (let i = 0; i < 5; i++) log.append([{ routingKey: 'a.b', messageId: `m${i}`, body: Buffer.alloc(10) }]);
    return log.stats().then((stats) => {
      expect(stats).toMatchObject({ entries: 2, bytes: 20, first: 3, last: 4 });
    });
  });
});

describe('the event log on /metrics', () => {
  it('reports entries, bytes and the oldest age of each namespace’s log on every scrape', async () => {
    const { registry, watchEventLog } = await import('../src/metrics.ts');
    const log = new MemoryEventLog();
    watchEventLog('metrics_ns', log);
    log.append([{ routingKey: 'a.b', messageId: 'm1', body: Buffer.alloc(7) }, { routingKey: 'a.b', messageId: 'm2', body: Buffer.alloc(5) }]);
    const text = await registry.metrics();
    expect(text).toContain('tributary_event_log_entries{namespace="metrics_ns",kind="memory"} 2');
    expect(text).toContain('tributary_event_log_bytes{namespace="metrics_ns",kind="memory"} 12');
    expect(text).toMatch(/tributary_event_log_oldest_age_seconds\{namespace="metrics_ns",kind="memory"\} \d/);
  });
});
