// The console's screens. Each is loaded when first opened (charts and the
// calendar stay out of the first load). A screen module default-exports a
// Preact component taking the route's parameters.
import type { ComponentType } from 'preact';
import type { Role } from './session';

export interface Route {
  path: string;                     // "#/instruments/:id"
  title: string;                    // i18n key of the navigation label
  roles: Role[] | 'any';            // who sees it in the navigation
  nav: boolean;                     // listed in the navigation bar
  load: () => Promise<{ default: ComponentType<{ params: Record<string, string> }> }>;
}

export const routes: Route[] = [
  { path: '#/', title: 'nav.home', roles: 'any', nav: true, load: () => import('./screens/home') },
  // --- lab ---
  { path: '#/lab/instruments', title: 'nav.lab.instruments', roles: ['LAB_USER'], nav: true, load: () => import('./screens/lab/instruments') },
  { path: '#/lab/instruments/:id', title: 'nav.lab.instruments', roles: ['LAB_USER'], nav: false, load: () => import('./screens/lab/calendar') },
  { path: '#/lab/bookings', title: 'nav.lab.bookings', roles: ['LAB_USER'], nav: true, load: () => import('./screens/lab/bookings') },
  { path: '#/lab/leases/new', title: 'nav.lab.bookings', roles: ['LAB_USER'], nav: false, load: () => import('./screens/lab/lease-new') },
  { path: '#/lab/orders/new', title: 'nav.lab.bookings', roles: ['LAB_USER'], nav: false, load: () => import('./screens/lab/order-new') },
  { path: '#/lab/orders/:id', title: 'nav.lab.bookings', roles: ['LAB_USER'], nav: false, load: () => import('./screens/lab/order') },
  { path: '#/lab/projects', title: 'nav.lab.projects', roles: ['LAB_USER'], nav: true, load: () => import('./screens/lab/projects') },
  // --- end lab ---
  // --- staff ---
  { path: '#/staff/approvals', title: 'staff.nav.approvals', roles: ['FACILITY_STAFF'], nav: true, load: () => import('./screens/staff/approvals') },
  { path: '#/staff/maintenance', title: 'staff.nav.maintenance', roles: ['FACILITY_STAFF'], nav: true, load: () => import('./screens/staff/maintenance') },
  { path: '#/staff/leases', title: 'staff.nav.leases', roles: ['FACILITY_STAFF'], nav: true, load: () => import('./screens/staff/leases') },
  { path: '#/staff/orders', title: 'staff.nav.orders', roles: ['FACILITY_STAFF'], nav: true, load: () => import('./screens/staff/orders') },
  { path: '#/staff/qualifications', title: 'staff.nav.qualifications', roles: ['FACILITY_STAFF'], nav: true, load: () => import('./screens/staff/qualifications') },
  // --- end staff ---
  // --- dash ---
  { path: '#/dash', title: 'dash.nav', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/dash/overview') },
  { path: '#/dash/instruments/:id', title: 'dash.instrument.nav', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: false, load: () => import('./screens/dash/instrument') },
  { path: '#/dash/annual', title: 'dash.annual.nav', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/dash/annual') },
  { path: '#/dash/audit', title: 'dash.audit.nav', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/dash/audit') },
  // --- end dash ---
  // --- billing ---
  { path: '#/billing/invoices', title: 'billing.nav', roles: ['MEMBER_BILLING_ADMIN', 'CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/billing/invoices') },
  { path: '#/billing/invoices/:id', title: 'billing.nav', roles: ['MEMBER_BILLING_ADMIN', 'CONSORTIUM_ADMIN', 'AUDITOR'], nav: false, load: () => import('./screens/billing/invoice') },
  { path: '#/billing/statement', title: 'billing.tab.statement', roles: ['MEMBER_BILLING_ADMIN', 'CONSORTIUM_ADMIN', 'AUDITOR'], nav: false, load: () => import('./screens/billing/statement') },
  { path: '#/billing/subsidies', title: 'billing.tab.subsidies', roles: ['MEMBER_BILLING_ADMIN', 'CONSORTIUM_ADMIN', 'AUDITOR'], nav: false, load: () => import('./screens/billing/subsidies') },
  { path: '#/billing/settlements', title: 'billing.tab.settlements', roles: ['MEMBER_BILLING_ADMIN', 'CONSORTIUM_ADMIN', 'AUDITOR'], nav: false, load: () => import('./screens/billing/settlements') },
  { path: '#/billing/invoicing', title: 'billing.tab.invoicing', roles: ['MEMBER_BILLING_ADMIN', 'CONSORTIUM_ADMIN', 'AUDITOR'], nav: false, load: () => import('./screens/billing/invoicing') },
  // --- end billing ---
  // --- admin ---
  { path: '#/admin/organizations', title: 'admin.nav.organizations', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/admin/organizations') },
  { path: '#/admin/organizations/new', title: 'admin.orgs.new', roles: ['CONSORTIUM_ADMIN'], nav: false, load: () => import('./screens/admin/organization-new') },
  { path: '#/admin/organizations/:id', title: 'admin.nav.organizations', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: false, load: () => import('./screens/admin/organization') },
  { path: '#/admin/users', title: 'admin.nav.users', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/admin/users') },
  { path: '#/admin/instruments', title: 'admin.nav.instruments', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/admin/instruments') },
  { path: '#/admin/rates', title: 'admin.nav.rates', roles: ['CONSORTIUM_ADMIN', 'AUDITOR'], nav: true, load: () => import('./screens/admin/rates') },
  // --- end admin ---
  // --- notify ---
  { path: '#/settings/notifications', title: 'nav.notify.settings', roles: 'any', nav: true, load: () => import('./screens/notify/settings') },
  { path: '#/settings/feeds', title: 'nav.notify.feeds', roles: 'any', nav: true, load: () => import('./screens/notify/feeds') },
  { path: '#/billing/webhooks', title: 'nav.notify.webhooks', roles: ['MEMBER_BILLING_ADMIN', 'CONSORTIUM_ADMIN'], nav: true, load: () => import('./screens/notify/webhooks') },
  { path: '#/billing/webhooks/:id', title: 'nav.notify.webhooks', roles: ['MEMBER_BILLING_ADMIN', 'CONSORTIUM_ADMIN'], nav: false, load: () => import('./screens/notify/webhook') },
  { path: '#/notify/dead-letters', title: 'nav.notify.deadLetters', roles: ['FACILITY_STAFF', 'CONSORTIUM_ADMIN'], nav: true, load: () => import('./screens/notify/dead-letters') },
  // --- end notify ---
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
