// Navigation labels of the dashboard area: loaded with the shell (routes.ts)
// because the navigation bar shows them before any dashboard screen loads.
import { registerMessages } from '../../i18n';

registerMessages({
  en: {
    'dash.nav': 'Dashboard',
    'dash.annual.nav': 'Annual report',
    'dash.audit.nav': 'Audit trail',
    'dash.instrument.nav': 'Instrument figures',
  },
  'zh-CN': {
    'dash.nav': '统计看板',
    'dash.annual.nav': '年度报告',
    'dash.audit.nav': '审计日志',
    'dash.instrument.nav': '仪器数据',
  },
});
