// Sessions of signed-in people, kept in this process's memory: the LabShare
// access and refresh tokens never leave the gateway; the browser holds only
// a random session id (256 bits) in an httpOnly cookie. A restart of the
// gateway signs everybody out of the console (not out of the provider, and
// the refresh tokens it held expire on their own at the identity service).
// Running several gateway processes needs sticky sessions or a shared store;
// see README.md. The table is bounded (--max_sessions, --max_sessions_per_user)
// without ever ending another person's live session to make room.
// Pending sign-ins are not kept here at all: SignInCookies below.
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

function leastRecentlyUsed(sessions: Iterable<Session>): Session {
  let lru: Session | undefined;
  for (const s of sessions) if (!lru || s.lastSeen < lru.lastSeen) lru = s;
  return lru!;
}

export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

// A sign-in refused because the table is full of other people's live
// sessions (--max_sessions): /auth/callback answers SESSIONS_FULL.
export class SessionsFull extends Error {}

export class SessionStore {
  private readonly byId = new Map<string, Session>();
  // Each person's sessions (SessionUser.name at creation), for the cap per person.
  private readonly byUser = new Map<string, Set<Session>>();
  private readonly userOf = new WeakMap<Session, string>();
  private lastFullSweep = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly now: () => number,
    private readonly idleTimeoutMs: number,
    private readonly maxSessions: number,
    private readonly onEvict: (s: Session) => void,
    private readonly maxPerUser = 10,
  ) {}

  get size(): number {
    return this.byId.size;
  }

  // A new session of tokens.user. A person has at most maxPerUser: past
  // it their own least recently used one ends. When the table is full,
  // expired sessions go first; if every other one is live, the person's own
  // least recently used one goes if they have one, and otherwise the sign-in
  // is refused (SessionsFull): nobody else's live session is ended for it
  // (so that one person signing in again and again cannot sign everybody
  // else out).
  create(tokens: Tokens): Session {
    const user = tokens.user.name;
    const mine = this.byUser.get(user);
    while (mine && mine.size >= this.maxPerUser) this.end(leastRecentlyUsed(mine));
    if (this.byId.size >= this.maxSessions) this.makeRoom(user);
    const t = this.now();
    const s: Session = { ...tokens, id: randomId(), csrfToken: randomId(), createdAt: t, lastSeen: t, ended: false };
    this.byId.set(s.id, s);
    const set = this.byUser.get(user) ?? new Set<Session>();
    set.add(s);
    this.byUser.set(user, set);
    this.userOf.set(s, user);
    return s;
  }

  private makeRoom(user: string): void {
    // The least recently used are at the head of the map (iteration order
    // is insertion order; touch() re-inserts): the idle ones are there.
    for (const s of this.byId.values()) {
      if (!this.isExpired(s)) break;
      this.end(s);
    }
    if (this.byId.size < this.maxSessions) return;
    // Sessions past their refresh token's end may be anywhere: one sweep of
    // the whole table, at most once a second, so that sign-ins refused one
    // after another do not each scan it.
    const t = this.now();
    if (t - this.lastFullSweep >= 1000) {
      this.lastFullSweep = t;
      this.sweep();
      if (this.byId.size < this.maxSessions) return;
    }
    const mine = this.byUser.get(user);
    if (mine && mine.size > 0) {
      this.end(leastRecentlyUsed(mine));
      return;
    }
    throw new SessionsFull(`all ${this.maxSessions} sessions are live`);
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

  // Ends the session here; the caller revokes its refresh token if it can
  // (onEvict revokes it unless it is marked revoked already).
  end(s: Session): void {
    if (!s.ended) {
      s.ended = true;
      this.byId.delete(s.id);
      const user = this.userOf.get(s) ?? s.user.name;
      const mine = this.byUser.get(user);
      mine?.delete(s);
      if (mine && mine.size === 0) this.byUser.delete(user);
      this.onEvict(s);
    }
  }

  // The sessions of one person (SessionUser.name).
  sessionsOf(user: string): Session[] {
    return [...(this.byUser.get(user) ?? [])];
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

// Sign-ins under way, from /auth/login to /auth/callback, are kept in the
// browser, not here: the cookie __Host-labshare_signin holds each one
// sealed with AES-256-GCM under a key made at start (random, this process's
// only), so that no number of sign-ins started from any number of addresses
// takes memory here or pushes out anybody else's. A sealed sign-in is
//   createdAt (8 bytes, ms, clear) | IV (12) | ciphertext | tag (16)
// in base64url; the ciphertext holds the nonce, the PKCE verifier, the page
// to return to and the session the browser had, and the additional data
// authenticated with it are createdAt and the state sent to the provider:
// it opens only for the provider's answer that carries that state, only
// here, only unchanged, and only within the sign-in's lifetime. The cookie
// holds the last few sign-ins of the browser (several tabs), joined by "."
// (a cookie octet that base64url does not use).
export interface PendingLogin {
  state: string;
  nonce: string;
  codeVerifier: string;
  returnTo: string;
  createdAt: number;
  previousSession?: string | undefined;  // the session id this browser had at /auth/login
}

// At most this many sign-ins per browser, and the cookie at most this long
// (browsers keep 4096 bytes per cookie, name and attributes included): the
// oldest go first.
export const MAX_PENDING_PER_BROWSER = 5;
export const MAX_SIGNIN_COOKIE = 3600;
const SEALED = /^[A-Za-z0-9_-]{60,1400}$/;
const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

export class SignInCookies {
  private readonly key = crypto.randomBytes(32);

  constructor(private readonly now: () => number, readonly ttlMs = 10 * 60_000) {}

  private additionalData(createdAt: Buffer, state: string): Buffer {
    return Buffer.concat([Buffer.from('labshare-signin-v1\0'), createdAt, Buffer.from(state)]);
  }

  seal(p: PendingLogin): string {
    const createdAt = Buffer.alloc(8);
    createdAt.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(p.createdAt))));
    const iv = crypto.randomBytes(12);
    const cipher = crypto.createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(this.additionalData(createdAt, p.state));
    const previous = p.previousSession && SESSION_ID.test(p.previousSession) ? p.previousSession : '';
    const plain = Buffer.from(JSON.stringify([p.nonce, p.codeVerifier, p.returnTo, previous]));
    const sealed = Buffer.concat([cipher.update(plain), cipher.final()]);
    return Buffer.concat([createdAt, iv, sealed, cipher.getAuthTag()]).toString('base64url');
  }

  // When a sealed sign-in was started (as it says; checked when opened).
  createdAt(sealed: string): number | undefined {
    if (!SEALED.test(sealed)) return undefined;
    const b = Buffer.from(sealed, 'base64url');
    return b.length >= 8 + 12 + 16 + 2 ? Number(b.readBigUInt64BE(0)) : undefined;
  }

  // Whether it may still be pending (started within the lifetime).
  live(sealed: string): boolean {
    const t = this.createdAt(sealed);
    const now = this.now();
    return t !== undefined && t <= now && now - t < this.ttlMs;
  }

  // The pending sign-in sealed for `state`, or undefined: sealed for
  // another state, by another process, changed, or expired.
  open(sealed: string, state: string): PendingLogin | undefined {
    if (!state || !this.live(sealed)) return undefined;
    const b = Buffer.from(sealed, 'base64url');
    try {
      const decipher = crypto.createDecipheriv('aes-256-gcm', this.key, b.subarray(8, 20));
      decipher.setAAD(this.additionalData(b.subarray(0, 8), state));
      decipher.setAuthTag(b.subarray(b.length - 16));
      const plain = Buffer.concat([decipher.update(b.subarray(20, b.length - 16)), decipher.final()]);
      const v: unknown = JSON.parse(plain.toString('utf8'));
      if (!Array.isArray(v) || v.length !== 4 || !v.every((x) => typeof x === 'string')) return undefined;
      const [nonce, codeVerifier, returnTo, previous] = v as string[];
      return {
        state, nonce: nonce!, codeVerifier: codeVerifier!, returnTo: returnTo!, createdAt: Number(b.readBigUInt64BE(0)),
        ...(previous ? { previousSession: previous } : {}),
      };
    } catch {
      return undefined;
    }
  }

  // The sealed sign-ins of a cookie that may still be pending, oldest first.
  pending(cookie: string | undefined): string[] {
    if (!cookie) return [];
    return [...new Set(cookie.split('.'))].filter((x) => this.live(x));
  }

  // The cookie value for these sealed sign-ins (oldest first): the newest
  // that fit (MAX_PENDING_PER_BROWSER, MAX_SIGNIN_COOKIE).
  value(sealed: readonly string[]): string {
    const kept = sealed.slice(-MAX_PENDING_PER_BROWSER);
    while (kept.length > 1 && kept.join('.').length > MAX_SIGNIN_COOKIE) kept.shift();
    return kept.join('.');
  }
}
