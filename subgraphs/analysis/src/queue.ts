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
import { parse, type ParsedEvent } from '@tributary/contracts';
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
  event: UploadEvent;
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
 * before its document arrived is settled CANCELLED here, with no call. Returns those jobs, the
 * documents queued, and those claimed at once. Nobody is told of the new work: see {@link announceWork}.
 *
 * `slots`: call slots the caller has free for work claimed in this transaction. When nothing in
 * the table is claimable (every row is leased or delayed) and a tenant's new documents fit the
 * slots left, they are the head of the line whatever their order, so they are inserted already
 * claimed (leased, their analyses RUNNING): at low load a document costs no claim statement and
 * no second write of its rows (not under a tenant cap). Otherwise they wait, and the caller may
 * claim in order ({@link claimNext}).
 */
export type UploadEvent = Extract<ParsedEvent, { dataschema: 'document.uploaded/v1' }>;

export async function enqueue(
  em: EntityManager,
  events: readonly ParsedEvent[],
  settings: QueueSettings,
  slots = 0,
): Promise<{ cancelled: UploadEvent[]; queued: string[]; claimed: Claimed[] }> {
  const uploads = events.filter((e): e is UploadEvent => e.dataschema === 'document.uploaded/v1');
  if (uploads.length === 0) return { cancelled: [], queued: [], claimed: [] };
  const tenants = [...new Set(uploads.map((e) => e.tenantid))];
  await queryRows(em, lockTenants, [tenants]);
  const now = new Date();
  const queued: string[] = [];
  const claimed: Claimed[] = [];
  const cancelledJobs = new Set<string>();
  for (const tenantId of tenants) {
    const mine = uploads.filter((e) => e.tenantid === tenantId);
    // Under a tenant cap only claimNext claims (it counts the tenant's live leases under the claims lock).
    const rows = await enqueueTenant(em, tenantId, mine, settings, now, settings.tenantConcurrency > 0 ? 0 : slots - claimed.length);
    const byDocument = new Map(mine.map((e) => [e.data.documentId, e]));
    for (const row of rows) {
      if (row.document_id !== null) queued.push(row.document_id);
      if (row.document_id !== null && row.lease_token !== null) {
        const event = byDocument.get(row.document_id)!;
        claimed.push({ documentId: row.document_id, jobId: event.data.jobId, tenantId, event, attempt: 1, leaseToken: row.lease_token });
      }
      if (row.cancelled_job !== null) cancelledJobs.add(`${tenantId}\n${row.cancelled_job}`);
    }
  }
  const cancelled = uploads.filter((e) => cancelledJobs.has(`${e.tenantid}\n${e.data.jobId}`));
  return { cancelled, queued, claimed };
}

/**
 * One tenant's part of {@link enqueue}, in one statement after the tenant's lock, so it sees
 * every enqueue and cancel committed before: the tenant's latest tag (or the table's smallest);
 * the tombstones of cancels that overtook their upload (rare: those documents are settled
 * CANCELLED, not queued); the documents inserted already claimed when nothing in the table is
 * claimable and they fit `directSlots`. Rows: each queued document (with its lease token when
 * claimed), and each tombstoned job.
 */
