import type { ParsedEvent } from '@tributary/contracts';
import type { HandlerContext, NewEvent } from '@tributary/core/events';
import { queryRows, queryRun, valuesPlaceholders } from '@tributary/core/db';
import type { Outcome } from './entities.ts';

/** The outcome each analysis result event reports. */
const outcomeOf: Partial<Record<string, Outcome>> = {
  'analysis.completed/v1': 'COMPLETED',
  'analysis.failed/v1': 'FAILED',
  'analysis.cancelled/v1': 'CANCELLED',
};
type Result = ParsedEvent<'analysis.completed/v1' | 'analysis.failed/v1' | 'analysis.cancelled/v1'>;
type Completed = ParsedEvent<'analysis.completed/v1'>;
const isResult = (event: ParsedEvent): event is Result => outcomeOf[event.dataschema] !== undefined;

/** A text-array key that sorts like the composite primary key it stands for. */
const byKey = (a: [string, string], b: [string, string]) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);

/** One document's results in this batch, by its key (tenant, document). */
interface DocumentResults {
  key: [string, string];
  events: Result[];
}
/** What a batch adds to a tenant's counts. */
interface TenantDelta {
  analyzed: number;
  failed: number;
  cancelled: number;
}
/** What a batch adds to a theme of a tenant, by its key (tenant, name). */
interface ThemeDelta {
  key: [string, string];
  count: number;
  scoreSum: number;
  lastSeenAt: string;
}
/** A batch's changes, summed in memory: the document rows to insert and update (4 values each), the tenants' and themes' deltas. */
interface Fold {
  created: unknown[];
  changed: unknown[];
  tenants: Map<string, TenantDelta>;
  themes: Map<string, ThemeDelta>;
}

/** The batch's results by document, in key order, and each tenant's last event in delivery order (its announcement continues that trace). */
function resultsByDocument(events: ParsedEvent[]): { documents: DocumentResults[]; lastOfTenant: Map<string, ParsedEvent> } {
  const byDocument = new Map<string, DocumentResults>();
  const lastOfTenant = new Map<string, ParsedEvent>();
  for (const event of events) {
    if (!isResult(event)) continue;
    lastOfTenant.set(event.tenantid, event);
    const key: [string, string] = [event.tenantid, event.data.documentId];
    const id = JSON.stringify(key);
    const entry = byDocument.get(id);
    if (entry) entry.events.push(event);
    else byDocument.set(id, { key, events: [event] });
  }
  return { documents: [...byDocument.values()].sort((a, b) => byKey(a.key, b.key)), lastOfTenant };
}

/** The outcome each document of the batch already has, its row locked (in key order). */
async function lockKnownDocuments(em: HandlerContext['em'], documents: DocumentResults[]): Promise<Map<string, Outcome>> {
  const known = await queryRows<{ tenant_id: string; document_id: string; status: Outcome }>(
    em,
    `select d.tenant_id, d.document_id, d.status from insight_documents d
     join unnest(?::text[], ?::text[]) as k (tenant_id, document_id) using (tenant_id, document_id)
     order by d.tenant_id, d.document_id for update of d`,
    [documents.map((d) => d.key[0]), documents.map((d) => d.key[1])],
  );
  return new Map(known.map((r) => [JSON.stringify([r.tenant_id, r.document_id]), r.status]));
}

/** A completed analysis's themes, added to the tenant's. A theme named twice in one analysis counts once, with its best score. */
function addThemes(themes: Map<string, ThemeDelta>, tenant: string, event: Completed): void {
  const best = new Map<string, number>();
  for (const theme of event.data.themes) {
    const name = theme.name.trim().toLowerCase();
    if (name) best.set(name, Math.max(best.get(name) ?? 0, theme.score));
  }
  for (const [name, score] of best) {
    const themeId = JSON.stringify([tenant, name]);
    const theme = themes.get(themeId) ?? { key: [tenant, name], count: 0, scoreSum: 0, lastSeenAt: event.data.completedAt };
    theme.count++;
    theme.scoreSum += score;
    if (event.data.completedAt > theme.lastSeenAt) theme.lastSeenAt = event.data.completedAt;
    themes.set(themeId, theme);
  }
}

/** Fold each document's results into the batch's changes, once per document (see {@link aggregate} for the rules). */
function fold(documents: DocumentResults[], previous: Map<string, Outcome>, now: string): Fold {
  const result: Fold = { created: [], changed: [], tenants: new Map(), themes: new Map() };
  for (const { key, events: documentEvents } of documents) {
    const before = previous.get(JSON.stringify(key));
    let status = before;
    const counts = result.tenants.get(key[0]) ?? { analyzed: 0, failed: 0, cancelled: 0 };
    for (const event of documentEvents) {
      const outcome = outcomeOf[event.dataschema]!;
      if (status === 'COMPLETED' || status === 'CANCELLED' || (status === 'FAILED' && outcome !== 'COMPLETED')) continue;
      if (event.dataschema === 'analysis.completed/v1') {
        counts.analyzed++;
        if (status === 'FAILED') counts.failed--;
        addThemes(result.themes, key[0], event);
      } else if (outcome === 'FAILED') {
        counts.failed++;
      } else {
        counts.cancelled++;
      }
      status = outcome;
    }
    result.tenants.set(key[0], counts);
    if (status === before || status === undefined) continue;
    (before === undefined ? result.created : result.changed).push(key[0], key[1], status, now);
  }
  return result;
}

