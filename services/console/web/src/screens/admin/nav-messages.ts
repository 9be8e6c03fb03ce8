// The navigation labels of the administration screens: loaded with the
// shell (the nav shows them before any admin screen is opened).
import { registerMessages } from '../../i18n';

registerMessages({
  en: {
    'admin.nav.organizations': 'Organisations',
    'admin.nav.users': 'Users',
    'admin.nav.instruments': 'Instruments',
    'admin.nav.rates': 'Rate cards',
  },
  'zh-CN': {
    'admin.nav.organizations': '成员单位',
    'admin.nav.users': '用户',
    'admin.nav.instruments': '仪器',
    'admin.nav.rates': '收费标准',
  },
});
