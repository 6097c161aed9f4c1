/**
 * A progress display for long CLI work (DLQ replay, benchmarks): a live bar on a terminal, a
 * line per 10% (and at most one per 2 s) otherwise, so CI logs stay readable. Writes to stderr,
 * leaving stdout to the command's real output.
 */
export interface Progress {
  /** Count `n` more units done. */
  tick(n?: number): void;
  /** Finish: print the final line. */
  done(): void;
}

export function progress(label: string, total: number | undefined, out: NodeJS.WriteStream = process.stderr): Progress {
  const started = Date.now();
  const tty = out.isTTY === true;
  let count = 0;
  let lastLine = started;
  let lastDecile = -1;
  let timer: NodeJS.Timeout | undefined;
  const render = () => {
    const seconds = Math.max((Date.now() - started) / 1000, 0.001);
    const rate = count / seconds;
    if (total === undefined || total === 0) return `${label}: ${count} (${rate.toFixed(0)}/s)`;
    const fraction = Math.min(count / total, 1);
    const eta = rate > 0 ? Math.ceil((total - count) / rate) : Number.NaN;
    const bar = tty ? ` [${'#'.repeat(Math.round(fraction * 24)).padEnd(24, '.')}]` : '';
    return `${label}${bar} ${(fraction * 100).toFixed(0)}% ${count}/${total} ${rate.toFixed(0)}/s${Number.isFinite(eta) ? ` eta ${eta}s` : ''}`;
  };
  if (tty) {
    // Redraw on a timer, not per tick: ticks can come thousands of times a second.
    timer = setInterval(() => out.write(`\r${render()}\u001b[K`), 200);
    timer.unref();
  }
  return {
    tick(n = 1) {
      count += n;
      if (tty) return;
      const decile = total ? Math.floor((count / total) * 10) : -1;
      const now = Date.now();
      if ((decile > lastDecile && now - lastLine >= 2_000) || (!total && now - lastLine >= 2_000)) {
        lastDecile = decile;
        lastLine = now;
        out.write(`${render()}\n`);
      }
    },
    done() {
      clearInterval(timer);
      out.write(`${tty ? '\r' : ''}${render()} done in ${((Date.now() - started) / 1000).toFixed(1)}s${tty ? '\u001b[K' : ''}\n`);
    },
  };
}