/** The documents' new outcomes: one insert for those first seen, one update for the others. */
async function writeDocuments(em: HandlerContext['em'], created: unknown[], changed: unknown[]): Promise<void> {
  if (created.length > 0) {
    await queryRun(em, `insert into insight_documents (tenant_id, document_id, status, updated_at) values ${valuesPlaceholders(created.length / 4, 4)}`, created);
  }
  if (changed.length > 0) {
    await queryRun(
      em,
      `update insight_documents d set status = v.status, updated_at = v.updated_at::timestamptz
       from (values ${valuesPlaceholders(changed.length / 4, 4)}) as v (tenant_id, document_id, status, updated_at)
       where d.tenant_id = v.tenant_id and d.document_id = v.document_id`,
      changed,
    );
  }
}

type TenantTotals = { tenant_id: string; analyzed: number; failed: number; cancelled: number };

/** Add the deltas to the tenants' counts (in tenant order); returns each tenant's totals after. */
function addTenantDeltas(em: HandlerContext['em'], tenantRows: [string, TenantDelta][]): Promise<TenantTotals[]> {
  return queryRows<TenantTotals>(
    em,
    `insert into tenant_stats (tenant_id, analyzed, failed, cancelled)
     select v.tenant_id, v.analyzed::int, v.failed::int, v.cancelled::int
     from (values ${valuesPlaceholders(tenantRows.length, 4)}) as v (tenant_id, analyzed, failed, cancelled) order by v.tenant_id
     on conflict (tenant_id) do update set analyzed = tenant_stats.analyzed + excluded.analyzed, failed = tenant_stats.failed + excluded.failed,
       cancelled = tenant_stats.cancelled + excluded.cancelled
     returning tenant_id, analyzed, failed, cancelled`,
    tenantRows.flatMap(([tenant, c]) => [tenant, c.analyzed, c.failed, c.cancelled]),
  );
}

/** Add the deltas to the themes' counts (rows in key order). */
async function addThemeDeltas(em: HandlerContext['em'], themeRows: ThemeDelta[]): Promise<void> {
  if (themeRows.length === 0) return;
  await queryRun(
    em,
    `insert into theme_stats (tenant_id, name, document_count, score_sum, last_seen_at)
     select v.tenant_id, v.name, v.document_count::int, v.score_sum::double precision, v.last_seen_at::timestamptz
     from (values ${valuesPlaceholders(themeRows.length, 5)}) as v (tenant_id, name, document_count, score_sum, last_seen_at) order by v.tenant_id, v.name
     on conflict (tenant_id, name) do update set document_count = theme_stats.document_count + excluded.document_count,
       score_sum = theme_stats.score_sum + excluded.score_sum,
       last_seen_at = greatest(theme_stats.last_seen_at, excluded.last_seen_at)`,
    themeRows.flatMap((t) => [t.key[0], t.key[1], t.count, t.scoreSum, t.lastSeenAt]),
  );
}

/** One `insights.updated` per changed tenant: its totals and the themes this batch changed. */
function announcements(totals: TenantTotals[], themeRows: ThemeDelta[], lastOfTenant: Map<string, ParsedEvent>, now: string): NewEvent<'insights.updated'>[] {
  const changedThemes = new Map<string, string[]>();
  for (const { key: [tenant, name] } of themeRows) {
    const names = changedThemes.get(tenant);
    if (names) names.push(name);
    else changedThemes.set(tenant, [name]);
  }
  return totals.map((row) => ({
    type: 'insights.updated',
    subject: row.tenant_id,
    tenantId: row.tenant_id,
    causedBy: lastOfTenant.get(row.tenant_id)!,
    data: {
      documents: row.analyzed + row.failed + row.cancelled,
      analyzed: row.analyzed,
      failed: row.failed,
      cancelled: row.cancelled,
      themes: changedThemes.get(row.tenant_id) ?? [],
      updatedAt: now,
    },
  }));
}

/**
 * Fold a batch of analysis results into the tenants' aggregates, once per document. A document
 * that FAILED and later COMPLETED (a replayed dead letter) moves from failed to analyzed; a
 * CANCELLED one is counted as cancelled, as a failed one is counted as failed, and stays so (a
 * cancelled job is terminal: analysis publishes no other result for it); any other repeat
 * changes nothing. The batch's changes are summed in memory and written with one
 * statement per table; every table's rows are locked in key order (documents, then tenants, then
 * themes), so concurrent batches wait for each other instead of deadlocking. A document first
 * seen by two batches at once makes one of them fail on its primary key and be retried event by
 * event, when it finds the other's row. Each tenant whose aggregates changed gets one
 * `insights.updated` with its totals after the fold, written to the outbox last (new rows only,
 * no lock another batch waits on); a batch of repeats changes nothing and announces nothing.
 */
export async function aggregate(events: ParsedEvent[], { em, publish }: HandlerContext): Promise<void> {
  const { documents, lastOfTenant } = resultsByDocument(events);
  if (documents.length === 0) return;
  const previous = await lockKnownDocuments(em, documents);
  const now = new Date().toISOString();
  const { created, changed, tenants, themes } = fold(documents, previous, now);
  await writeDocuments(em, created, changed);
  // A document's first result adds to analyzed, failed or cancelled and FAILED -> COMPLETED adds
  // to analyzed, so a tenant has a nonzero delta exactly when the batch changed its aggregates
  // (themes only change with analyzed).
  const tenantRows = [...tenants].filter(([, c]) => c.analyzed !== 0 || c.failed !== 0 || c.cancelled !== 0).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (tenantRows.length === 0) return;
  const totals = await addTenantDeltas(em, tenantRows);
  const themeRows = [...themes.values()].sort((a, b) => byKey(a.key, b.key));
  await addThemeDeltas(em, themeRows);
  // In the tenants' order (totals come back in whatever order the statement returns them).
  const byTenant = new Map(totals.map((r) => [r.tenant_id, r]));
  await publish(announcements(tenantRows.map(([tenant]) => byTenant.get(tenant)!), themeRows, lastOfTenant, now));
}
