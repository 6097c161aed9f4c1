import type { EventType } from '@tributary/contracts';
import type { Logger } from 'pino';
import type { Database } from '../db/index.ts';
import type { EventConsumerHandler } from '../events/consumer-options.ts';
import type { EventLog } from '../events/log.ts';

/**
 * What of a service is a pure projection of events, so can be rebuilt from the log
 * (`ServiceDefinition.views`).
 */
export interface ViewsDefinition {
  /** Tables (in `public`) whose every row comes from the consumers below: emptied and refilled by a rebuild. */
  tables: readonly string[];
  /** The consumers (by name) whose handlers fill them. */
  consumers: readonly string[];
  /**
   * Event types the fold publishes only to announce the view's new state (insights'
   * `insights.updated`): held back during a rebuild, since replaying history must not announce
   * every past state again; the last one of each entity (type, subject, tenant) is published with
   * the swap, so subscribers and the gateway's cache learn the rebuilt state. Any other publish
   * fails the rebuild with `VIEWS_PUBLISH_REFUSED`. Default none.
   */
  announcements?: readonly EventType[];
}

/** A consumer a rebuild replays the log into: its name, the types it takes, its handler. */
export type ViewConsumer = { name: string; types: readonly string[] } & EventConsumerHandler;

/** Where a rebuild is, for a progress display: `done` of `total` log entries (offsets) passed. */
export interface RebuildProgress {
  phase: 'replay' | 'catch-up' | 'swap' | 'done';
  done: number;
  total: number;
}

export interface RebuildOptions {
  /** The service (its inbox rows are `<service>.<consumer>`). */
  service: string;
  views: ViewsDefinition;
  /** The service's consumers; those named in `views.consumers` are replayed. A test may pass a changed fold here. */
  consumers: readonly ViewConsumer[];
  /** The service's own database, where the live views are. */
  db: Database;
  log: EventLog | undefined;
  logger: Logger;
  /** Rebuild from what the log keeps even when it no longer keeps its beginning. Default false. */
  acceptPartial?: boolean;
  /** Log entries folded per transaction. Default 500. */
  batchSize?: number;
  /** Stops the rebuild before the swap (the live tables stay as they are). */
  signal?: AbortSignal;
  onProgress?: (progress: RebuildProgress) => void;
}

export interface RebuildResult {
  /** Events folded into the new views (duplicates in the log counted once). */
  applied: number;
  /** Events skipped as the live consumer would dead-letter them (a contract violation, an unrecoverable error). */
  skipped: number;
  /** Announcements the fold published and the rebuild dropped (a later one of the same entity followed). */
  announcementsDropped: number;
  /** Announcements published with the swap: the last of each entity. */
  announced: number;
  /** The offset of the last log entry the new views contain. */
  lastOffset: number | undefined;
  /** Whether the log had already dropped its oldest entries (`acceptPartial`). */
  partial: boolean;
}
