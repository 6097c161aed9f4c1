/**
 * The analysis work table: the order documents are analysed in, shared by every analysis
 * process of a deployment through PostgreSQL (`FOR UPDATE SKIP LOCKED`, as graphile-worker,
 * pg-boss and Oban do). See docs/architecture.md, "Scheduling".
 *
 * Fair share across tenants is start-time fair queuing: each waiting document carries a tag,
 * its tenant's turn. A tenant's next document is tagged one turn (1 / its weight) after its
 * latest one still in the table; a tenant with nothing in the table joins at the smallest tag
 * there, i.e. at once and with no credit saved from idle time. The call slots take the
 * smallest tag first, so a tenant with 1,000 documents waiting and one with a single document
 * alternate, whoever came first.
 *
 * Priority orders a tenant's own documents: the turn the smallest tag gives a tenant goes to
 * its most urgent document (the two swap tags), urgency being the time it was enqueued plus
 * `ANALYSIS_PRIORITY_STEP_MS` per level below HIGH. So a HIGH upload overtakes its own
 * tenant's LOW backlog at once, and a LOW document is overtaken only by work enqueued less
 * than two steps after it: it ages into first place. Priority never moves a tenant ahead of
 * another one: that is what fair share is for.
 *
 * A claimed row stays in the table with a lease (`lease_token`, `available_at` = its expiry,
 * renewed while the call runs); the settling transaction deletes it. A row whose lease expired
 * is claimable again (its worker died), ahead of newer work (its tag is older).
 */
import type { ParsedEvent } from '@tributary/contracts';
import { queryRows, queryRun, type EntityManager } from '@tributary/core/db';
import { CANCEL_CHANNEL, WORK_CHANNEL } from './entities.ts';

export const PRIORITIES = ['HIGH', 'NORMAL', 'LOW'] as const;
export type Priority = (typeof PRIORITIES)[number];

export interface QueueSettings {
  /** `fair` (by tenant, then priority) or `fifo` (arrival order only: the baseline the fairness benchmark measures against). */
  order: 'fair' | 'fifo';
  /** How much waiting one priority level is worth, ms. */
  priorityStepMs: number;
  /** Model calls in flight for one tenant across the deployment; 0: no cap. */
  tenantConcurrency: number;
  /** Turns per round by tenant (default 1): a weight of 2 gets twice the share of 1. */
  tenantWeights: ReadonlyMap<string, number>;
  leaseMs: number;
}

/** A document claimed for analysis: what its work needs and the lease it holds. */
export interface Claimed {
  documentId: string;
  jobId: string;
  tenantId: string;
  /** The `document.uploaded` it is analysed from (text, title, trace). */
  event: string;
  /** This claim's attempt, 1 on the first. */
  attempt: number;
  leaseToken: string;
}

const ms = (n: number) => `(${Math.round(n)} * interval '1 millisecond')`;

/** Serializes, within a transaction, everything that tags or cancels one tenant's documents. */
const lockTenants = `select count(pg_advisory_xact_lock(hashtextextended('tributary.analysis.' || t, 0))) from (select distinct unnest(?::text[]) as t order by 1) tenants`;

/**
 * Enqueue `document.uploaded` events in the consumer's transaction (the inbox already holds
 * them): a QUEUED analysis row and a waiting work row each. A document whose analysis has
 * finished (a redelivery after its inbox row was pruned) is not queued again; a job cancelled
 * before its document arrived is settled CANCELLED here, with no call. Returns those jobs, and
 * the documents queued. Nobody is told of the new work yet: see {@link announceWork}.
 */
export type UploadEvent = Extract<ParsedEvent, { dataschema: 'document.uploaded/v1' }>;

