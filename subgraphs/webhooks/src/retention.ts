import { queryRun, type Database } from '@tributary/core/db';

/** How long a settled delivery (DELIVERED or FAILED) is kept, days (`WEBHOOK_DELIVERY_RETENTION_DAYS`). Default 30. */
export const DEFAULT_DELIVERY_RETENTION_DAYS = 30;

/** Rows one prune statement deletes at most: short statements, no long lock on the table. */
const BATCH = 10_000;

/**
 * Delete deliveries settled (DELIVERED or FAILED) more than `retentionDays` ago, `batch` rows per
 * statement, each its own transaction; returns how many. A PENDING delivery is never deleted: its
 * retries (about 24 h by default) are still to come. What goes with a row: its line in
 * `webhookDeliveries`, and a replay of its dead-lettered `webhook.delivery` (the sender acks an
 * event whose delivery is gone with no POST), and the per-(webhook, job, event) uniqueness: a job
 * announced again after that (not a redelivery, which the inbox drops) would be delivered again.
 */
export async function pruneDeliveries(db: Database, retentionDays = DEFAULT_DELIVERY_RETENTION_DAYS, batch = BATCH): Promise<number> {
  if (!Number.isInteger(batch) || batch < 1) throw new RangeError(`batch must be a positive integer, got ${batch}`);
  let deleted = 0;
  for (;;) {
    const n = await queryRun(
      db.fork(),
      `delete from webhook_deliveries where ctid = any(array(
         select ctid from webhook_deliveries where status <> 'PENDING' and updated_at < now() - make_interval(days => ?) limit ${batch}))`,
      [retentionDays],
    );
    deleted += n;
    if (n < batch) return deleted;
  }
}
