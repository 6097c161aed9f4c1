import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const src = fileURLToPath(new URL('../src/', import.meta.url));

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'ui' ? [] : files(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

describe('the gateway knows no product', () => {
  it('names none of our subscriptions, events or the Job type outside the demo page', () => {
    const found = files(src).flatMap((file) =>
      readFileSync(file, 'utf8')
        .split('\n')
        .flatMap((line, i) => (/jobCompleted|jobUpdated|job\.updated|\bJob\b/.test(line) ? [`${file.slice(src.length)}:${i + 1}: ${line.trim()}`] : [])),
    );
    expect(found).toEqual([]);
  });

  it('names our upload mutation only as the default of a setting (UPLOAD_RATE_LIMIT_FIELDS)', () => {
    const found = files(src).flatMap((file) =>
      readFileSync(file, 'utf8')
        .split('\n')
        .flatMap((line, i) => (/uploadDocument/.test(line) ? [`${file.slice(src.length)}:${i + 1}`] : [])),
    );
    expect(found.filter((at) => !at.startsWith('config.ts:'))).toEqual([]);
  });
});
