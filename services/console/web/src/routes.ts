// The console's screens. Each is loaded when first opened (charts and the
// calendar stay out of the first load). A screen module default-exports a
// Preact component taking the route's parameters.
import type { ComponentType } from 'preact';
import type { Role } from './session';
import './screens/dash/nav'; // dash: navigation labels

export interface Route {
  path: string;                     // "#/instruments/:id"
  title: string;                    // i18n key of the navigation label
  roles: Role[] | 'any';            // who sees it in the navigation
  nav: boolean;                     // listed in the navigation bar
  load: () => Promise<{ default: ComponentType<{ params: Record<string, string> }> }>;
}

export const routes: Route[] = [
  { path: '#/', title: 'nav.home', roles: 'any', nav: true, load: () => import('./screens/home') },
  // --- dash ---
  { path: '#/dash', title: 'dash.nav', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/dash/overview') },
  { path: '#/dash/instruments/:id', title: 'dash.instrument.nav', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: false, load: () => import('./screens/dash/instrument') },
  { path: '#/dash/annual', title: 'dash.annual.nav', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/dash/annual') },
  { path: '#/dash/audit', title: 'dash.audit.nav', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/dash/audit') },
  // --- end dash ---
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
