// The start page after sign-in: what this person can do, by role, each
// with a line saying what it is for.
import { hasMessage, registerMessages, t } from '../i18n';
import { session } from '../session';
import { useSignal } from '../signal';
import { routes } from '../routes';

registerMessages({
  en: {
    'home.intro': 'What you can do here:',
    'home.nav.lab.instruments': 'Search instruments by category, facility, mode and day; open a week calendar and drag to book.',
    'home.nav.lab.bookings': 'Your bookings, leases and service orders: check in and out, cancel, follow quotes and reports.',
    'home.nav.lab.projects': 'Joint-research projects you take part in, with their hour budgets.',
    'home.staff.nav.approvals': 'Bookings and lease requests waiting for your decision.',
    'home.staff.nav.maintenance': 'Declare maintenance or an outage and see which bookings it cancels before you confirm.',
    'home.staff.nav.leases': 'Hand leased instruments over, take them back and close the leases.',
    'home.staff.nav.orders': 'The technical-service work queue: quotes, samples, runs and reports.',
    'home.staff.nav.qualifications': 'Who may use your instruments on site: grant and revoke qualifications.',
    'home.dash.nav': 'Utilisation and sharing per instrument against the yardsticks, income, idle instruments and the sharing matrix.',
    'home.dash.annual.nav': 'The annual report for funders, with CSV download.',
    'home.dash.audit.nav': 'Verify the tamper-evident audit trail and read its latest entries.',
    'home.billing.nav': 'Invoices and their lines, statement and balances, subsidies and settlement transfers.',
    'home.admin.nav.organizations': 'Member organisations and their membership.',
    'home.admin.nav.users': 'People, their organisations and roles.',
    'home.admin.nav.instruments': 'Facilities and instruments, their modes and state.',
    'home.admin.nav.rates': 'Rate cards per instrument and sharing mode, and what a payer is charged.',
    'home.nav.notify.settings': 'Which mails you get, in which language and time zone, at once or as a daily digest.',
    'home.nav.notify.feeds': 'Your bookings or an instrument’s busy time in your own calendar application.',
    'home.nav.notify.webhooks': 'Send your organisation’s events to its own systems; deliveries and replays.',
    'home.nav.notify.deadLetters': 'Mails that could not be delivered: inspect and send again.',
  },
  'zh-CN': {
    'home.intro': '您可以在这里：',
    'home.nav.lab.instruments': '按类别、设施、共享模式和日期查找仪器；打开周日历，拖选时段即可预约。',
    'home.nav.lab.bookings': '您的预约、租赁和技术服务委托：签到签退、取消、查看报价与报告。',
    'home.nav.lab.projects': '您参与的联合研究项目及其机时预算。',
    'home.staff.nav.approvals': '等待您审批的预约和租赁申请。',
    'home.staff.nav.maintenance': '登记维护或停机，确认前先查看将被取消的预约。',
    'home.staff.nav.leases': '租赁仪器的交付、归还与结租。',
    'home.staff.nav.orders': '技术服务工单：报价、收样、排期与报告。',
    'home.staff.nav.qualifications': '谁可以上机使用您的仪器：授予和撤销操作资质。',
    'home.dash.nav': '各仪器的使用率与共享率（对照考核标准）、收入、闲置仪器和共享矩阵。',
    'home.dash.annual.nav': '面向资助方的年度报告，可下载 CSV。',
    'home.dash.audit.nav': '校验防篡改审计链，查看最新审计记录。',
    'home.billing.nav': '发票及明细、对账单与余额、补贴和结算转账。',
    'home.admin.nav.organizations': '成员单位及其会员状态。',
    'home.admin.nav.users': '用户、所属单位与角色。',
    'home.admin.nav.instruments': '设施与仪器、共享模式和状态。',
    'home.admin.nav.rates': '各仪器各共享模式的收费标准，以及付费方的实际价格。',
    'home.nav.notify.settings': '接收哪些邮件、使用何种语言和时区、即时发送还是每日汇总。',
    'home.nav.notify.feeds': '在您自己的日历应用中查看您的预约或某台仪器的占用时间。',
    'home.nav.notify.webhooks': '把贵单位的事件推送到贵单位的系统；查看投递记录并重发。',
    'home.nav.notify.deadLetters': '未能送达的邮件：查看原因并重新发送。',
  },
});

export default function Home() {
  const s = useSignal(session);
  const mine = routes.filter((r) => r.nav && r.path !== '#/' &&
    (r.roles === 'any' || r.roles.some((role) => s.roles.includes(role))));
  return (
    <section>
      <h1>{t('app.signedInAs', { name: s.displayName ?? s.user ?? '' })}</h1>
      <p>{t('home.intro')}</p>
      <ul class="cards">
        {mine.map((r) => (
          <li key={r.path}>
            <a href={r.path}>
              <strong>{t(r.title)}</strong>
              {hasMessage(`home.${r.title}`) && <span class="muted card-desc">{t(`home.${r.title}`)}</span>}
            </a>
          </li>
        ))}
      </ul>
    </section>
  );
}
