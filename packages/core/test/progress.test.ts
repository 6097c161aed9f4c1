import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { progress } from '../src/progress.ts';

function sink(tty: boolean) {
  const lines: string[] = [];
  const stream = new Writable({ write: (chunk, _e, done) => (lines.push(String(chunk)), done()) }) as unknown as NodeJS.WriteStream;
  (stream as { isTTY?: boolean }).isTTY = tty;
  return { stream, lines };
}

describe('progress', () => {
  it('writes plain lines off a terminal (none for work done within 2 s) and a final line with the count', () => {
    const { stream, lines } = sink(false);
    const bar = progress('replaying', 10, stream);
    for (let i = 0; i < 10; i++) bar.tick();
    bar.done();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^replaying 100% 10\/10 .* done in \d+\.\ds\n$/);
    expect(lines.join('')).not.toContain('\r');
  });

  it('counts without a total', () => {
    const { stream, lines } = sink(false);
    const bar = progress('events', undefined, stream);
    bar.tick(5);
    bar.done();
    expect(lines.at(-1)).toMatch(/^events: 5 \(\d+\/s\) done/);
  });
});
