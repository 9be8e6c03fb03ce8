// The staff screens' navigation labels: loaded with the route table (the
// navigation bar shows them before any staff screen is opened).
import { registerMessages } from '../../i18n';

const M: Record<string, [string, string]> = {
  'staff.nav.label': ['Facility staff', '设施工作人员'],
  'staff.nav.approvals': ['Approvals', '审批'],
  'staff.nav.maintenance': ['Maintenance', '维护'],
  'staff.nav.leases': ['Lease handover', '租赁交接'],
  'staff.nav.orders': ['Service orders', '技术服务工单'],
  'staff.nav.qualifications': ['Qualifications', '操作资质'],
};

const en: Record<string, string> = {};
const zh: Record<string, string> = {};
for (const [k, [e, z]] of Object.entries(M)) { en[k] = e; zh[k] = z; }
registerMessages({ en, 'zh-CN': zh });