export async function enqueue(em: EntityManager, events: readonly ParsedEvent[], settings: QueueSettings): Promise<{ cancelled: UploadEvent[]; queued: string[] }> {
  const uploads = events.filter((e): e is UploadEvent => e.dataschema === 'document.uploaded/v1');
  if (uploads.length === 0) return { cancelled: [], queued: [] };
  const tenants = [...new Set(uploads.map((e) => e.tenantid))];
  await queryRows(em, lockTenants, [tenants]);
  const tombstones = await queryRows<{ job_id: string; tenant_id: string }>(
    em,
    'delete from analysis_cancellations c using unnest(?::text[], ?::text[]) as u(job_id, tenant_id) where c.job_id = u.job_id and c.tenant_id = u.tenant_id returning c.job_id, c.tenant_id',
    [uploads.map((e) => e.data.jobId), uploads.map((e) => e.tenantid)],
  );
  const cancelledJobs = new Set(tombstones.map((t) => `${t.tenant_id}\n${t.job_id}`));
  const cancelled = uploads.filter((e) => cancelledJobs.has(`${e.tenantid}\n${e.data.jobId}`));
  const now = new Date();
  const queued: string[] = [];
  for (const tenantId of tenants) {
    const mine = uploads.filter((e) => e.tenantid === tenantId && !cancelledJobs.has(`${tenantId}\n${e.data.jobId}`));
    if (mine.length === 0) continue;
    const turn = 1 / (settings.tenantWeights.get(tenantId) ?? 1);
    const priority = mine.map((e) => PRIORITIES.indexOf(e.data.priority ?? 'NORMAL'));
    // Tags in SQL, after the lock: the tenant's latest tag (or the table's smallest) read by a
    // statement that sees every enqueue committed before this one.
    const rows = await queryRows<{ document_id: string }>(
      em,
      `with input as (
         select * from unnest(?::text[], ?::text[], ?::text[], ?::smallint[], ?::text[]) with ordinality as i(document_id, job_id, title, priority, event, n)
       ),
       base as (
         select coalesce((select max(tag) from analysis_queue where tenant_id = ?), (select min(tag) from analysis_queue), 0) as tag
       ),
       analysis as (
         insert into analyses (document_id, job_id, tenant_id, status, title, cached, attempts, created_at, updated_at)
         select document_id, job_id, ?, 'QUEUED', title, false, 0, ?, ? from input
         on conflict (document_id) do update set status = 'QUEUED', updated_at = excluded.updated_at where analyses.status in ('PENDING', 'QUEUED', 'RUNNING')
         returning document_id
       )
       insert into analysis_queue (document_id, job_id, tenant_id, priority, tag, urgency, event, available_at, enqueued_at)
       select i.document_id, i.job_id, ?, i.priority, base.tag + i.n * ?::float8, ?::timestamptz + i.priority * ${ms(settings.priorityStepMs)}, i.event, ?, ?
       from input i join analysis using (document_id) cross join base
       on conflict (document_id) do nothing
       returning document_id`,
      [
        mine.map((e) => e.data.documentId),
        mine.map((e) => e.data.jobId),
        mine.map((e) => e.data.title),
        priority,
        mine.map((e) => JSON.stringify(e)),
        tenantId,
        tenantId,
        now,
        now,
        tenantId,
        turn,
        now,
        now,
        now,
      ],
    );
    queued.push(...rows.map((r) => r.document_id));
  }
  // Rare (a cancel that overtook its upload): a statement each.
  for (const e of cancelled) {
    await queryRun(
      em,
      `insert into analyses (document_id, job_id, tenant_id, status, title, cached, attempts, created_at, updated_at) values (?, ?, ?, 'CANCELLED', ?, false, 0, ?, ?)
       on conflict (document_id) do update set status = 'CANCELLED', updated_at = excluded.updated_at where analyses.status in ('PENDING', 'QUEUED', 'RUNNING')`,
      [e.data.documentId, e.data.jobId, e.tenantid, e.data.title, now, now],
    );
  }
  return { cancelled, queued };
}

/**
 * Tell every analysis process's scheduler, when the caller's transaction commits, that work
 * waits in the table. The enqueuing transaction calls it when it leaves work unclaimed.
 */
export async function announceWork(em: EntityManager): Promise<void> {
  await queryRows(em, 'select pg_notify(?, ?)', [WORK_CHANNEL, '']);
}

