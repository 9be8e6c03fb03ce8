// An error from a service, shown as a sentence a person understands, in the
// user's language: the ErrorInfo reason picks the sentence ("reason.<REASON>"
// in the dictionaries of reasons.ts), the gRPC code is the fallback; the
// service's own (English) message is kept as the detail line.
import type { JsonValue } from '@bufbuild/protobuf';
import { Code, ConnectError } from '@connectrpc/connect';
import { codeFromHttpStatus, errorFromJson } from '@connectrpc/connect/protocol-connect';
import { ErrorInfoSchema } from '../../gen/google/rpc/error_details_pb';
import { hasMessage, t } from './i18n';

export interface ShownError {
  reason: string;               // ErrorInfo reason, or "" when there is none
  code: string;                 // gRPC code name, e.g. "FAILED_PRECONDITION"
  sentence: string;             // the sentence for a person, in their language
  detail: string;               // the service's own message
  metadata: Record<string, string>;
}

export function explain(err: unknown): ShownError {
  const ce = ConnectError.from(err);
  const info = ce.findDetails(ErrorInfoSchema)[0];
  const reason = info?.reason ?? '';
  const metadata = { ...(info?.metadata ?? {}) };
  const code = Code[ce.code]
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .toUpperCase();
  const key = `reason.${reason}`;
  const sentence = reason && hasMessage(key) ? t(key, metadata) : t(`code.${code}`);
  return { reason, code, sentence, detail: ce.rawMessage, metadata };
}

// An answer of the gateway's own HTTP endpoints (POST /auth/logout) that is
// not a success: its Connect JSON error when it is one, else the code of
// its HTTP status (status 0: no answer at all, unavailable).
export function explainHttp(status: number, body: string): ShownError {
  const fallback = new ConnectError(body || `HTTP ${status}`, status === 0 ? Code.Unavailable : codeFromHttpStatus(status));
  let err = fallback;
  try {
    err = errorFromJson(JSON.parse(body) as JsonValue, undefined, fallback);
  } catch {
    // not a Connect error (a proxy's page)
  }
  return explain(err);
}
