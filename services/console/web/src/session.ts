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

export async function loadSession(): Promise<SessionInfo> {
  const r = await fetch('/auth/session', { credentials: 'same-origin', headers: { accept: 'application/json' } });
  const info: SessionInfo = r.ok ? await r.json() : { signedIn: false, roles: [] };
  session.set(info);
  return info;
}

export function hasRole(...roles: Role[]): boolean {
  return roles.some((r) => session.value.roles.includes(r));
}

export function signIn(): void {
  location.assign(`/auth/login?return_to=${encodeURIComponent(location.hash || '#/')}`);
}

export async function signOut(): Promise<void> {
  const res = await fetch('/auth/logout', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'x-csrf-token': session.value.csrfToken ?? '' },
  });
  // {"redirect": URL|null}: the provider's sign-out page (it ends the
  // provider's session too, then comes back here), or nothing to follow.
  let to = '/';
  try {
    const body = (await res.json()) as { redirect?: unknown };
    if (typeof body.redirect === 'string' && /^https?:\/\//.test(body.redirect)) to = body.redirect;
  } catch {
    // not JSON (an error page): stay on the console
  }
  session.set({ signedIn: false, roles: [] });
  location.assign(to);
}
