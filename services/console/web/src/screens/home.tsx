// The start page after sign-in: what this person can do, by role.
import { t } from '../i18n';
import { session } from '../session';
import { useSignal } from '../signal';
import { routes } from '../routes';

export default function Home() {
  const s = useSignal(session);
  const mine = routes.filter((r) => r.nav && r.path !== '#/' &&
    (r.roles === 'any' || r.roles.some((role) => s.roles.includes(role))));
  return (
    <section>
      <h1>{t('app.signedInAs', { name: s.displayName ?? s.user ?? '' })}</h1>
      <ul class="cards">
        {mine.map((r) => <li key={r.path}><a href={r.path}>{t(r.title)}</a></li>)}
      </ul>
    </section>
  );
}
