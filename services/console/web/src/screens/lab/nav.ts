// The lab user's navigation labels: loaded with the route table (the
// screens' own strings load with the screens, see messages.ts).
import { registerMessages } from '../../i18n';

registerMessages({
  en: { 'nav.lab.instruments': 'Find instruments', 'nav.lab.bookings': 'My bookings', 'nav.lab.projects': 'My projects' },
  'zh-CN': { 'nav.lab.instruments': '查找仪器', 'nav.lab.bookings': '我的预约', 'nav.lab.projects': '我的项目' },
});
