// What the gateway holds for RPC bodies, so that half-sent bodies cannot
// fill its memory before anybody is identified (the per-address rate limit
// counts requests, not bytes, and a body is read whole before Connect sees
// it: edge.ts):
//
//   - the bytes of RPC request bodies held at once, all callers together
//     (--max_body_bytes_in_flight): counted as they are read, given back
//     when the call ends (the answer sent or the connection gone; until
//     then the body, or what was decoded from it, is still referenced);
//   - per client address (http-util.ts addressKey), the RPCs whose body is
//     still arriving (--max_pending_bodies_per_address): from the request's
//     headers until its body has been read to its end. A body that arrives
//     at once costs nothing here, so many people behind one NAT do not
//     notice; a client that opens streams and sends slowly is stopped;
//   - a deadline for the whole body (--body_read_timeout), from the
//     request's headers: neither HTTP/2 PINGs nor a trickle of bytes move it.
//
// A refusal is the gateway's RESOURCE_EXHAUSTED RATE_LIMITED (RetryInfo,
// Retry-After; metadata "limit" names which), in the caller's protocol, and
// the deadline is DEADLINE_EXCEEDED INVALID_REQUEST (edge.ts answers them).
import { Code, type ConnectError } from '@connectrpc/connect';
import { consoleError, rateLimited } from './errors.js';

// What the edge reads a request body through (edge.ts metered).
export interface BodyMeter {
  // Counts `bytes` more of this body; the refusal when they do not fit.
  take(bytes: number): ConnectError | undefined;
  // Rejects with the refusal once the body's deadline passed (never
  // resolves). A reader waits for the next chunk no longer than this.
  readonly expired: Promise<never>;
  // The body was read to its end: it no longer counts for its address.
  done(): void;
}

// The delay a refused caller is asked to wait.
export const IN_FLIGHT_RETRY_MS = 1000;

export function pendingBodiesRefusal(limit: number): ConnectError {
  return rateLimited(IN_FLIGHT_RETRY_MS, { limit: 'pending_bodies_per_address' },
    `too many requests from your address are still sending their body (at most ${limit}); finish those, then retry after the delay given`);
}

export function bodyBytesRefusal(): ConnectError {
  return rateLimited(IN_FLIGHT_RETRY_MS, { limit: 'body_bytes_in_flight' },
    'the gateway holds as many request bodies as it takes at once; retry after the delay given');
}

export function bodyTimeout(ms: number): ConnectError {
  return consoleError(Code.DeadlineExceeded, 'INVALID_REQUEST',
    `the request body did not arrive within ${ms} ms of its headers; send the body at once`, { timeout_ms: String(ms) });
}

export class BodyBudget {
  private used = 0;
  private readonly pending = new Map<string, number>();

  constructor(
    readonly maxBytes: number,
    readonly maxPendingPerAddress: number,
    readonly readTimeoutMs: number,
  ) {}

  // Bytes of bodies held now.
  get bytes(): number {
    return this.used;
  }

  // RPCs of `address` whose body is still arriving.
  pendingOf(address: string): number {
    return this.pending.get(address) ?? 0;
  }

  // A new RPC of `address`, before its body is read: its admission, or the
  // refusal when the address has its most bodies arriving already. The
  // caller ends the admission when the call ends (end()).
  admit(address: string): Admission | ConnectError {
    const n = this.pendingOf(address);
    if (n >= this.maxPendingPerAddress) return pendingBodiesRefusal(this.maxPendingPerAddress);
    this.pending.set(address, n + 1);
    return new Admission(this, address);
  }

  /** @internal */ reserve(bytes: number): boolean {
    if (this.used + bytes > this.maxBytes) return false;
    this.used += bytes;
    return true;
  }

  /** @internal */ giveBack(bytes: number): void {
    this.used -= bytes;
  }

  /** @internal */ arrived(address: string): void {
    const n = this.pendingOf(address) - 1;
    if (n > 0) this.pending.set(address, n);
    else this.pending.delete(address);
  }
}

export class Admission implements BodyMeter {
  private held = 0;
  private pendingBody = true;
  private ended = false;
  private timer: NodeJS.Timeout | undefined;
  private expire!: (err: ConnectError) => void;
  readonly expired: Promise<never>;

  constructor(private readonly budget: BodyBudget, private readonly address: string) {
    this.expired = new Promise<never>((_, reject) => {
      this.expire = reject;
    });
    this.expired.catch(() => {}); // nobody may be reading when it passes
    this.timer = setTimeout(() => this.expire(bodyTimeout(budget.readTimeoutMs)), budget.readTimeoutMs);
    this.timer.unref();
  }

  take(bytes: number): ConnectError | undefined {
    if (this.ended) return undefined;
    if (!this.budget.reserve(bytes)) return bodyBytesRefusal();
    this.held += bytes;
    return undefined;
  }

  done(): void {
    clearTimeout(this.timer);
    if (this.pendingBody) {
      this.pendingBody = false;
      this.budget.arrived(this.address);
    }
  }

  // The call ended: its bytes are given back (and its place, if its body
  // never arrived).
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.done();
    this.budget.giveBack(this.held);
    this.held = 0;
  }
}
