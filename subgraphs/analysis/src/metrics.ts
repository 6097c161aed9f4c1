import { aiMetrics } from '@tributary/ai';
import { queryRows, type Database } from '@tributary/core/db';
import { externalCounter, watchGauge } from '@tributary/core/metrics';

/** Prometheus counters fed by the AI package's own (it does not depend on prom-client). */
function exportAiMetricsOnce(): void {
  const counters = {
    tokensIn: externalCounter('tributary_llm_tokens_total', 'LLM tokens, by direction', ['direction']),
    cacheHits: externalCounter('tributary_llm_cache_hits_total', 'Analyses answered from the response cache'),
    cacheMisses: externalCounter('tributary_llm_cache_misses_total', 'Analyses that had to call a provider'),
    fallbacks: externalCounter('tributary_llm_fallbacks_total', 'Calls that fell back to the next provider'),
    budgetRefusals: externalCounter('tributary_llm_budget_refusals_total', 'Calls refused by the daily token budget'),
    retries: externalCounter('tributary_llm_retries_total', 'Provider calls retried'),
  };
  aiMetrics.onIncrement((name, by) => {
    if (name === 'tokensIn') counters.tokensIn.inc({ direction: 'in' }, by);
    else if (name === 'tokensOut') counters.tokensIn.inc({ direction: 'out' }, by);
    else counters[name].inc(by);
  });
}
let aiMetricsExported = false;

/** The AI package's counters on /metrics, wired once per process (in `pnpm dev` services share it). */
export function exportAiMetrics(): void {
  if (aiMetricsExported) return;
  aiMetricsExported = true;
  exportAiMetricsOnce();
}

/** The work table on /metrics: what waits and runs, deployment-wide (every analysis process reports the same figures). */
export function watchWorkTable(db: Database): void {
  const read = async () => {
    const [row] = await queryRows<{ waiting: string | number; running: string | number; oldest: string | number | null }>(
      db.fork(),
      `select count(*) filter (where lease_token is null) as waiting, count(*) filter (where lease_token is not null) as running,
         extract(epoch from now() - min(enqueued_at) filter (where lease_token is null)) as oldest from analysis_queue`,
    );
    return row!;
  };
  const once = (() => {
    let pending: ReturnType<typeof read> | undefined;
    return () => (pending ??= read().finally(() => setImmediate(() => (pending = undefined))));
  })();
  watchGauge('tributary_analysis_documents', 'Documents in the analysis work table, by state: waiting for a call slot, or running', ['state'], async () => {
    const row = await once();
    return [
      [{ state: 'waiting' }, Number(row.waiting)],
      [{ state: 'running' }, Number(row.running)],
    ];
  });
  watchGauge('tributary_analysis_oldest_waiting_age_seconds', 'How long the longest-waiting document has waited for a call slot (0 when none waits)', [], async () => [[{}, Math.max(0, Number((await once()).oldest ?? 0))]]);
}