function enqueueTenant(em: EntityManager, tenantId: string, mine: readonly UploadEvent[], settings: QueueSettings, now: Date, directSlots: number) {
  const turn = 1 / (settings.tenantWeights.get(tenantId) ?? 1);
  const priority = mine.map((e) => PRIORITIES.indexOf(e.data.priority ?? 'NORMAL'));
  return queryRows<{ document_id: string | null; lease_token: string | null; cancelled_job: string | null }>(
    em,
    `with input as (
       select * from unnest(?::text[], ?::text[], ?::text[], ?::smallint[], ?::text[]) with ordinality as i(document_id, job_id, title, priority, event, n)
     ),
     tombstones as (
       delete from analysis_cancellations c using input i where c.job_id = i.job_id and c.tenant_id = ? returning c.job_id
     ),
     kept as (select * from input where job_id not in (select job_id from tombstones)),
     base as (
       select coalesce((select max(tag) from analysis_queue where tenant_id = ?), (select min(tag) from analysis_queue), 0) as tag
     ),
     direct as (
       select (select count(*) from kept) <= ?::int and not exists (select 1 from analysis_queue where available_at <= now()) as claim
     ),
     cancelled as (
       insert into analyses (document_id, job_id, tenant_id, status, title, cached, attempts, created_at, updated_at)
       select document_id, job_id, ?, 'CANCELLED', title, false, 0, ?, ? from input where job_id in (select job_id from tombstones)
       on conflict (document_id) do update set status = 'CANCELLED', updated_at = excluded.updated_at where analyses.status in ('PENDING', 'QUEUED', 'RUNNING')
     ),
     analysis as (
       insert into analyses (document_id, job_id, tenant_id, status, title, cached, attempts, created_at, updated_at)
       select document_id, job_id, ?, case when direct.claim then 'RUNNING' else 'QUEUED' end, title, false, case when direct.claim then 1 else 0 end, ?, ? from kept cross join direct
       on conflict (document_id) do update set status = 'QUEUED', updated_at = excluded.updated_at where analyses.status in ('PENDING', 'QUEUED', 'RUNNING')
       returning document_id
     ),
     queued as (
       insert into analysis_queue (document_id, job_id, tenant_id, priority, tag, urgency, event, lease_token, attempts, available_at, enqueued_at)
       select i.document_id, i.job_id, ?, i.priority, base.tag + i.n * ?::float8, ?::timestamptz + i.priority * ${ms(settings.priorityStepMs)}, i.event,
         case when direct.claim then gen_random_uuid()::text end, case when direct.claim then 1 else 0 end,
         case when direct.claim then now() + ${ms(settings.leaseMs)} else ? end, ?
       from kept i join analysis using (document_id) cross join base cross join direct
       on conflict (document_id) do nothing
       returning document_id, lease_token
     )
     select document_id, lease_token, null as cancelled_job from queued
     union all select null, null, job_id from tombstones`,
    [
      mine.map((e) => e.data.documentId),
      mine.map((e) => e.data.jobId),
      mine.map((e) => e.data.title),
      priority,
      mine.map((e) => JSON.stringify(e)),
      tenantId,
      tenantId,
      directSlots,
      tenantId,
      now,
      now,
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
  // The head of the line names the tenant whose turn it is; that tenant's most urgent document
  // takes the turn (the head itself, unless its tenant has more urgent work waiting) and the two
  // swap tags. One statement: the pick, its lease, the swap and the analysis going RUNNING.
  const pick =
    settings.order === 'fair'
      ? `head as (
           select document_id, tenant_id, tag from analysis_queue where available_at <= now() ${capped}
           order by tag, enqueued_at, document_id limit 1 for update skip locked
         ),
         pick as (
           select q.document_id, head.document_id as head_id, head.tag as head_tag, q.tag as own_tag
           from head cross join lateral (
             select document_id, tag from analysis_queue q
             where q.tenant_id = head.tenant_id and q.available_at <= now()
             order by q.urgency, q.tag, q.document_id limit 1 for update skip locked
           ) q
         )`
      : `pick as (
           select document_id, document_id as head_id, tag as head_tag, tag as own_tag from analysis_queue
           where available_at <= now() ${capped} order by enqueued_at, document_id limit 1 for update skip locked
         )`;
  // (PostgreSQL runs every data-modifying CTE whether or not the final select reads it.)
  const [claimed] = await queryRows<{ document_id: string; job_id: string; tenant_id: string; event: string; attempts: number }>(
    em,
    `with ${pick},
     claimed as (
       update analysis_queue q set tag = pick.head_tag, lease_token = ?, attempts = q.attempts + 1, available_at = now() + ${ms(settings.leaseMs)}
       from pick where q.document_id = pick.document_id
       returning q.document_id, q.job_id, q.tenant_id, q.event, q.attempts
     ),
     moved as (update analysis_queue q set tag = pick.own_tag from pick where q.document_id = pick.head_id and pick.head_id <> pick.document_id),
     analysis as (update analyses a set status = 'RUNNING', attempts = claimed.attempts, updated_at = now() from claimed where a.document_id = claimed.document_id)
     select * from claimed`,
    [leaseToken],
  );
  if (!claimed) return undefined;
  const event = parse(claimed.event) as UploadEvent;
  return { documentId: claimed.document_id, jobId: claimed.job_id, tenantId: claimed.tenant_id, event, attempt: claimed.attempts, leaseToken };
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
