/** Longest a follower waits for the miss it joined before it asks the subgraphs itself. */
const FLIGHT_TIMEOUT_MS = 10_000;

/** A miss being answered: followers of the same query share its result. */
export interface Flight {
  /** The invalidation sequence it began at: its answer is shared only if no invalidation since touched it. */
  since: number;
  result: Promise<Record<string, unknown> | undefined>;
  land(data: Record<string, unknown> | undefined): void;
}

/** Single-flight: identical misses wait for the first one instead of all asking the subgraphs. */
export class Flights {
  private readonly flights = new Map<string, Flight>();

  /** The miss of `key` on its way, if any. */
  get(key: string): Flight | undefined {
    return this.flights.get(key);
  }

  /** Register a miss on its way to the subgraphs, begun at invalidation sequence `since`. */
  takeOff(key: string, since: number): Flight {
    let settle!: (data: Record<string, unknown> | undefined) => void;
    const result = new Promise<Record<string, unknown> | undefined>((resolve) => (settle = resolve));
    // A leader that never answers (a hook that threw) must not hold its followers forever.
    const timer = setTimeout(() => flight.land(undefined), FLIGHT_TIMEOUT_MS);
    timer.unref();
    const flight: Flight = {
      since,
      result,
      land: (data) => {
        clearTimeout(timer);
        settle(data);
        if (this.flights.get(key) === flight) this.flights.delete(key);
      },
    };
    this.flights.set(key, flight);
    return flight;
  }
}
