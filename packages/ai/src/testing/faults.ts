/** A fault the server plays instead of (or before) its normal reply. */
export type Fault =
  /** An error status with OpenAI's error body; `retryAfter` becomes the `Retry-After` header. */
  | { type: 'status'; status: number; retryAfter?: string; message?: string }
  /** The normal reply, `ms` late. */
  | { type: 'delay'; ms: number }
  /** A 200 whose message content is not JSON. */
  | { type: 'invalid-json' }
  /** A 200 whose content is JSON that breaks the analysis schema. */
  | { type: 'schema-violation' }
  /** The connection is destroyed without a reply. */
  | { type: 'disconnect' };

export type Endpoint = 'chat' | 'embeddings';

interface Rule {
  fault: Fault;
  remaining: number;
  endpoint: Endpoint | undefined;
}

/** The injected faults, used in the order added; a used-up rule is dropped. */
export class FaultRules {
  private rules: Rule[] = [];

  add(fault: Fault, times: number, endpoint: Endpoint | undefined): void {
    this.rules.push({ fault, remaining: times, endpoint });
  }

  clear(): void {
    this.rules = [];
  }

  /** The fault to play on this request to `endpoint`, if any. */
  take(endpoint: Endpoint): Fault | undefined {
    const rule = this.rules.find((r) => r.endpoint === undefined || r.endpoint === endpoint);
    if (!rule) return undefined;
    rule.remaining -= 1;
    if (rule.remaining <= 0) this.rules = this.rules.filter((r) => r !== rule);
    return rule.fault;
  }
}
