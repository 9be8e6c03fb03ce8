// Resource names and lists: the id in a name, every page of a list RPC, and
// the inventory's organisations, facilities and instruments (any signed-in
// person may list them), loaded once per page.
import type { Facility, Instrument, Organization } from '../../gen/labshare/inventory/v1/inventory_pb';
import { inventory } from './api';

// "organizations/zju" -> "zju"
export function idOf(name: string | undefined): string {
  return name ? name.slice(name.lastIndexOf('/') + 1) : '';
}

// Every page of a list RPC (pages may be short or even empty while a next
// page token is set: the services bound the work per call).
export async function listAll<T>(
  page: (pageToken: string) => Promise<{ items: T[]; next: string }>,
  maxPages = 100,
): Promise<T[]> {
  const out: T[] = [];
  let token = '';
  for (let i = 0; i < maxPages; i++) {
    const r = await page(token);
    out.push(...r.items);
    token = r.next;
    if (!token) break;
  }
  return out;
}

const cache = new Map<string, Promise<unknown>>();
// One answer per key and page; a failure is asked again next time.
export function cached<T>(key: string, f: () => Promise<T>): Promise<T> {
  let p = cache.get(key) as Promise<T> | undefined;
  if (!p) {
    p = f();
    p.catch(() => cache.delete(key));
    cache.set(key, p);
  }
  return p;
}

export const allOrganizations = (): Promise<Organization[]> => cached('organizations', () =>
  listAll(async (pageToken) => {
    const r = await inventory.listOrganizations({ pageSize: 500, pageToken });
    return { items: r.organizations, next: r.nextPageToken };
  }));

export const allFacilities = (): Promise<Facility[]> => cached('facilities', () =>
  listAll(async (pageToken) => {
    const r = await inventory.listFacilities({ pageSize: 500, pageToken });
    return { items: r.facilities, next: r.nextPageToken };
  }));

export const allInstruments = (): Promise<Instrument[]> => cached('instruments', () =>
  listAll(async (pageToken) => {
    const r = await inventory.listInstruments({ pageSize: 500, pageToken });
    return { items: r.instruments, next: r.nextPageToken };
  }));

// An organisation's display name from a list, else its id.
export function orgName(orgs: Organization[] | undefined, name: string): string {
  return orgs?.find((o) => o.name === name)?.displayName || idOf(name);
}
