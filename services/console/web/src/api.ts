// The console's clients: the same RPCs the labshare CLI calls, through the
// gateway (Connect protocol, JSON). Rules, scopes and errors stay in the
// services; see errors.ts for how an error is shown.
import { Code, ConnectError, createClient, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-web';
import { ErrorInfoSchema } from '../../gen/google/rpc/error_details_pb';
import { InventoryService } from '../../gen/labshare/inventory/v1/inventory_pb';
import { BookingService } from '../../gen/labshare/booking/v1/booking_pb';
import { BillingService } from '../../gen/labshare/billing/v1/billing_pb';
import { UsageService } from '../../gen/labshare/usage/v1/usage_pb';
import { NotificationService } from '../../gen/labshare/notify/v1/notify_pb';
import { WebhookService } from '../../gen/labshare/notify/v1/webhooks_pb';
import { CalendarFeedService } from '../../gen/labshare/notify/v1/feeds_pb';
import { loadSession, session } from './session';

// Every call carries the session's CSRF token; when the gateway answers
// that the session has ended, the shell learns it (and offers sign-in), and
// when it refuses the CSRF token (CSRF_TOKEN_INVALID: the session was
// renewed in another tab, say) the session is read again, so that the next
// try carries the current token.
export const csrf: Interceptor = (next) => async (req) => {
  req.header.set('x-csrf-token', session.value.csrfToken ?? '');
  try {
    return await next(req);
  } catch (err) {
    if (err instanceof ConnectError && (err.code === Code.Unauthenticated
      || err.findDetails(ErrorInfoSchema).some((i) => i.reason === 'CSRF_TOKEN_INVALID'))) void loadSession();
    throw err;
  }
};

const transport = createConnectTransport({
  baseUrl: location.origin,
  useBinaryFormat: false,
  interceptors: [csrf],
  fetch: (input, init) => fetch(input, { ...init, credentials: 'same-origin' }),
});

export const inventory = createClient(InventoryService, transport);
export const booking = createClient(BookingService, transport);
export const billing = createClient(BillingService, transport);
export const usage = createClient(UsageService, transport);
export const notifications = createClient(NotificationService, transport);
export const webhooks = createClient(WebhookService, transport);
export const feeds = createClient(CalendarFeedService, transport);

// A fresh request id per user action: every mutation is idempotent through it.
export function requestId(): string {
  return crypto.randomUUID();
}
