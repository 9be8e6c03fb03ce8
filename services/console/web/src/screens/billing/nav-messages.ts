// The billing screens' navigation label: loaded with the route table (the
// navigation bar shows it before any billing screen is opened).
import { registerMessages } from '../../i18n';

registerMessages({
  en: { 'billing.nav': 'Billing' },
  'zh-CN': { 'billing.nav': '账单' },
});
