// Sessions of signed-in people, kept in this process's memory: the LabShare
// access and refresh tokens never leave the gateway; the browser holds only
// a random session id (256 bits) in an httpOnly cookie. A restart of the
// gateway signs everybody out of the console (not out of the provider, and
// the refresh tokens it held expire on their own at the identity service).
// Running several gateway processes needs sticky sessions or a shared store;
// see README.md.
import crypto from 'node:crypto';

export interface SessionUser {
  name: string;          // "users/li-wei"
  displayName: string;
  organization: string;  // "organizations/nanocraft"
  roles: string[];       // ["LAB_USER", ...]
}

export interface Tokens {
  accessToken: string;
  accessExpiresAt: number;   // this machine's clock, ms
  refreshToken: string;
  refreshExpiresAt: number;  // this machine's clock, ms
  user: SessionUser;
}

export interface Session extends Tokens {
  id: string;
  csrfToken: string;
  createdAt: number;
  lastSeen: number;
  // The refresh in progress, shared by every call of this session that
  // needs a new access token (single flight).
  refreshing?: Promise<void> | undefined;
  ended: boolean;
  revoked?: boolean;   // RevokeToken sent (or the refresh token is known dead)
  refreshRetryAt?: number | undefined;  // a failed refresh is retried from then
  endCause?: string | undefined;        // why the identity service ended it
  signedInAtProvider?: boolean;          // through /auth/callback: sign-out ends the provider's session too
}

export function randomId(): string {
  return crypto.randomBytes(32).toString('base64url');
}

export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

export class SessionStore {
  private readonly byId = new Map<string, Session>();

  constructor(
    private readonly now: () => number,
    private readonly idleTimeoutMs: number,
    private readonly maxSessions: number,
    private readonly onEvict: (s: Session) => void,
  ) {}

  get size(): number {
    return this.byId.size;
  }

  create(tokens: Tokens): Session {
    // Full: the least recently used sessions go, from the head of the map
    // (iteration order is insertion order; touch() re-inserts), without
    // looking at the others. Expired ones are at the head too (idle), or go
    // at the periodic sweep.
    while (this.byId.size >= this.maxSessions) {
      const oldest = this.byId.values().next().value as Session | undefined;
      if (!oldest) break;
      this.end(oldest);
    }
    const t = this.now();
    const s: Session = { ...tokens, id: randomId(), csrfToken: randomId(), createdAt: t, lastSeen: t, ended: false };
    this.byId.set(s.id, s);
    return s;
  }

  // The live session of this id, or undefined (unknown, ended, idle too long,
  // refresh token expired). An expired one is removed here.
  lookup(id: string | undefined): { session?: Session; expired: boolean } {
    if (!id) return { expired: false };
    const s = this.byId.get(id);
    if (!s) return { expired: false };
    if (this.isExpired(s)) {
      this.end(s);
      return { expired: true };
    }
    return { session: s, expired: false };
  }

  touch(s: Session): void {
    s.lastSeen = this.now();
    this.byId.delete(s.id);
    this.byId.set(s.id, s);
  }

  isExpired(s: Session): boolean {
    const t = this.now();
    return s.ended || t >= s.refreshExpiresAt || t - s.lastSeen >= this.idleTimeoutMs;
  }

  // Ends the session here; the caller revokes its refresh token if it can.
  end(s: Session): void {
    if (!s.ended) {
      s.ended = true;
      this.byId.delete(s.id);
      this.onEvict(s);
    }
  }

  sweep(): number {
    let n = 0;
    for (const s of [...this.byId.values()]) {
      if (this.isExpired(s)) {
        this.end(s);
        ++n;
      }
    }
    return n;
  }

  all(): Session[] {
    return [...this.byId.values()];
  }
}

// Sign-ins under way: from /auth/login to /auth/callback, bound to the
// browser by a cookie holding the pending sign-in's id. Short-lived and
// capped, so that nobody fills the memory by starting sign-ins.
export interface PendingLogin {
  id: string;
  state: string;
  nonce: string;
  codeVerifier: string;
  returnTo: string;
  createdAt: number;
  address: string;
  previousSession?: string | undefined;  // the session id this browser had at /auth/login
}

