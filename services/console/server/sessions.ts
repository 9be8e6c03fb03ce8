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
    if (this.byId.size >= this.maxSessions) this.sweep();
    if (this.byId.size >= this.maxSessions) {
      // Still full of live sessions: the least recently used one goes (Map
      // iteration order is insertion order; touch() re-inserts).
      const oldest = this.byId.values().next().value as Session | undefined;
      if (oldest) this.end(oldest);
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
}

export class PendingLogins {
  private readonly byId = new Map<string, PendingLogin>();
  constructor(
    private readonly now: () => number,
    readonly ttlMs = 10 * 60_000,
    private readonly max = 10_000,
  ) {}

  add(p: Omit<PendingLogin, 'id' | 'createdAt'>): PendingLogin {
    const t = this.now();
    for (const [id, q] of this.byId) {
      if (t - q.createdAt < this.ttlMs && this.byId.size < this.max) break;
      this.byId.delete(id);
    }
    const full: PendingLogin = { ...p, id: randomId(), createdAt: t };
    this.byId.set(full.id, full);
    return full;
  }

  // Takes the pending sign-in out (a code is exchanged once).
  take(id: string | undefined): PendingLogin | undefined {
    if (!id) return undefined;
    const p = this.byId.get(id);
    if (!p) return undefined;
    this.byId.delete(id);
    return this.now() - p.createdAt < this.ttlMs ? p : undefined;
  }
}