/**
 * Claim the next document in order, in the caller's transaction, with a fresh lease; undefined
 * when nothing is claimable (or every tenant with work is at its cap). With a tenant cap, claims
 * take a deployment-wide lock first, so two processes cannot both see a tenant one below it.
 */
export async function claimNext(em: EntityManager, settings: QueueSettings, leaseToken: string): Promise<Claimed | undefined> {
  const cap = settings.tenantConcurrency;
  if (cap > 0) await queryRows(em, `select pg_advisory_xact_lock(hashtextextended('tributary.analysis.claims', 0))`);
  const capped = cap > 0
    ? `and tenant_id not in (select tenant_id from analysis_queue where lease_token is not null and available_at > now() group by tenant_id having count(*) >= ${Math.round(cap)})`
    : '';
  const fair = settings.order === 'fair';
  // The head of the line names the tenant whose turn it is; that tenant's most urgent document
  // takes the turn (the head itself, unless its tenant has more urgent work waiting).
  const [pick] = await queryRows<{ document_id: string; job_id: string; tenant_id: string; event: string; head_id: string; head_tag: number; own_tag: number }>(
    em,
    fair
      ? `with head as (
           select document_id, tenant_id, tag from analysis_queue where available_at <= now() ${capped}
           order by tag, enqueued_at, document_id limit 1 for update skip locked
         )
         select q.document_id, q.job_id, q.tenant_id, q.event, head.document_id as head_id, head.tag as head_tag, q.tag as own_tag
         from head cross join lateral (
           select document_id, job_id, tenant_id, event, tag from analysis_queue q
           where q.tenant_id = head.tenant_id and q.available_at <= now()
           order by q.urgency, q.tag, q.document_id limit 1 for update skip locked
         ) q`
      : `select document_id, job_id, tenant_id, event, document_id as head_id, tag as head_tag, tag as own_tag from analysis_queue
         where available_at <= now() ${capped} order by enqueued_at, document_id limit 1 for update skip locked`,
  );
  if (!pick) return undefined;
  const [claimed] = await queryRows<{ attempts: number }>(
    em,
    `with claimed as (
       update analysis_queue set tag = ?, lease_token = ?, attempts = attempts + 1, available_at = now() + ${ms(settings.leaseMs)}
       where document_id = ? returning attempts
     ),
     moved as (update analysis_queue set tag = ? where document_id = ? and document_id <> ? returning 1),
     analysis as (update analyses set status = 'RUNNING', attempts = (select attempts from claimed), updated_at = now() where document_id = ? returning 1)
     select attempts, (select count(*) from moved) as moved, (select count(*) from analysis) as analysis from claimed`,
    [pick.head_tag, leaseToken, pick.document_id, pick.own_tag, pick.head_id, pick.document_id, pick.document_id],
  );
  return { documentId: pick.document_id, jobId: pick.job_id, tenantId: pick.tenant_id, event: pick.event, attempt: claimed!.attempts, leaseToken };
}

/** Extend a claim's lease; false when it is no longer this claim's (cancelled, or taken over after expiring). */
export async function renewLease(em: EntityManager, documentId: string, leaseToken: string, leaseMs: number): Promise<boolean> {
  return (await queryRun(em, `update analysis_queue set available_at = now() + ${ms(leaseMs)} where document_id = ? and lease_token = ?`, [documentId, leaseToken])) > 0;
}

/** Give a claim back for another attempt after `delayMs`; false when it was no longer this claim's. */
export async function release(em: EntityManager, documentId: string, leaseToken: string, delayMs: number): Promise<boolean> {
  return (await queryRun(em, `update analysis_queue set lease_token = null, available_at = now() + ${ms(delayMs)} where document_id = ? and lease_token = ?`, [documentId, leaseToken])) > 0;
}

/**
 * Remove a settled claim's row in the settling transaction; false when the claim is no longer
 * this one's (then the transaction must roll back: whoever took the row settles the document).
 */
export async function finish(em: EntityManager, documentId: string, leaseToken: string): Promise<boolean> {
  return (await queryRun(em, 'delete from analysis_queue where document_id = ? and lease_token = ?', [documentId, leaseToken])) > 0;
}

