import { TributaryError } from '../errors.ts';

/**
 * Error codes of a view rebuild (`rebuildViews`, `pnpm views:rebuild`). Each one leaves the live
 * tables as they were: a rebuild changes them only in its final transaction.
 */
export const ViewsErrorCode = {
  /** The service declares no `views` (or names a consumer it does not define). */
  VIEWS_NOT_DECLARED: 'VIEWS_NOT_DECLARED',
  /** The transport keeps no event log (`Transport.log` absent): there is no history to rebuild from. */
  VIEWS_LOG_OFF: 'VIEWS_LOG_OFF',
  /** The log no longer keeps its oldest events: the rebuilt views would cover only what it keeps. */
  VIEWS_PARTIAL_HISTORY: 'VIEWS_PARTIAL_HISTORY',
  /** A fold published an event that is not a declared announcement: a replay must not emit new facts. */
  VIEWS_PUBLISH_REFUSED: 'VIEWS_PUBLISH_REFUSED',
  /** A consumer whose handler cannot fold a replay (a staged handler does slow outside work). */
  VIEWS_HANDLER_UNSUPPORTED: 'VIEWS_HANDLER_UNSUPPORTED',
  /** The fold failed on an event in a way a retry could fix: nothing was swapped. */
  VIEWS_FOLD_FAILED: 'VIEWS_FOLD_FAILED',
  /** The live consumer applied an event the log did not give the rebuild before the swap. */
  VIEWS_SWAP_INCOMPLETE: 'VIEWS_SWAP_INCOMPLETE',
  /** Interrupted before the swap: the live tables are untouched, a rerun starts over. */
  VIEWS_REBUILD_ABORTED: 'VIEWS_REBUILD_ABORTED',
  /** Embedded mode on PGlite: its data directories may be open in pnpm dev (the CLI needs --embedded, with pnpm dev stopped). */
  VIEWS_EMBEDDED_IN_USE: 'VIEWS_EMBEDDED_IN_USE',
  /** Another rebuild of the same service holds its lock. */
  VIEWS_REBUILD_RUNNING: 'VIEWS_REBUILD_RUNNING',
} as const;
export type ViewsErrorCode = (typeof ViewsErrorCode)[keyof typeof ViewsErrorCode];

export function viewsError(code: ViewsErrorCode, message: string, cause?: unknown): TributaryError {
  return new TributaryError(code, message, cause === undefined ? undefined : { cause });
}
