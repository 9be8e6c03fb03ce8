// Unsaved edits and leaving them. A part of a screen with unsaved edits says
// so (useUnsaved, with the question to ask); before the console leaves it
// (another route, the part closing: mayLeave) the person is asked, and a
// reload or closing the tab gets the browser's own question (beforeunload).
import { useEffect } from 'preact/hooks';

const pending = new Map<object, string>();

function onBeforeUnload(e: BeforeUnloadEvent): void {
  e.preventDefault();
  e.returnValue = '';
}

// The question of the first part with unsaved edits, or undefined.
export function unsavedQuestion(): string | undefined {
  for (const q of pending.values()) return q;
  return undefined;
}

// Whether to go on: nothing is unsaved, or the person says to leave it.
// `unloading`: the page itself is about to go (signing out), so the
// browser's own question is not asked a second time.
export function mayLeave(unloading = false): boolean {
  const q = unsavedQuestion();
  if (q === undefined) return true;
  if (!window.confirm(q)) return false;
  if (unloading) removeEventListener('beforeunload', onBeforeUnload);
  return true;
}

// While `question` is set, leaving asks it.
export function useUnsaved(question: string | undefined): void {
  useEffect(() => {
    if (question === undefined) return;
    const key = {};
    pending.set(key, question);
    if (pending.size === 1) addEventListener('beforeunload', onBeforeUnload);
    return () => {
      pending.delete(key);
      if (pending.size === 0) removeEventListener('beforeunload', onBeforeUnload);
    };
  }, [question]);
}