/** How long until the next row becomes claimable (a retry's delay, a lease's expiry), ms; undefined when none waits on time. */
export async function nextAvailableInMs(em: EntityManager): Promise<number | undefined> {
  const [row] = await queryRows<{ ms: number | string | null }>(em, `select extract(epoch from (min(available_at) - now())) * 1000 as ms from analysis_queue where available_at > now()`);
  return row?.ms == null ? undefined : Math.max(0, Number(row.ms));
}

export type CancelOutcome =
  | { kind: 'cancelled'; documentId: string; attempts: number; wasRunning: boolean }
  | { kind: 'already-cancelled' }
  | { kind: 'finished'; status: 'COMPLETED' | 'FAILED' }
  | { kind: 'not-arrived' };

/**
 * Cancel a job in the caller's transaction, under its tenant's lock (so it cannot miss the
 * job's document being enqueued at the same moment). A waiting or running document's row is
 * deleted and its analysis goes CANCELLED; a running one's holder is told to abort its call
 * (a notification on commit) and then finds its lease gone, so it stores nothing. A job whose
 * document has not reached analysis yet gets a tombstone its enqueue honours.
 */
export async function cancel(em: EntityManager, jobId: string, tenantId: string): Promise<CancelOutcome> {
  await queryRows(em, lockTenants, [[tenantId]]);
  const [row] = await queryRows<{ document_id: string; attempts: number; lease_token: string | null }>(
    em,
    'delete from analysis_queue where job_id = ? and tenant_id = ? returning document_id, attempts, lease_token',
    [jobId, tenantId],
  );
  if (row) {
    await queryRun(em, `update analyses set status = 'CANCELLED', updated_at = now() where document_id = ?`, [row.document_id]);
    if (row.lease_token) await queryRows(em, 'select pg_notify(?, ?)', [CANCEL_CHANNEL, row.document_id]);
    return { kind: 'cancelled', documentId: row.document_id, attempts: row.attempts, wasRunning: row.lease_token !== null };
  }
  const [analysis] = await queryRows<{ status: string }>(em, 'select status from analyses where job_id = ? and tenant_id = ?', [jobId, tenantId]);
  if (analysis?.status === 'CANCELLED') return { kind: 'already-cancelled' };
  if (analysis?.status === 'COMPLETED' || analysis?.status === 'FAILED') return { kind: 'finished', status: analysis.status };
  await queryRun(em, 'insert into analysis_cancellations (job_id, tenant_id, requested_at) values (?, ?, now()) on conflict do nothing', [jobId, tenantId]);
  return { kind: 'not-arrived' };
}

/**
 * How many documents will be started before a waiting job under the current order (null when
 * the job is not waiting): in fair order, the documents tagged before the turn its tenant will
 * give it, that turn being its rank among its tenant's waiting documents by urgency.
 */
export async function queuePosition(em: EntityManager, jobId: string, tenantId: string, settings: QueueSettings): Promise<number | null> {
  const [row] = await queryRows<{ position: number | string | null }>(
    em,
    settings.order === 'fair'
      ? `with me as (select tenant_id, urgency, tag, document_id from analysis_queue where job_id = ? and tenant_id = ? and lease_token is null),
         rank as (
           select count(*) as k from analysis_queue q, me
           where q.tenant_id = me.tenant_id and q.lease_token is null and (q.urgency, q.tag, q.document_id) < (me.urgency, me.tag, me.document_id)
         ),
         turn as (
           select q.tag from analysis_queue q, me where q.tenant_id = me.tenant_id and q.lease_token is null
           order by q.tag, q.enqueued_at, q.document_id offset (select k from rank) limit 1
         )
         select (select count(*) from analysis_queue q where q.lease_token is null and q.tag < (select tag from turn)) as position from me`
      : `with me as (select enqueued_at, document_id from analysis_queue where job_id = ? and tenant_id = ? and lease_token is null)
         select (select count(*) from analysis_queue q, me where q.lease_token is null and (q.enqueued_at, q.document_id) < (me.enqueued_at, me.document_id)) as position from me`,
    [jobId, tenantId],
  );
  return row ? Number(row.position) : null;
}
