// Who is signed in, as the gateway tells it (GET /auth/session). The token
// itself never reaches the page: it stays in the gateway's session, behind
// an httpOnly cookie. Every state change sends the session's CSRF token.
import { signal } from './signal';

export type Role =
  | 'LAB_USER' | 'FACILITY_STAFF' | 'MEMBER_BILLING_ADMIN' | 'CONSORTIUM_ADMIN' | 'AUDITOR';

export interface SessionInfo {
  signedIn: boolean;
  user?: string;          // "users/li-wei"
  displayName?: string;
  organization?: string;  // "organizations/nanocraft"
  roles: Role[];
  csrfToken?: string;
  expiresAt?: string;     // RFC 3339
}

export const session = signal<SessionInfo>({ signedIn: false, roles: [] });

let retry: ReturnType<typeof setTimeout> | undefined;

// The delay a Retry-After header asks for (seconds or an HTTP date), in ms:
// at least 1 s, at most 5 minutes; 5 s when it is missing or unreadable.
export function retryAfterMs(header: string | null, now = Date.now()): number {
  let ms = 5000;
  if (header && /^\d+$/.test(header.trim())) ms = Number(header.trim()) * 1000;
  else if (header && !Number.isNaN(Date.parse(header))) ms = Date.parse(header) - now;
  return Math.min(300_000, Math.max(1000, ms));
}

// Asks the gateway who is signed in. Only an answer says so: a refusal for
// now (429 rate limited, 503) or an error keeps the current state, and a
// 429/503 asks again after its Retry-After (one retry pending at a time).
export async function loadSession(): Promise<SessionInfo> {
  let r: Response;
  try {
    r = await fetch('/auth/session', { credentials: 'same-origin', headers: { accept: 'application/json' } });
  } catch {
    return session.value; // offline or the gateway away: nothing is known
  }
  if (!r.ok) {
    if ((r.status === 429 || r.status === 503) && retry === undefined) {
      retry = setTimeout(() => {
        retry = undefined;
        void loadSession();
      }, retryAfterMs(r.headers.get('retry-after')));
    }
    return session.value;
  }
  if (retry !== undefined) {
    clearTimeout(retry);
    retry = undefined;
  }
  const info = (await r.json()) as SessionInfo;
  session.set(info);
  return info;
}

export function hasRole(...roles: Role[]): boolean {
  return roles.some((r) => session.value.roles.includes(r));
}

// The gateway's return_to (server/auth.ts RETURN_TO): a route of the app.
const RETURN_TO = /^#\/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]{0,500}$/;

// Where sign-in brings the person back: the current route when the gateway
// takes it as return_to, else the start page (which is also where a failed
// sign-in's signin_error is shown: it is not carried back).
export function returnTo(hash: string): string {
  return RETURN_TO.test(hash) && !/[?&]signin_error=/.test(hash) ? hash : '#/';
}

export function signIn(): void {
  location.assign(`/auth/login?return_to=${encodeURIComponent(returnTo(location.hash))}`);
}

// A sign-out that did not happen: the gateway's answer (status 0: none).
export interface SignOutRefused {
  status: number;
  body: string;
}

// Signs out: only the gateway's 200 ends the session here (and opens the
// provider's sign-out page, or the console's root). Any other answer (403
// CSRF_TOKEN_INVALID, 429, 500...) or none at all leaves the state as it
// is, since the gateway's session lives on, and is returned for the shell
// to show (errors.ts explainHttp).
export async function signOut(): Promise<SignOutRefused | undefined> {
  let res: Response;
  try {
    res = await fetch('/auth/logout', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'x-csrf-token': session.value.csrfToken ?? '' },
    });
  } catch (err) {
    return { status: 0, body: err instanceof Error ? err.message : String(err) };
  }
  if (res.status !== 200) {
    const body = await res.text().catch(() => '');
    // A CSRF token refused is one this page no longer has right: the next
    // try takes the session's current one.
    if (res.status === 403) void loadSession();
    return { status: res.status, body };
  }
  // {"redirect": URL|null}: the provider's sign-out page (it ends the
  // provider's session too, then comes back here), or nothing to follow.
  let to = '/';
  try {
    const body = (await res.json()) as { redirect?: unknown };
    if (typeof body.redirect === 'string' && /^https?:\/\//.test(body.redirect)) to = body.redirect;
  } catch {
    // not JSON: signed out all the same; stay on the console
  }
  session.set({ signedIn: false, roles: [] });
  location.assign(to);
  return undefined;
}
