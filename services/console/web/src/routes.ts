// The console's screens. Each is loaded when first opened (charts and the
// calendar stay out of the first load). A screen module default-exports a
// Preact component taking the route's parameters.
import type { ComponentType } from 'preact';
import type { Role } from './session';
// --- admin ---
import './screens/admin/nav-messages';
// --- end admin ---

export interface Route {
  path: string;                     // "#/instruments/:id"
  title: string;                    // i18n key of the navigation label
  roles: Role[] | 'any';            // who sees it in the navigation
  nav: boolean;                     // listed in the navigation bar
  load: () => Promise<{ default: ComponentType<{ params: Record<string, string> }> }>;
}

export const routes: Route[] = [
  { path: '#/', title: 'nav.home', roles: 'any', nav: true, load: () => import('./screens/home') },
  // --- admin ---
  { path: '#/admin/organizations', title: 'admin.nav.organizations', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/admin/organizations') },
  { path: '#/admin/organizations/new', title: 'admin.orgs.new', roles: ['CONSORTIUM_ADMIN'], nav: false, load: () => import('./screens/admin/organization-new') },
  { path: '#/admin/organizations/:id', title: 'admin.nav.organizations', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: false, load: () => import('./screens/admin/organization') },
  { path: '#/admin/users', title: 'admin.nav.users', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/admin/users') },
  { path: '#/admin/instruments', title: 'admin.nav.instruments', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/admin/instruments') },
  { path: '#/admin/rates', title: 'admin.nav.rates', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/admin/rates') },
  // --- end admin ---
];

export function match(hash: string): { route: Route; params: Record<string, string> } | undefined {
  const h = hash || '#/';
  for (const route of routes) {
    const names: string[] = [];
    const re = new RegExp(
      '^' + route.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:(\w+)/g, (_, n: string) => {
        names.push(n);
        return '([^/?]+)';
      }) + '(?:\\?.*)?$',
    );
    const m = re.exec(h);
    if (m) {
      const params: Record<string, string> = {};
      names.forEach((n, i) => (params[n] = decodeURIComponent(m[i + 1] ?? '')));
      const q = h.indexOf('?');
      if (q >= 0) new URLSearchParams(h.slice(q + 1)).forEach((v, k) => (params[k] ??= v));
      return { route, params };
    }
  }
  return undefined;
}
