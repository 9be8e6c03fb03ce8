// Hash-route links with a query: "#/billing/invoices?org=zju&period=2027-03".
// Empty values are left out.
export function href(path: string, query: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

// The route's path without its query.
export function hashPath(): string {
  return (location.hash || '#/').split('?')[0] ?? '#/';
}

export function go(path: string, query: Record<string, string | undefined>): void {
  location.hash = href(path, query).slice(1);
}

// Changes some of the route's query (keeps the path and the rest), e.g.
// setQuery({org: 'zju'}); an empty value removes the parameter.
export function setQuery(params: Record<string, string | undefined>): void {
  const h = location.hash || '#/';
  const q = h.indexOf('?');
  const query: Record<string, string | undefined> = {};
  new URLSearchParams(q >= 0 ? h.slice(q + 1) : '').forEach((v, k) => (query[k] = v));
  go(hashPath(), { ...query, ...params });
}
