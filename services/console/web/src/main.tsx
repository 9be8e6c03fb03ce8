// The console's shell: session, navigation per role, language switch, and
// the screen of the current hash route.
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { ComponentType } from 'preact';
import './messages';
import './style.css';
import { lang, LANGS, t, type Lang } from './i18n';
import { useSignal } from './signal';
import { loadSession, session, signIn, signOut } from './session';
import { match, routes } from './routes';
import { mayLeave } from './leave';
import { signInErrorSentence } from './signin';
import type { ShownError } from './errors';
import { watchStackTables } from './stack';

// The route. Leaving a screen with unsaved edits (leave.ts) asks first;
// staying puts the address back as it was.
function useHash(): string {
  const [hash, setHash] = useState(location.hash || '#/');
  const shown = useRef(hash);
  useEffect(() => {
    const on = () => {
      const next = location.hash || '#/';
      if (next === shown.current) return;
      if (!mayLeave()) {
        history.replaceState(history.state, '', shown.current);
        return;
      }
      shown.current = next;
      setHash(next);
    };
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function Nav({ hash }: { hash: string }) {
  const s = useSignal(session);
  useSignal(lang);
  // Why the last sign-out did not happen (the session lives on).
  const [signOutError, setSignOutError] = useState<ShownError>();
  // At phone width the destinations fold behind a Menu button (style.css);
  // a new page folds them again.
  const [open, setOpen] = useState(false);
  useEffect(() => setOpen(false), [hash]);
  const visible = routes.filter(
    (r) => r.nav && s.signedIn && (r.roles === 'any' || r.roles.some((role) => s.roles.includes(role))),
  );
  return (
    <nav class={open ? 'nav open' : 'nav'} aria-label="main">
      <a class="brand" href="#/">{t('app.name')}</a>
      {visible.length > 0 && (
        <button type="button" class="nav-toggle" aria-expanded={open} aria-controls="nav-links" onClick={() => setOpen(!open)}>
          {t('app.menu')}
        </button>
      )}
      <ul id="nav-links">
        {visible.map((r) => (
          <li key={r.path}>
            <a href={r.path} aria-current={hash.split('?')[0] === r.path ? 'page' : undefined}>{t(r.title)}</a>
          </li>
        ))}
      </ul>
      <div class="nav-end">
        <label>
          <span class="sr-only">{t('app.language')}</span>
          <select
            data-testid="language"
            value={lang.value}
            onChange={(e) => lang.set((e.target as HTMLSelectElement).value as Lang)}
          >
            {LANGS.map((l) => <option key={l} value={l}>{l === 'en' ? 'English' : '中文'}</option>)}
          </select>
        </label>
        {s.signedIn ? (
          <>
            <span class="who" data-testid="who">{t('app.signedInAs', { name: s.displayName ?? s.user ?? '' })}</span>
            <button type="button" onClick={() => {
              if (!mayLeave(true)) return;
              setSignOutError(undefined);
              void signOut().then(async (refused) => {
                if (!refused) return;
                // errors.ts (and Connect) only when needed: the first load stays small.
                const { explainHttp } = await import('./errors');
                setSignOutError(explainHttp(refused.status, refused.body));
              });
            }}>{t('app.signOut')}</button>
            {signOutError && (
              <span class="error-sentence" role="alert" data-testid="sign-out-error" title={signOutError.detail}>
                {signOutError.sentence}
              </span>
            )}
          </>
        ) : (
          <button type="button" onClick={signIn} data-testid="sign-in">{t('app.signIn')}</button>
        )}
      </div>
    </nav>
  );
}

function Screen({ hash }: { hash: string }) {
  const found = match(hash);
  const [loaded, setLoaded] = useState<{ path: string; C: ComponentType<{ params: Record<string, string> }> }>();
  const [failed, setFailed] = useState<string>();
  useEffect(() => {
    if (!found) return;
    let live = true;
    setFailed(undefined);
    found.route.load().then(
      (m) => live && setLoaded({ path: found.route.path, C: m.default }),
      () => live && setFailed(found.route.path),
    );
    return () => { live = false; };
  }, [found?.route.path]);
  // After a route change, once the screen is there: focus moves to <main>
  // (unless the screen put it somewhere inside), so a screen reader starts
  // at the new content and Tab continues from there.
  const page = hash.split('?')[0];
  const shownPath = loaded && found && loaded.path === found.route.path ? page : undefined;
  const before = useRef<string>();
  useEffect(() => {
    if (!shownPath) return;
    const first = before.current === undefined;
    if (shownPath === before.current) return;
    before.current = shownPath;
    if (first) return;
    const main = document.getElementById('main');
    if (main && !main.contains(document.activeElement)) main.focus({ preventScroll: true });
  }, [shownPath]);
  if (!found) return <p role="alert">{t('app.notFound')}</p>;
  if (failed === found.route.path) {
    return (
      <div class="error" role="alert" data-testid="error">
        <p class="error-sentence">{t('app.screenFailed')}</p>
        <button type="button" onClick={() => location.reload()}>{t('app.reload')}</button>
      </div>
    );
  }
  if (!loaded || loaded.path !== found.route.path) return <p aria-busy="true">{t('app.loading')}</p>;
  const C = loaded.C;
  return <C params={found.params} />;
}

function App() {
  const hash = useHash();
  const s = useSignal(session);
  useSignal(lang);
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>
        {t('app.skipToContent')}
      </a>
      <Nav hash={hash} />
      <main id="main" tabIndex={-1}>
        {s.signedIn ? <Screen hash={hash} /> : (
          <section class="welcome">
            <h1>{t('app.name')}</h1>
            {signInErrorSentence(hash) && <p class="error" role="alert" data-testid="error">{signInErrorSentence(hash)}</p>}
            <p>{t('app.welcome')}</p>
            <p>{t('app.pleaseSignIn')}</p>
            <button type="button" class="primary" onClick={signIn}>{t('app.signIn')}</button>
          </section>
        )}
      </main>
    </>
  );
}

void loadSession().finally(() => {
  const app = document.getElementById('app')!;
  render(<App />, app);
  watchStackTables(app);
});
