// A tiny observable value, and a Preact hook that re-renders on change.
import { useEffect, useState } from 'preact/hooks';

export interface Signal<T> {
  value: T;
  set(v: T): void;
  subscribe(f: (v: T) => void): () => void;
}

export function signal<T>(initial: T): Signal<T> {
  const subs = new Set<(v: T) => void>();
  const s: Signal<T> = {
    value: initial,
    set(v: T) {
      s.value = v;
      for (const f of [...subs]) f(v);
    },
    subscribe(f) {
      subs.add(f);
      return () => subs.delete(f);
    },
  };
  return s;
}

export function useSignal<T>(s: Signal<T>): T {
  const [, force] = useState(0);
  useEffect(() => s.subscribe(() => force((n) => n + 1)), [s]);
  return s.value;
}
