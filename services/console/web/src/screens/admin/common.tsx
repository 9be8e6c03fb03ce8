// Pieces the administration screens share: the refusal with the field the
// service named, words for the proto enums, durations in hours.
import { explain, type ShownError } from '../../errors';
import { hasMessage, lang, t } from '../../i18n';
import { hasRole } from '../../session';
import { useSignal } from '../../signal';
import { ErrorBox } from '../../ui';
import { currencyDigits, parseMoney } from '../../format';
import './messages';
import './admin.css';

export const isAdmin = (): boolean => hasRole('CONSORTIUM_ADMIN');

// A proto enum value as words: t("admin.<Enum>.<VALUE>").
export function label(enumName: string, e: Record<number, string>, v: number | undefined): string {
  const n = e[v ?? 0];
  if (!n || v === 0) return '—';
  const key = `admin.${enumName}.${n}`;
  return hasMessage(key) ? t(key) : n.toLowerCase().replace(/_/g, ' ');
}

// Every value of a proto enum but UNSPECIFIED, in declaration order.
export function values<E extends Record<string, string | number>>(e: E): number[] {
  return Object.values(e).filter((v): v is number => typeof v === 'number' && v !== 0);
}

// The service's refusal: the sentence, a sentence for the field the service
// named (INVALID_FIELD), and the service's own message below. `etagNote`:
// what to do on ETAG_MISMATCH, when the form keeps the person's edits over
// a reload (admin.etagKept) instead of the plain advice.
export function Refusal({ err, onReload, etagNote }: { err: unknown; onReload?: () => void; etagNote?: string }) {
  useSignal(lang);
  if (!err) return null;
  const e: ShownError = explain(err);
  const field = e.metadata['field'];
  const fieldKey = field ? `admin.field.${field.replace(/\[\d+\]/g, '[]')}` : '';
  const fieldSentence = fieldKey && hasMessage(fieldKey) ? t(fieldKey) : '';
  return (
    <ErrorBox error={e} actions={onReload && e.code === 'ABORTED' && (
      <button type="button" onClick={onReload}>{t('admin.reload')}</button>
    )}>
      {fieldSentence && <p data-testid="error-field">{fieldSentence}</p>}
      {e.reason === 'ETAG_MISMATCH' && <p data-testid="etag-note">{etagNote ?? t('admin.etagMismatch')}</p>}
    </ErrorBox>
  );
}

export function hours(n: number): { seconds: bigint } {
  return { seconds: BigInt(Math.round(n * 3600)) };
}

// An amount typed into a field: whether it reads as money of `currency`
// (empty is not an amount unless `optional`). A negative amount passes: it
// is the service's to refuse.
export const amountOk = (text: string, currency: string, optional = false): boolean =>
  (optional && !text.trim()) || parseMoney(text, currency) !== undefined;

// The field's own message when its amount does not read as money.
export function AmountNote({ show, currency, id }: { show: boolean; currency: string; id: string }) {
  useSignal(lang);
  if (!show) return null;
  return <span id={id} class="field-error" role="alert" data-testid="field-error">
    {t('admin.amountInvalid', { currency: currency || 'CNY', digits: currencyDigits(currency) })}</span>;
}
