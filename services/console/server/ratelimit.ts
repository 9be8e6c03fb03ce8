// A token bucket per caller (session, bearer token or client address): up to
// `burst` calls at once, refilled at `perSecond`. take() answers 0 when the
// call may go ahead, else the milliseconds until it could.
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private lastSweep: number;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number,
    private readonly maxKeys = 200_000,
  ) {
    this.lastSweep = now();
  }

  get enabled(): boolean {
    return this.perSecond > 0;
  }

  take(key: string): number {
    if (this.perSecond <= 0) return 0;
    const t = this.now();
    if (t - this.lastSweep > 60_000 || this.buckets.size > this.maxKeys) this.sweep(t);
    let b = this.buckets.get(key);
    if (!b) {
      b = { tokens: this.burst, at: t };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.perSecond);
      b.at = t;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - b.tokens) / this.perSecond) * 1000);
  }

  // Forgets buckets that are full again (they behave like new ones).
  private sweep(t: number): void {
    this.lastSweep = t;
    for (const [k, b] of this.buckets) {
      if (b.tokens + ((t - b.at) / 1000) * this.perSecond >= this.burst) this.buckets.delete(k);
    }
    if (this.buckets.size > this.maxKeys) this.buckets.clear(); // under attack: start over rather than grow
  }
}
