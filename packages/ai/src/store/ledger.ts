import { queryRows, queryRun, type Database } from '@tributary/core/db';
import { autocommit } from './autocommit.ts';

/** Tokens held for one call, to be settled with what it actually spent. */
export interface Reservation {
  readonly tenantId: string;
  /** The UTC day charged (`YYYY-MM-DD`): the reservation's, even if the call ends after midnight. */
  readonly day: string;
  readonly tokens: number;
}

/** The UTC day of a date, `YYYY-MM-DD`. */
export const utcDay = (date: Date): string => date.toISOString().slice(0, 10);

/**
 * The per-tenant, per-UTC-day token ledger (`ai_token_ledger`). A call first {@link reserve}s its
 * estimate, then {@link settle}s with its actual usage. Reservation is one atomic statement, so
 * workers racing on the last tokens cannot both pass: at most the winner's actual usage beyond
 * its estimate can exceed the limit.
 */
export class TokenLedger {
  constructor(
    private readonly db: Database,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /**
   * Reserves `tokens` for `tenantId` today if `used + reserved + tokens <= limit`.
   * @returns the reservation, or `null` when the budget cannot cover it.
   */
  async reserve(tenantId: string, tokens: number, limit: number): Promise<Reservation | null> {
    const day = utcDay(this.now());
    // The conflict branch re-checks the limit against the row as locked by this statement, so the
    // check and the increment are one step; a refused estimate leaves the row untouched.
    // Bind parameters are typed by their context; where there is none (a select list, a
    // comparison of two of them) the cast says what they are, not text.
    const rows = await queryRows(
      autocommit(this.db),
      `insert into ai_token_ledger as l (tenant_id, day, used, reserved, updated_at)
       select ?::text, ?::date, 0, ?::bigint, now() where ?::bigint <= ?::bigint
       on conflict (tenant_id, day) do update
         set reserved = l.reserved + excluded.reserved, updated_at = now()
         where l.used + l.reserved + excluded.reserved <= ?
       returning 1 as ok`,
      [tenantId, day, tokens, tokens, limit, limit],
    );
    return rows.length > 0 ? { tenantId, day, tokens } : null;
  }

  /** Releases a reservation and records the tokens the call really spent (0 if it failed unbilled). */
  async settle(reservation: Reservation, usedTokens: number): Promise<void> {
    await queryRun(
      autocommit(this.db),
      `update ai_token_ledger set reserved = greatest(reserved - ?, 0), used = used + ?, updated_at = now()
       where tenant_id = ? and day = ?::date`,
      [reservation.tokens, usedTokens, reservation.tenantId, reservation.day],
    );
  }

  /** What `tenantId` has spent and holds on a UTC day (default today). */
  async usage(tenantId: string, day: string = utcDay(this.now())): Promise<{ used: number; reserved: number }> {
    const rows = await queryRows<{ used: string; reserved: string }>(
      autocommit(this.db),
      'select used, reserved from ai_token_ledger where tenant_id = ? and day = ?::date',
      [tenantId, day],
    );
    const row = rows[0];
    return { used: Number(row?.used ?? 0), reserved: Number(row?.reserved ?? 0) };
  }
}