export class PendingLogins {
  private readonly byId = new Map<string, PendingLogin>();
  private readonly byAddress = new Map<string, Set<string>>();  // ids, oldest first
  constructor(
    private readonly now: () => number,
    readonly ttlMs = 10 * 60_000,
    private readonly max = 10_000,
    // A client address holds at most this many: one client cannot push
    // everybody else's sign-ins out; its own oldest goes instead.
    readonly maxPerAddress = 20,
  ) {}

  get size(): number {
    return this.byId.size;
  }

  add(p: Omit<PendingLogin, 'id' | 'createdAt'>): PendingLogin {
    const t = this.now();
    // Expired ones are at the head (insertion order).
    for (const q of this.byId.values()) {
      if (t - q.createdAt < this.ttlMs) break;
      this.remove(q);
    }
    const mine = this.byAddress.get(p.address);
    if (mine && mine.size >= this.maxPerAddress) {
      const oldest = this.byId.get(mine.values().next().value as string);
      if (oldest) this.remove(oldest);
    }
    if (this.byId.size >= this.max) {
      const oldest = this.byId.values().next().value as PendingLogin | undefined;
      if (oldest) this.remove(oldest);
    }
    const full: PendingLogin = { ...p, id: randomId(), createdAt: t };
    this.byId.set(full.id, full);
    const ids = this.byAddress.get(p.address) ?? new Set<string>();
    ids.add(full.id);
    this.byAddress.set(p.address, ids);
    return full;
  }

  private remove(p: PendingLogin): void {
    if (!this.byId.delete(p.id)) return;
    const ids = this.byAddress.get(p.address);
    ids?.delete(p.id);
    if (ids && ids.size === 0) this.byAddress.delete(p.address);
  }

  // Takes the pending sign-in out (a code is exchanged once).
  take(id: string | undefined): PendingLogin | undefined {
    if (!id) return undefined;
    const p = this.byId.get(id);
    if (!p) return undefined;
    this.remove(p);
    return this.now() - p.createdAt < this.ttlMs ? p : undefined;
  }

  // Of `ids` (one browser's sign-ins), those still pending (an expired one
  // is removed here).
  live(ids: readonly string[]): string[] {
    const t = this.now();
    return ids.filter((id) => {
      const p = this.byId.get(id);
      if (!p) return false;
      if (t - p.createdAt < this.ttlMs) return true;
      this.remove(p);
      return false;
    });
  }

  // Of `ids` (one browser's sign-ins, several tabs), takes out the pending
  // one whose state is `state` (the provider's answer names it), leaving
  // the others pending. `left`: the ids still pending besides it.
  takeByState(ids: readonly string[], state: string | null): { pending?: PendingLogin; left: string[] } {
    let pending: PendingLogin | undefined;
    const left: string[] = [];
    for (const id of this.live(ids)) {
      const p = this.byId.get(id)!;
      if (!pending && state && sameSecret(p.state, state)) {
        pending = p;
        this.remove(p);
      } else {
        left.push(id);
      }
    }
    return pending ? { pending, left } : { left };
  }
}

// The sign-in cookie holds the pending sign-ins of one browser, newest
// last, at most this many (sign-in started in several tabs): ids of 43
// characters joined by "." (a cookie octet that base64url does not use).
export const MAX_PENDING_PER_BROWSER = 5;
const PENDING_ID = /^[A-Za-z0-9_-]{1,64}$/;

export function pendingIds(cookie: string | undefined): string[] {
  if (!cookie) return [];
  const ids = [...new Set(cookie.split('.').filter((x) => PENDING_ID.test(x)))];
  return ids.slice(-MAX_PENDING_PER_BROWSER);
}

export function pendingCookieValue(ids: readonly string[]): string {
  return ids.slice(-MAX_PENDING_PER_BROWSER).join('.');
}
