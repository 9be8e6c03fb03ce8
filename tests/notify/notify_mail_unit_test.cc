// Unit tests of the mail module's pure parts: which events make which mails
// for whom (Interpret, ScheduledNotice), the templates (language, zone,
// link, unsubscribe), money, MIME and message ids.
#include <gtest/gtest.h>

#include <functional>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "common/proto_util.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "services/notify/notify_mail_kinds.h"
#include "services/notify/notify_mail_module.h"
#include "services/notify/notify_mail_queue.h"
#include "services/notify/notify_mail_smtp.h"

ABSL_DECLARE_FLAG(std::string, default_time_zone);

namespace labshare::notify {
namespace {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing::v1;
namespace tv = labshare::type::v1;

const absl::Time kStart = absl::FromUnixSeconds(1803866400);  // 2027-03-01T02:00:00Z

StreamEvent Entry(const bk::BookingEvent& e) {
  return StreamEvent{"1-0", "labshare.booking.v1.BookingEvent", e.SerializeAsString()};
}
StreamEvent Entry(const bl::BillingEvent& e) {
  return StreamEvent{"1-0", "labshare.billing.v1.BillingEvent", e.SerializeAsString()};
}

bk::Booking OnSite(bk::Booking::State state) {
  bk::Booking b;
  b.set_name("bookings/b1");
  b.set_instrument("instruments/tem");
  b.set_instrument_owner("organizations/owner");
  b.set_mode(tv::ON_SITE);
  b.set_user("users/ana");
  b.set_state(state);
  *b.mutable_reserved_interval()->mutable_start_time() = ToProto(kStart);
  *b.mutable_reserved_interval()->mutable_end_time() = ToProto(kStart + absl::Hours(1));
  return b;
}

TEST(InterpretTest, BookingKindsGoToTheBookingsUser) {
  InterpretOptions o;
  o.reminder_lead = absl::Hours(2);
  bk::BookingEvent e;
  e.mutable_header()->set_event_id("e1");
  *e.mutable_booking_created()->mutable_booking() = OnSite(bk::Booking::CONFIRMED);
  auto i = Interpret(Entry(e), o);
  ASSERT_TRUE(i.ok());
  EXPECT_EQ(i->event_id, "e1");
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].kind, v1::BOOKING_CONFIRMED);
  EXPECT_EQ(i->notices[0].users, std::vector<std::string>{"users/ana"});
  ASSERT_EQ(i->schedule.size(), 1u);
  EXPECT_EQ(i->schedule[0].member, "BOOKING_REMINDER|bookings/b1");
  EXPECT_EQ(i->schedule[0].fire, kStart - absl::Hours(2));

  // Confirmed through approval: the approval's mail says it, not a second
  // one; the reminder is scheduled. Without via_approval (older streams,
  // after a BookingCreated CONFIRMED): nothing.
  bk::BookingEvent ce;
  ce.mutable_header()->set_event_id("e1b");
  *ce.mutable_booking_confirmed()->mutable_booking() = OnSite(bk::Booking::CONFIRMED);
  ce.mutable_booking_confirmed()->set_via_approval(true);
  i = Interpret(Entry(ce), o);
  ASSERT_TRUE(i.ok());
  EXPECT_TRUE(i->notices.empty());
  EXPECT_EQ(i->schedule.size(), 1u);
  ce.mutable_booking_confirmed()->set_via_approval(false);
  i = Interpret(Entry(ce), o);
  EXPECT_TRUE(i->notices.empty());
  EXPECT_TRUE(i->schedule.empty());

  // Waiting for approval: the owner's staff.
  bk::BookingEvent c;
  c.mutable_header()->set_event_id("e2");
  *c.mutable_booking_created()->mutable_booking() = OnSite(bk::Booking::PENDING_APPROVAL);
  i = Interpret(Entry(c), o);
  ASSERT_TRUE(i.ok());
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].kind, v1::APPROVAL_REQUESTED);
  EXPECT_TRUE(i->notices[0].users.empty());
  ASSERT_EQ(i->notices[0].org_roles.size(), 1u);
  EXPECT_EQ(i->notices[0].org_roles[0].first, "organizations/owner");
  EXPECT_EQ(i->notices[0].org_roles[0].second, Role::kFacilityStaff);

  // Cancelled by the booker: no mail, the reminder goes.
  bk::BookingEvent x;
  x.mutable_header()->set_event_id("e3");
  *x.mutable_booking_cancelled()->mutable_booking() = OnSite(bk::Booking::CANCELLED);
  i = Interpret(Entry(x), o);
  ASSERT_TRUE(i.ok());
  EXPECT_TRUE(i->notices.empty());
  EXPECT_EQ(i->unschedule, std::vector<std::string>{"BOOKING_REMINDER|bookings/b1"});
  // By an outage: mailed, with the window.
  x.mutable_booking_cancelled()->set_cancelled_by_outage(true);
  x.mutable_booking_cancelled()->set_maintenance_window("instruments/tem/maintenanceWindows/w1");
  i = Interpret(Entry(x), o);
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].kind, v1::BOOKING_CANCELLED_BY_OUTAGE);
  EXPECT_EQ(i->notices[0].maintenance_window, "instruments/tem/maintenanceWindows/w1");

  // A lease's own booking: lease kinds instead.
  bk::BookingEvent l = e;
  l.mutable_booking_created()->mutable_booking()->set_mode(tv::LEASE);
  i = Interpret(Entry(l), o);
  EXPECT_TRUE(i->notices.empty());
  EXPECT_TRUE(i->schedule.empty());
}

TEST(InterpretTest, BillingKindsGoToBillingAdminsAndLegalNoticesAreMarked) {
  InterpretOptions o;
  o.subsidy_pool_low_minor = 100000;
  bl::BillingEvent s;
  s.mutable_header()->set_event_id("s1");
  auto* st = s.mutable_settlement_computed()->mutable_settlement();
  st->set_name("settlements/2027-02");
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"organizations/a", "organizations/b"}, {"organizations/a", "organizations/c"},
           {"organizations/c", "organizations/b"}}) {
    auto* t = st->add_transfers();
    t->set_from_organization(from);
    t->set_to_organization(to);
    t->mutable_amount()->set_currency_code("CNY");
    t->mutable_amount()->set_amount_minor(100);
  }
  auto i = Interpret(Entry(s), o);
  ASSERT_TRUE(i.ok());
  ASSERT_EQ(i->notices.size(), 2u);  // one per paying organisation
  EXPECT_EQ(i->notices[0].org_roles[0].first, "organizations/a");
  EXPECT_EQ(i->notices[0].org_roles[0].second, Role::kMemberBillingAdmin);
  EXPECT_EQ(i->notices[0].discriminator, "organizations/a");
  EXPECT_EQ(i->notices[1].org_roles[0].first, "organizations/c");
  EXPECT_TRUE(IsLegalNotice(v1::SETTLEMENT_TRANSFERS_DUE));
  EXPECT_TRUE(IsLegalNotice(v1::INVOICE_ISSUED));
  EXPECT_TRUE(IsLegalNotice(v1::PAYMENT_RECEIVED));
  EXPECT_TRUE(IsLegalNotice(v1::WEBHOOK_DISABLED));
  EXPECT_FALSE(IsLegalNotice(v1::BOOKING_REMINDER));
  EXPECT_FALSE(IsLegalNotice(v1::SUBSIDY_POOL_LOW));

  // The pool crossing the threshold, once.
  bl::BillingEvent a;
  a.mutable_header()->set_event_id("a1");
  a.mutable_subsidy_applied()->mutable_line()->set_subsidy_pool("subsidyPools/p");
  a.mutable_subsidy_applied()->mutable_line()->mutable_amount()->set_amount_minor(500);
  a.mutable_subsidy_applied()->mutable_pool_balance()->set_amount_minor(100000);
  EXPECT_TRUE(Interpret(Entry(a), o)->notices.empty());  // not below yet
  a.mutable_subsidy_applied()->mutable_pool_balance()->set_amount_minor(99999);
  EXPECT_EQ(Interpret(Entry(a), o)->notices.size(), 1u);  // 100499 -> 99999
  a.mutable_subsidy_applied()->mutable_pool_balance()->set_amount_minor(90000);
  a.mutable_subsidy_applied()->mutable_line()->mutable_amount()->set_amount_minor(5000);
  EXPECT_TRUE(Interpret(Entry(a), o)->notices.empty());  // 95000 -> 90000: already below
}

// PAYMENT_RECEIVED: the payee's billing admins, and the payer's when the
// payer is an organisation; a subsidy pool (the consortium admin records
// its payments) has none: it is no recipient (inventory refuses it as an
// organisation, and the event used to stay pending for ever).
TEST(InterpretTest, APaymentFromASubsidyPoolIsMailedToThePayeeOnly) {
  bl::BillingEvent e;
  e.mutable_header()->set_event_id("p1");
  auto* p = e.mutable_payment_recorded()->mutable_payment();
  p->set_name("payments/p1");
  p->set_payer("subsidyPools/p1");
  p->set_payee("organizations/owner");
  p->mutable_amount()->set_currency_code("CNY");
  p->mutable_amount()->set_amount_minor(500000);
  auto i = Interpret(Entry(e), {});
  ASSERT_TRUE(i.ok());
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].kind, v1::PAYMENT_RECEIVED);
  EXPECT_EQ(i->notices[0].org_roles,
            (std::vector<std::pair<std::string, Role>>{{"organizations/owner", Role::kMemberBillingAdmin}}));
  p->set_payer("organizations/lab");
  i = Interpret(Entry(e), {});
  ASSERT_TRUE(i.ok());
  EXPECT_EQ(i->notices[0].org_roles,
            (std::vector<std::pair<std::string, Role>>{{"organizations/owner", Role::kMemberBillingAdmin},
                                                       {"organizations/lab", Role::kMemberBillingAdmin}}));
}

TEST(InterpretTest, UnknownTypesConcernNoOneAndGarbageIsAnError) {
  auto i = Interpret(StreamEvent{"5-0", "labshare.usage.v1.UsageEvent", "x"}, {});
  ASSERT_TRUE(i.ok());
  EXPECT_TRUE(i->notices.empty());
  EXPECT_FALSE(Interpret(StreamEvent{"5-0", "labshare.booking.v1.BookingEvent", "\xff\xff\xff"}, {}).ok());
}

TEST(InterpretTest, ScheduledNoticesComeFromTheirEvent) {
  bk::BookingEvent e;
  e.mutable_header()->set_event_id("e1");
  auto* l = e.mutable_lease_extended()->mutable_lease();
  l->set_name("leases/l1");
  l->set_contact_user("users/ana");
  l->set_state(bk::Lease::HANDED_OVER);
  *e.mutable_lease_extended()->mutable_new_end_time() = ToProto(kStart + absl::Hours(100));
  auto n = ScheduledNotice("LEASE_RETURN_DUE|leases/l1", Entry(e));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->kind, v1::LEASE_RETURN_DUE);
  EXPECT_EQ(n->users, std::vector<std::string>{"users/ana"});
  EXPECT_EQ(n->times.at("end"), kStart + absl::Hours(100));
  EXPECT_FALSE(ScheduledNotice("NOPE|x", Entry(e)).ok());
}

TEST(InterpretTest, CheckInCheckOutAndMissedCancelTheReminder) {
  for (int which = 0; which < 3; ++which) {
    bk::BookingEvent e;
    e.mutable_header()->set_event_id("e1");
    bk::Booking* b = which == 0   ? e.mutable_booking_checked_in()->mutable_booking()
                     : which == 1 ? e.mutable_booking_checked_out()->mutable_booking()
                                  : e.mutable_booking_missed()->mutable_booking();
    *b = OnSite(bk::Booking::CONFIRMED);
    auto in = Interpret(Entry(e), InterpretOptions());
    ASSERT_TRUE(in.ok());
    EXPECT_EQ(in->unschedule, std::vector<std::string>{"BOOKING_REMINDER|bookings/b1"}) << which;
    EXPECT_TRUE(in->schedule.empty());
  }
}

TEST(InterpretTest, ScheduleChangesCarryTheSnapshotsUpdateTime) {
  bk::BookingEvent e;
  e.mutable_header()->set_event_id("e1");
  *e.mutable_booking_cancelled()->mutable_booking() = OnSite(bk::Booking::CANCELLED);
  *e.mutable_booking_cancelled()->mutable_booking()->mutable_update_time() = ToProto(kStart - absl::Hours(5));
  auto in = Interpret(Entry(e), InterpretOptions());
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(in->version, kStart - absl::Hours(5));
  bk::BookingEvent l;
  l.mutable_header()->set_event_id("e2");
  auto* lease = l.mutable_lease_approved()->mutable_lease();
  lease->set_name("leases/l1");
  *lease->mutable_term()->mutable_start_time() = ToProto(kStart);
  *lease->mutable_update_time() = ToProto(kStart - absl::Hours(7));
  in = Interpret(Entry(l), InterpretOptions());
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(in->version, kStart - absl::Hours(7));
}

TEST(ScheduleTest, NothingPastTheGraceOrFromHistoryIsScheduled) {
  const absl::Time now = kStart;
  Interpretation in;
  // The notifier sees the event late (it was down): what fell due before
  // the event counts from the event, and is late past the grace after it.
  in.event_time = now - absl::Hours(1) - absl::Seconds(1);
  in.schedule = {{"BOOKING_REMINDER|bookings/late", now - absl::Hours(1) - absl::Seconds(1)},
                 {"BOOKING_REMINDER|bookings/grace", now - absl::Hours(1)},
                 {"BOOKING_REMINDER|bookings/ahead", now + absl::Hours(3)}};
  std::vector<std::string> got;
  for (const Schedule& s : SchedulesToApply(in, now, absl::Hours(1), absl::Hours(24 * 7))) got.push_back(s.member);
  EXPECT_EQ(got, (std::vector<std::string>{"BOOKING_REMINDER|bookings/grace", "BOOKING_REMINDER|bookings/ahead"}));
  // An event older than max_event_age schedules nothing, not even ahead.
  in.event_time = now - absl::Hours(24 * 7) - absl::Seconds(1);
  EXPECT_TRUE(SchedulesToApply(in, now, absl::Hours(1), absl::Hours(24 * 7)).empty());
  // 0: no age limit.
  EXPECT_EQ(SchedulesToApply(in, now, absl::Hours(1), absl::ZeroDuration()).size(), 2u);
}

TEST(ScheduleTest, LateFiresAndFiresAfterTheStartOrEndMakeNoMail) {
  Notice n;
  n.times["start"] = kStart;
  n.times["end"] = kStart + absl::Hours(2);
  const absl::Duration grace = absl::Hours(1);
  const absl::Time fire = kStart - absl::Hours(24);
  // On time, and up to the grace late.
  EXPECT_TRUE(ScheduledStillDue("BOOKING_REMINDER|bookings/b1", fire, n, fire, grace));
  EXPECT_TRUE(ScheduledStillDue("BOOKING_REMINDER|bookings/b1", fire, n, fire + grace, grace));
  // Later than the grace: dropped.
  EXPECT_FALSE(ScheduledStillDue("BOOKING_REMINDER|bookings/b1", fire, n, fire + grace + absl::Seconds(1), grace));
  // Within the grace but the booking (lease) has started: dropped.
  EXPECT_FALSE(ScheduledStillDue("BOOKING_REMINDER|bookings/b1", kStart - absl::Minutes(10), n, kStart, grace));
  EXPECT_FALSE(ScheduledStillDue("LEASE_HANDOVER_DUE|leases/l1", kStart - absl::Minutes(10), n, kStart, grace));
  // A return notice counts from the end, not the start.
  EXPECT_TRUE(ScheduledStillDue("LEASE_RETURN_DUE|leases/l1", kStart + absl::Minutes(90), n,
                                kStart + absl::Minutes(100), grace));
  EXPECT_FALSE(ScheduledStillDue("LEASE_RETURN_DUE|leases/l1", kStart + absl::Minutes(90), n,
                                 kStart + absl::Hours(2), grace));
}

// notify.proto: a booking made within the lead time gets its reminder at
// once (it used to be dropped as "late"), stored at its own fire time (the
// mail's id is the same whichever event scheduled it); a fire the event
// came more than the grace after is still late.
TEST(ScheduleTest, ABookingMadeWithinTheLeadTimeIsRemindedAtOnce) {
  InterpretOptions o;
  o.reminder_lead = absl::Hours(24);
  const absl::Time made = kStart - absl::Hours(3);
  bk::BookingEvent e;
  e.mutable_header()->set_event_id("e1");
  *e.mutable_header()->mutable_event_time() = ToProto(made);
  *e.mutable_booking_created()->mutable_booking() = OnSite(bk::Booking::CONFIRMED);
  auto in = Interpret(Entry(e), o);
  ASSERT_TRUE(in.ok());
  const std::vector<Schedule> kept = SchedulesToApply(*in, made + absl::Seconds(1), absl::Hours(1), absl::Hours(24 * 7));
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].member, "BOOKING_REMINDER|bookings/b1");
  EXPECT_EQ(kept[0].fire, kStart - absl::Hours(24));
  // Fired (due at once): a mail, up to the grace after the event.
  auto n = ScheduledNotice(kept[0].member, Entry(e));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->event_time, made);
  EXPECT_TRUE(ScheduledStillDue(kept[0].member, kept[0].fire, *n, made + absl::Seconds(2), absl::Hours(1)));
  EXPECT_TRUE(ScheduledStillDue(kept[0].member, kept[0].fire, *n, made + absl::Hours(1), absl::Hours(1)));
  EXPECT_FALSE(ScheduledStillDue(kept[0].member, kept[0].fire, *n, made + absl::Hours(1) + absl::Seconds(1),
                                 absl::Hours(1)));
  // Seen more than the grace after the event: late, not scheduled.
  EXPECT_TRUE(SchedulesToApply(*in, made + absl::Hours(1) + absl::Seconds(1), absl::Hours(1), absl::Hours(24 * 7))
                  .empty());
  // Due up to the start (a long grace), not at it: the booking has begun.
  EXPECT_TRUE(ScheduledStillDue(kept[0].member, kept[0].fire, *n, kStart - absl::Minutes(1), absl::Hours(4)));
  EXPECT_FALSE(ScheduledStillDue(kept[0].member, kept[0].fire, *n, kStart, absl::Hours(4)));
}

RenderContext Context(const std::string& language, const std::string& zone) {
  RenderContext c;
  c.language = language;
  c.zone_name = zone;
  EXPECT_TRUE(absl::LoadTimeZone(zone, &c.zone));
  c.recipient_name = "Ana";
  c.console_url = "https://console.test";
  c.instrument_name = "TEM 2100";
  c.unsubscribe_url = "https://console.test/unsubscribe?token=t";
  return c;
}

TEST(RenderTest, LanguageZoneLinkAndUnsubscribe) {
  bk::BookingEvent e;
  e.mutable_header()->set_event_id("e1");
  *e.mutable_booking_created()->mutable_booking() = OnSite(bk::Booking::CONFIRMED);
  const Notice n = Interpret(Entry(e), {})->notices[0];
  RenderedMail en = Render(n, Context("en", "Europe/Berlin"));
  EXPECT_EQ(en.subject, "Booking confirmed: TEM 2100, 2027-03-01 03:00 (Europe/Berlin)");
  EXPECT_EQ(en.text,
            "Hello Ana,\n\nYour booking b1 of TEM 2100 is confirmed.\nTime: 2027-03-01 03:00 (Europe/Berlin) - "
            "2027-03-01 04:00 (Europe/Berlin)\n\nOpen in LabShare: https://console.test/#/lab/bookings\n\n-- \nLabShare\n"
            "Unsubscribe from these mails: https://console.test/unsubscribe?token=t\n");
  EXPECT_TRUE(absl::StrContains(en.html, "<a href=\"https://console.test/#/lab/bookings\">")) << en.html;
  EXPECT_TRUE(absl::StrContains(en.html, "<html lang=\"en\">"));
  RenderedMail zh = Render(n, Context("zh-CN", "Asia/Shanghai"));
  EXPECT_EQ(zh.subject, "预约已确认：TEM 2100，2027-03-01 10:00 (Asia/Shanghai)");
  EXPECT_TRUE(absl::StartsWith(zh.text, "Ana，您好：\n\n您对 TEM 2100 的预约 b1 已确认。")) << zh.text;
  EXPECT_TRUE(absl::StrContains(zh.text, "退订此类邮件：https://console.test/unsubscribe?token=t"));
}

TEST(RenderTest, LinksGoToTheConsolesPages) {
  Notice n;
  n.kind = v1::INVOICE_ISSUED;
  n.resource = "invoices/inv-7";
  EXPECT_EQ(ConsolePath(n), "#/billing/invoices/inv-7");
  n.kind = v1::QUOTE_ISSUED;
  n.resource = "serviceOrders/so-1";
  EXPECT_EQ(ConsolePath(n), "#/lab/orders/so-1");
  n.kind = v1::PAYMENT_RECEIVED;
  n.resource = "payments/p1";
  n.text["invoice"] = "invoices/inv-7";
  EXPECT_EQ(ConsolePath(n), "#/billing/invoices/inv-7");
  n.text["invoice"] = "";
  EXPECT_EQ(ConsolePath(n), "#/billing/statement");
  n.kind = v1::APPROVAL_REQUESTED;
  EXPECT_EQ(ConsolePath(n), "#/staff/approvals");
  n.kind = v1::LEASE_RETURN_DUE;
  EXPECT_EQ(ConsolePath(n), "#/lab/bookings");
}

// A mail's whole text as Wrap makes it: the greeting, the body, the link
// and the footer (a legal notice's, or the unsubscribe line).
std::string MailText(bool en, const std::string& body, const std::string& path, bool legal = false) {
  const std::string footer =
      legal ? (en ? "This is a required notice; it cannot be turned off." : "这是必要通知，无法退订。")
            : absl::StrCat(en ? "Unsubscribe from these mails: " : "退订此类邮件：", "https://console.test/unsubscribe?token=t");
  return absl::StrCat(en ? "Hello Ana,\n\n" : "Ana，您好：\n\n", body, "\n\n", en ? "Open in LabShare: " : "在 LabShare 中查看：",
                      "https://console.test/", path, "\n\n-- \nLabShare\n", footer, "\n");
}

// notify.proto "Messages": organisations and people a mail names by their
// display names in inventory, their ids when it has none; a subsidy pool
// (no organisation) by its id, and so is an invoice. PAYMENT_RECEIVED and
// ORDER_DISPUTED wrote "organizations/lab" before 81400c6; the approval's
// requester ("users/ana"), the settlement's payees ("organizations/b"),
// the low pool ("subsidyPools/p") and the paid invoice ("invoices/inv-7")
// were written as resource names until the audit of 2026-12-07.
TEST(RenderTest, MailsNameOrganisationsAndPeopleByTheirDisplayNames) {
  bl::BillingEvent e;
  e.mutable_header()->set_event_id("p1");
  auto* p = e.mutable_payment_recorded()->mutable_payment();
  p->set_name("payments/p1");
  p->set_payer("organizations/lab");
  p->set_payee("organizations/owner");
  p->set_invoice("invoices/inv-7");
  p->mutable_amount()->set_currency_code("CNY");
  p->mutable_amount()->set_amount_minor(500000);
  auto i = Interpret(Entry(e), {});
  ASSERT_TRUE(i.ok());
  ASSERT_EQ(i->notices.size(), 1u);  // to the payee's and the payer's billing admins
  RenderContext c = Context("en", "UTC");
  c.unsubscribe_url.clear();         // a legal notice
  c.names["payer"] = "Lab University";  // the payee has no display name
  RenderedMail m = Render(i->notices[0], c);
  EXPECT_EQ(m.text, MailText(true,
                             "A payment of 5,000.00 CNY from Lab University to owner was recorded (-).\n"
                             "Invoice: inv-7\nReference: ",
                             "#/billing/invoices/inv-7", /*legal=*/true));
  c.language = "zh-CN";
  EXPECT_EQ(Render(i->notices[0], c).text,
            MailText(false, "已记录 Lab University 向 owner 的付款 5,000.00 CNY（-）。\n发票：inv-7\n参考号：",
                     "#/billing/invoices/inv-7", /*legal=*/true));
  p->set_payer("subsidyPools/pool-1");
  i = Interpret(Entry(e), {});
  ASSERT_TRUE(i.ok());
  m = Render(i->notices[0], Context("en", "UTC"));
  EXPECT_TRUE(absl::StrContains(m.text, "from pool-1 to owner")) << m.text;

  bk::BookingEvent d;
  d.mutable_header()->set_event_id("d1");
  auto* so = d.mutable_service_order_report_disputed()->mutable_service_order();
  so->set_name("serviceOrders/so-1");
  so->set_instrument("instruments/tem");
  so->set_instrument_owner("organizations/owner");
  so->set_client_organization("organizations/lab");
  so->set_dispute_reason("blurred");
  auto di = Interpret(Entry(d), {});
  ASSERT_TRUE(di.ok());
  ASSERT_EQ(di->notices.size(), 1u);
  c = Context("en", "UTC");
  c.names["client"] = "Lab University";
  m = Render(di->notices[0], c);
  EXPECT_TRUE(absl::StrContains(m.text, "The client Lab University disputes")) << m.text;

  // APPROVAL_REQUESTED: the requester by their display name, else the id.
  bk::BookingEvent a;
  a.mutable_header()->set_event_id("a1");
  *a.mutable_booking_created()->mutable_booking() = OnSite(bk::Booking::PENDING_APPROVAL);
  a.mutable_booking_created()->mutable_booking()->set_purpose("grain boundaries");
  auto ai = Interpret(Entry(a), {});
  ASSERT_TRUE(ai.ok());
  ASSERT_EQ(ai->notices.size(), 1u);
  EXPECT_EQ(ai->notices[0].names, (std::map<std::string, std::string>{{"requester", "users/ana"}}));
  RenderContext en = Context("en", "UTC"), zh = Context("zh-CN", "Asia/Shanghai");
  en.names["requester"] = zh.names["requester"] = "Ana Li";
  m = Render(ai->notices[0], en);
  EXPECT_EQ(m.text, MailText(true,
                             "A booking of TEM 2100 waits for your approval.\nBooking: b1\nBy: Ana Li\n"
                             "Time: 2027-03-01 02:00 (UTC) - 2027-03-01 03:00 (UTC)\nPurpose: grain boundaries",
                             "#/staff/approvals"));
  EXPECT_EQ(Render(ai->notices[0], zh).text,
            MailText(false,
                     "一项 TEM 2100 的预约等待您审批。\n预约：b1\n申请人：Ana Li\n"
                     "时间：2027-03-01 10:00 (Asia/Shanghai) - 2027-03-01 11:00 (Asia/Shanghai)\n用途：grain boundaries",
                     "#/staff/approvals"));
  EXPECT_TRUE(absl::StrContains(Render(ai->notices[0], Context("en", "UTC")).text, "\nBy: ana\n"));

  // SETTLEMENT_TRANSFERS_DUE (a legal notice: whom to pay): every payee by
  // its display name, else its id, one line each in the event's order.
  bl::BillingEvent s;
  s.mutable_header()->set_event_id("s1");
  auto* st = s.mutable_settlement_computed()->mutable_settlement();
  st->set_name("settlements/2027-02");
  st->set_period("2027-02");
  for (const auto& [to, minor] : std::vector<std::pair<std::string, int64_t>>{
           {"organizations/b", 100}, {"organizations/c", 123456}}) {
    auto* t = st->add_transfers();
    t->set_from_organization("organizations/a");
    t->set_to_organization(to);
    t->mutable_amount()->set_currency_code("CNY");
    t->mutable_amount()->set_amount_minor(minor);
  }
  auto si = Interpret(Entry(s), {});
  ASSERT_TRUE(si.ok());
  ASSERT_EQ(si->notices.size(), 1u);
  EXPECT_EQ(si->notices[0].names,
            (std::map<std::string, std::string>{{"to_0", "organizations/b"}, {"to_1", "organizations/c"}}));
  en = Context("en", "UTC");
  zh = Context("zh-CN", "Asia/Shanghai");
  en.unsubscribe_url.clear();
  zh.unsubscribe_url.clear();
  en.names["to_0"] = "B Institute";  // c has no display name
  zh.names["to_0"] = "B 研究所";
  m = Render(si->notices[0], en);
  EXPECT_EQ(m.text, MailText(true,
                             "The settlement of 2027-02 was computed. Your organisation's transfers:\n"
                             "  -> B Institute: 1.00 CNY\n  -> c: 1,234.56 CNY\n",
                             "#/billing/settlements", /*legal=*/true));
  EXPECT_EQ(Render(si->notices[0], zh).text,
            MailText(false, "2027-02 的结算已完成。贵单位应付的转账：\n  -> B 研究所: 1.00 CNY\n  -> c: 1,234.56 CNY\n",
                     "#/billing/settlements", /*legal=*/true));

  // SUBSIDY_POOL_LOW: the pool by its id.
  InterpretOptions o;
  o.subsidy_pool_low_minor = 100000;
  bl::BillingEvent low;
  low.mutable_header()->set_event_id("l1");
  low.mutable_subsidy_applied()->mutable_line()->set_subsidy_pool("subsidyPools/sme-vouchers");
  low.mutable_subsidy_applied()->mutable_line()->mutable_amount()->set_amount_minor(5000);
  low.mutable_subsidy_applied()->mutable_pool_balance()->set_currency_code("CNY");
  low.mutable_subsidy_applied()->mutable_pool_balance()->set_amount_minor(99999);
  auto li = Interpret(Entry(low), o);
  ASSERT_TRUE(li.ok());
  ASSERT_EQ(li->notices.size(), 1u);
  m = Render(li->notices[0], Context("en", "UTC"));
  EXPECT_EQ(m.subject, "Subsidy pool low: sme-vouchers");
  EXPECT_EQ(m.text, MailText(true, "The balance of subsidy pool sme-vouchers fell to 999.99 CNY, below 1,000.00 CNY.",
                             "#/billing/subsidies"));
  m = Render(li->notices[0], Context("zh-CN", "UTC"));
  EXPECT_EQ(m.subject, "补贴资金池余额不足：sme-vouchers");
  EXPECT_EQ(m.text, MailText(false, "补贴资金池 sme-vouchers 的余额已降至 999.99 CNY，低于 1,000.00 CNY。",
                             "#/billing/subsidies"));
}

TEST(RenderTest, HtmlIsEscapedAndLegalNoticesSaySo) {
  Notice n;
  n.kind = v1::INVOICE_ISSUED;
  n.resource = "invoices/i1";
  n.text = {{"number", "<b>LS-1</b>"}, {"period", "2027-02"}, {"amount", FormatMoney(1234560, "CNY")}};
  RenderContext c = Context("en", "UTC");
  c.unsubscribe_url.clear();
  RenderedMail m = Render(n, c);
  EXPECT_EQ(m.subject, "Invoice <b>LS-1</b> issued (2027-02)");
  EXPECT_TRUE(absl::StrContains(m.html, "&lt;b&gt;LS-1&lt;/b&gt;"));
  EXPECT_FALSE(absl::StrContains(m.html, "<b>LS-1"));
  EXPECT_TRUE(absl::StrContains(m.text, "12,345.60 CNY due by -."));  // no due time: "-"
  EXPECT_TRUE(absl::StrContains(m.text, "This is a required notice; it cannot be turned off."));
}

// notify.proto: a digest carries no unsubscribe link of its own (DIGEST is
// not a kind one turns off; each part keeps its kind's link) and its footer
// links the notification settings; it is no "required notice" (it used to
// say so).
TEST(RenderTest, ADigestsFooterLinksTheSettingsAndItsPartsKeepTheirLinks) {
  bk::BookingEvent e;
  e.mutable_header()->set_event_id("e1");
  *e.mutable_booking_created()->mutable_booking() = OnSite(bk::Booking::CONFIRMED);
  const RenderedMail part = Render(Interpret(Entry(e), {})->notices[0], Context("en", "UTC"));
  for (const std::string lang : {"en", "zh-CN"}) {
    RenderContext c = Context(lang, "UTC");
    c.unsubscribe_url.clear();  // as the sender renders a digest
    const RenderedMail d = RenderDigest({part}, c);
    const std::string settings = "https://console.test/#/settings/notifications";
    EXPECT_EQ(DigestSettingsUrl("https://console.test"), settings);
    EXPECT_TRUE(absl::StrContains(d.text, settings)) << d.text;
    EXPECT_TRUE(absl::StrContains(d.html, absl::StrCat("<a href=\"", settings, "\">"))) << d.html;
    EXPECT_FALSE(absl::StrContains(d.text, "required notice")) << d.text;
    EXPECT_FALSE(absl::StrContains(d.text, "必要通知")) << d.text;
    // The part's own unsubscribe link is in the digest.
    EXPECT_TRUE(absl::StrContains(d.text, "Unsubscribe from these mails: https://console.test/unsubscribe?token=t"))
        << d.text;
  }
  EXPECT_TRUE(absl::StrContains(RenderDigest({part}, Context("en", "UTC")).text,
                                "You get these notifications as a daily digest."));
}

// ------------------------------------------------------------ kinds of 2026-12-07 (notify.proto)

bk::BookingEvent Cancelled(const std::string& by, const std::string& by_org, bk::Booking::CancellationInitiator who) {
  bk::BookingEvent e;
  e.mutable_header()->set_event_id("x1");
  e.mutable_header()->set_actor(by);
  e.mutable_header()->set_actor_organization(by_org);
  auto* c = e.mutable_booking_cancelled();
  *c->mutable_booking() = OnSite(bk::Booking::CANCELLED);
  c->mutable_booking()->set_payer_organization("organizations/lab");
  c->mutable_booking()->mutable_cancellation()->set_cancelled_by(by);
  c->mutable_booking()->mutable_cancellation()->set_initiator(who);
  c->mutable_booking()->mutable_cancellation()->set_reason("magnet quench");
  c->set_initiator(who);
  return e;
}

// BOOKING_CANCELLED: the user of an ON_SITE or JOINT_RESEARCH booking
// someone else cancelled, told who (role and organisation) and why; not
// their own cancellation, not an outage's (BOOKING_CANCELLED_BY_OUTAGE).
TEST(InterpretTest, ABookingCancelledBySomeoneElseTellsItsUserWhoAndWhy) {
  struct Case {
    std::string by, org;
    bk::Booking::CancellationInitiator initiator;
    std::string role, by_org;  // empty role: no mail
  };
  const Case cases[] = {
      {"users/staff1", "organizations/owner", bk::Booking::OWNER_STAFF, kByStaff, "organizations/owner"},
      {"users/op", "organizations/operator", bk::Booking::OWNER_STAFF, kByStaff, "organizations/operator"},
      {"users/root", "organizations/owner", bk::Booking::PLATFORM_ADMIN, kByAdmin, ""},
      {"users/billadm", "organizations/lab", bk::Booking::BOOKER, kByBillingAdmin, "organizations/lab"},
      {"users/ana", "organizations/lab", bk::Booking::BOOKER, "", ""},        // her own
      {"users/ana", "organizations/owner", bk::Booking::OWNER_STAFF, "", ""},  // staff's own booking
      {"", "", bk::Booking::BOOKER, "", ""},                                   // nobody says who
      {"users/staff1", "organizations/owner", bk::Booking::CANCELLATION_INITIATOR_UNSPECIFIED, "", ""},
  };
  for (const Case& c : cases) {
    auto i = Interpret(Entry(Cancelled(c.by, c.org, c.initiator)), {});
    ASSERT_TRUE(i.ok());
    EXPECT_EQ(i->unschedule, std::vector<std::string>{"BOOKING_REMINDER|bookings/b1"});
    if (c.role.empty()) {
      EXPECT_TRUE(i->notices.empty()) << c.by << " " << c.initiator;
      continue;
    }
    ASSERT_EQ(i->notices.size(), 1u) << c.by;
    const Notice& n = i->notices[0];
    EXPECT_EQ(n.kind, v1::BOOKING_CANCELLED);
    EXPECT_EQ(n.users, std::vector<std::string>{"users/ana"});
    EXPECT_TRUE(n.org_roles.empty());
    EXPECT_EQ(n.text.at("by_role"), c.role) << c.by;
    EXPECT_EQ(n.names.count("by_org") ? n.names.at("by_org") : "", c.by_org) << c.by;
    EXPECT_EQ(n.text.at("reason"), "magnet quench");
    EXPECT_EQ(n.variant, "");
    EXPECT_TRUE(n.by_actor.empty()) << "the initiator says the role";
  }
  // Late (the billing admin's side): said so.
  bk::BookingEvent late = Cancelled("users/billadm", "organizations/lab", bk::Booking::BOOKER);
  late.mutable_booking_cancelled()->set_late_cancellation(true);
  EXPECT_EQ(Interpret(Entry(late), {})->notices.at(0).variant, "late");
  // Joint research too; leases and service runs have their own kinds.
  bk::BookingEvent joint = Cancelled("users/staff1", "organizations/owner", bk::Booking::OWNER_STAFF);
  joint.mutable_booking_cancelled()->mutable_booking()->set_mode(tv::JOINT_RESEARCH);
  EXPECT_EQ(Interpret(Entry(joint), {})->notices.size(), 1u);
  for (tv::SharingMode mode : {tv::LEASE, tv::TECHNICAL_SERVICE}) {
    bk::BookingEvent other = Cancelled("users/staff1", "organizations/owner", bk::Booking::OWNER_STAFF);
    other.mutable_booking_cancelled()->mutable_booking()->set_mode(mode);
    EXPECT_TRUE(Interpret(Entry(other), {})->notices.empty()) << mode;
  }
  // An outage: its own kind only (whoever the event's actor is).
  bk::BookingEvent outage = Cancelled("services/booking", "", bk::Booking::MAINTENANCE_OUTAGE);
  outage.mutable_booking_cancelled()->set_cancelled_by_outage(true);
  outage.mutable_booking_cancelled()->mutable_booking()->set_cancelled_by_outage(true);
  auto i = Interpret(Entry(outage), {});
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].kind, v1::BOOKING_CANCELLED_BY_OUTAGE);
  // The sweep's cancellation of a booking whose instrument was out of
  // service (cancelled_by_outage, no window): the same.
  outage.mutable_booking_cancelled()->clear_maintenance_window();
  i = Interpret(Entry(outage), {});
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].kind, v1::BOOKING_CANCELLED_BY_OUTAGE);
}

bk::Lease AnaLease() {
  bk::Lease l;
  l.set_name("leases/l1");
  l.set_instrument("instruments/afm");
  l.set_instrument_owner("organizations/owner");
  l.set_lessee_organization("organizations/lab");
  l.set_contact_user("users/ana");
  *l.mutable_term()->mutable_start_time() = ToProto(kStart);
  *l.mutable_term()->mutable_end_time() = ToProto(kStart + absl::Hours(48));
  return l;
}

// LEASE_REJECTED and LEASE_CANCELLED: the contact user, with the reason;
// not for their own cancellation; an outage's and the sweep's expiry say
// so.
TEST(InterpretTest, ALeaseRejectedOrCancelledByOthersTellsItsContact) {
  bk::BookingEvent r;
  r.mutable_header()->set_event_id("r1");
  r.mutable_header()->set_actor("users/staff1");
  r.mutable_header()->set_actor_organization("organizations/owner");
  *r.mutable_lease_rejected()->mutable_lease() = AnaLease();
  r.mutable_lease_rejected()->set_reason("booked for calibration");
  auto i = Interpret(Entry(r), {});
  ASSERT_TRUE(i.ok());
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].kind, v1::LEASE_REJECTED);
  EXPECT_EQ(i->notices[0].users, std::vector<std::string>{"users/ana"});
  EXPECT_EQ(i->notices[0].text.at("reason"), "booked for calibration");
  EXPECT_EQ(i->notices[0].times.at("start"), kStart);
  EXPECT_EQ(i->unschedule, (std::vector<std::string>{"LEASE_HANDOVER_DUE|leases/l1", "LEASE_RETURN_DUE|leases/l1"}));

  auto cancelled = [](const std::string& actor, const std::string& org) {
    bk::BookingEvent e;
    e.mutable_header()->set_event_id("c1");
    e.mutable_header()->set_actor(actor);
    e.mutable_header()->set_actor_organization(org);
    *e.mutable_lease_cancelled()->mutable_lease() = AnaLease();
    e.mutable_lease_cancelled()->mutable_lease()->set_state(bk::Lease::CANCELLED);
    e.mutable_lease_cancelled()->set_reason("lent to another project");
    return e;
  };
  // Owner staff: the contact, who it was asked of inventory (by_actor).
  i = Interpret(Entry(cancelled("users/staff1", "organizations/owner")), {});
  ASSERT_EQ(i->notices.size(), 1u);
  Notice n = i->notices[0];
  EXPECT_EQ(n.kind, v1::LEASE_CANCELLED);
  EXPECT_EQ(n.users, std::vector<std::string>{"users/ana"});
  EXPECT_EQ(n.variant, "");
  EXPECT_EQ(n.by_actor, "users/staff1");
  EXPECT_EQ(n.text.at("by_role"), kByStaff);  // until inventory says otherwise
  EXPECT_EQ(n.names.at("by_org"), "organizations/owner");
  EXPECT_EQ(n.text.at("reason"), "lent to another project");
  // The lessee's billing admin: a person of the lessee (inventory says more).
  n = Interpret(Entry(cancelled("users/billadm", "organizations/lab")), {})->notices.at(0);
  EXPECT_EQ(n.text.at("by_role"), kByMember);
  EXPECT_EQ(n.names.at("by_org"), "organizations/lab");
  // The contact user's own: no mail; the reminders go all the same.
  i = Interpret(Entry(cancelled("users/ana", "organizations/lab")), {});
  EXPECT_TRUE(i->notices.empty());
  EXPECT_EQ(i->unschedule.size(), 2u);
  // The sweep: expired.
  bk::BookingEvent sweep = cancelled("services/booking", "");
  sweep.mutable_lease_cancelled()->set_reason("not approved before its term (handover buffer included) began");
  n = Interpret(Entry(sweep), {})->notices.at(0);
  EXPECT_EQ(n.variant, "expired");
  EXPECT_TRUE(n.by_actor.empty());
  // An outage, with its window.
  bk::BookingEvent outage = cancelled("services/booking", "");
  outage.mutable_lease_cancelled()->set_cancelled_by_outage(true);
  outage.mutable_lease_cancelled()->set_maintenance_window("instruments/afm/maintenanceWindows/w1");
  outage.mutable_lease_cancelled()->set_reason("power cut");
  n = Interpret(Entry(outage), {})->notices.at(0);
  EXPECT_EQ(n.variant, "outage");
  EXPECT_EQ(n.maintenance_window, "instruments/afm/maintenanceWindows/w1");
  EXPECT_EQ(n.text.at("reason"), "power cut");
}

bk::ServiceOrder AnaOrder() {
  bk::ServiceOrder so;
  so.set_name("serviceOrders/so1");
  so.set_instrument("instruments/svc");
  so.set_instrument_owner("organizations/owner");
  so.set_client_organization("organizations/lab");
  so.set_requester("users/ana");
  so.set_service_entry_id("imaging");
  so.set_sample_count(3);
  so.set_sample_description("three thin films");
  // A quote billing can price: 3 x 296.00 = 888.00 CNY.
  so.mutable_quote()->mutable_per_sample_fee()->set_currency_code("CNY");
  so.mutable_quote()->mutable_per_sample_fee()->set_amount_minor(29600);
  so.mutable_quote()->mutable_total()->set_currency_code("CNY");
  so.mutable_quote()->mutable_total()->set_amount_minor(88800);
  return so;
}

bk::BookingEvent OrderEvent(const std::string& actor, const std::string& org) {
  bk::BookingEvent e;
  e.mutable_header()->set_event_id("o1");
  e.mutable_header()->set_actor(actor);
  e.mutable_header()->set_actor_organization(org);
  return e;
}

// ORDER_RECEIVED and QUOTE_ACCEPTED: the owner's staff; SERVICE_SCHEDULED:
// the requester (a reschedule says it moved); ORDER_CANCELLED: the
// requester when someone else cancelled the order or unscheduled its run,
// the owner's staff when the client's side cancelled it.
TEST(InterpretTest, OrdersTellStaffOfNewOrdersAndTheRequesterOfRunsAndCancellations) {
  const std::vector<std::pair<std::string, Role>> staff = {{"organizations/owner", Role::kFacilityStaff}};
  bk::BookingEvent created = OrderEvent("users/ana", "organizations/lab");
  *created.mutable_service_order_created()->mutable_service_order() = AnaOrder();
  auto i = Interpret(Entry(created), {});
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].kind, v1::ORDER_RECEIVED);
  EXPECT_TRUE(i->notices[0].users.empty());
  EXPECT_EQ(i->notices[0].org_roles, staff);
  EXPECT_EQ(i->notices[0].names.at("client"), "organizations/lab");
  EXPECT_EQ(i->notices[0].names.at("requester"), "users/ana");
  EXPECT_EQ(i->notices[0].text.at("samples"), "3");

  bk::BookingEvent accepted = OrderEvent("users/ana", "organizations/lab");
  *accepted.mutable_service_order_quote_accepted()->mutable_service_order() = AnaOrder();
  i = Interpret(Entry(accepted), {});
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].kind, v1::QUOTE_ACCEPTED);
  EXPECT_EQ(i->notices[0].org_roles, staff);
  EXPECT_EQ(i->notices[0].text.at("amount"), "888.00 CNY");

  bk::BookingEvent scheduled = OrderEvent("users/staff1", "organizations/owner");
  auto* so = scheduled.mutable_service_order_scheduled()->mutable_service_order();
  *so = AnaOrder();
  *so->mutable_scheduled_interval()->mutable_start_time() = ToProto(kStart);
  *so->mutable_scheduled_interval()->mutable_end_time() = ToProto(kStart + absl::Hours(2));
  i = Interpret(Entry(scheduled), {});
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].kind, v1::SERVICE_SCHEDULED);
  EXPECT_EQ(i->notices[0].users, std::vector<std::string>{"users/ana"});
  EXPECT_EQ(i->notices[0].times.at("end"), kStart + absl::Hours(2));
  EXPECT_EQ(i->notices[0].variant, "");
  scheduled.mutable_service_order_scheduled()->set_previous_booking("bookings/run-1");
  EXPECT_EQ(Interpret(Entry(scheduled), {})->notices.at(0).variant, "moved");

  // The run unscheduled: by staff (who is asked of inventory), by an outage.
  bk::BookingEvent unscheduled = OrderEvent("users/staff2", "organizations/owner");
  *unscheduled.mutable_service_order_unscheduled()->mutable_service_order() = AnaOrder();
  Notice n = Interpret(Entry(unscheduled), {})->notices.at(0);
  EXPECT_EQ(n.kind, v1::ORDER_CANCELLED);
  EXPECT_EQ(n.users, std::vector<std::string>{"users/ana"});
  EXPECT_EQ(n.variant, "run");
  EXPECT_EQ(n.by_actor, "users/staff2");
  unscheduled.mutable_service_order_unscheduled()->set_cancelled_by_outage(true);
  unscheduled.mutable_header()->set_actor("services/booking");
  n = Interpret(Entry(unscheduled), {})->notices.at(0);
  EXPECT_EQ(n.variant, "run_outage");
  EXPECT_TRUE(n.by_actor.empty());

  // Late: as booking cancels late, the rule's fee (25 %) pinned on the order.
  auto cancelled = [](const std::string& actor, const std::string& org, bool late) {
    bk::BookingEvent e = OrderEvent(actor, org);
    *e.mutable_service_order_cancelled()->mutable_service_order() = AnaOrder();
    e.mutable_service_order_cancelled()->set_reason("no capacity");
    e.mutable_service_order_cancelled()->set_late_cancellation(late);
    if (late) {
      e.mutable_service_order_cancelled()->mutable_service_order()->set_late_cancellation(true);
      e.mutable_service_order_cancelled()->mutable_service_order()->set_late_cancel_fee_bps(2500);
    }
    return e;
  };
  // Owner staff: the requester only.
  i = Interpret(Entry(cancelled("users/staff1", "organizations/owner", false)), {});
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].users, std::vector<std::string>{"users/ana"});
  EXPECT_TRUE(i->notices[0].org_roles.empty());
  EXPECT_EQ(i->notices[0].variant, "");
  EXPECT_EQ(i->notices[0].text.at("reason"), "no capacity");
  // The requester: the owner's staff only.
  i = Interpret(Entry(cancelled("users/ana", "organizations/lab", false)), {});
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_TRUE(i->notices[0].users.empty());
  EXPECT_EQ(i->notices[0].org_roles, staff);
  EXPECT_EQ(i->notices[0].variant, "client");
  EXPECT_EQ(i->notices[0].discriminator, "client");
  // Another person of the client (its billing admin), late: both, with
  // the fee billing charges (25 % of 888.00 CNY).
  i = Interpret(Entry(cancelled("users/billadm", "organizations/lab", true)), {});
  ASSERT_EQ(i->notices.size(), 2u);
  EXPECT_EQ(i->notices[0].users, std::vector<std::string>{"users/ana"});
  EXPECT_EQ(i->notices[0].variant, "late");
  EXPECT_EQ(i->notices[0].text.count("fee") ? i->notices[0].text.at("fee") : "", "222.00 CNY");
  EXPECT_EQ(i->notices[1].org_roles, staff);
  EXPECT_EQ(i->notices[1].variant, "client_late");
  EXPECT_EQ(i->notices[1].text.count("fee") ? i->notices[1].text.at("fee") : "", "222.00 CNY");
  EXPECT_NE(i->notices[0].discriminator, i->notices[1].discriminator);
  // What billing charges decides the text (billing_manager.cc,
  // ServiceOrderCancelled): nothing for a pinned fee of 0 bps, an order
  // without a quote, or a fee that rounds to 0 minor units; unknown for an
  // order cancelled before the fee was pinned (billing reads the rule
  // then) or a quote billing cannot price.
  struct FeeCase {
    std::string what;
    std::function<void(bk::ServiceOrder*)> change;
    std::string suffix, fee;
  };
  const std::vector<FeeCase> fee_cases = {
      {"0 bps pinned", [](bk::ServiceOrder* o) { o->set_late_cancel_fee_bps(0); }, "_no_fee", ""},
      {"no quote", [](bk::ServiceOrder* o) { o->clear_quote(); }, "_no_fee", ""},
      {"rounds to 0",
       [](bk::ServiceOrder* o) {
         o->set_late_cancel_fee_bps(1);  // 0.01 % of 1.50 CNY: 0.015 fen
         o->mutable_quote()->mutable_per_sample_fee()->set_amount_minor(50);
         o->mutable_quote()->mutable_total()->set_amount_minor(150);
       },
       "_no_fee", ""},
      {"rounds half up",
       [](bk::ServiceOrder* o) { o->set_late_cancel_fee_bps(1); },  // 0.01 % of 888.00 CNY: 8.88 fen
       "", "0.09 CNY"},
      {"not pinned (an older order)", [](bk::ServiceOrder* o) { o->clear_late_cancel_fee_bps(); }, "_fee_unknown", ""},
      {"a quote billing refuses (total mismatch)",
       [](bk::ServiceOrder* o) { o->mutable_quote()->mutable_total()->set_amount_minor(88801); }, "_fee_unknown", ""},
  };
  for (const FeeCase& fc : fee_cases) {
    bk::BookingEvent e = cancelled("users/billadm", "organizations/lab", true);
    fc.change(e.mutable_service_order_cancelled()->mutable_service_order());
    i = Interpret(Entry(e), {});
    ASSERT_EQ(i->notices.size(), 2u) << fc.what;
    EXPECT_EQ(i->notices[0].variant, "late" + fc.suffix) << fc.what;
    EXPECT_EQ(i->notices[1].variant, "client_late" + fc.suffix) << fc.what;
    for (const Notice& n : i->notices) {
      EXPECT_EQ(n.text.count("fee") ? n.text.at("fee") : "", fc.fee) << fc.what;
    }
  }
  // Not late on the event (billing charges only a late ServiceOrderCancelled).
  {
    bk::BookingEvent e = cancelled("users/billadm", "organizations/lab", true);
    e.mutable_service_order_cancelled()->set_late_cancellation(false);
    i = Interpret(Entry(e), {});
    ASSERT_EQ(i->notices.size(), 2u);
    EXPECT_EQ(i->notices[0].variant, "late_no_fee");
    EXPECT_EQ(i->notices[1].variant, "client_late_no_fee");
  }
  // An administrator: the requester.
  i = Interpret(Entry(cancelled("users/root", "", false)), {});
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].users, std::vector<std::string>{"users/ana"});
  EXPECT_EQ(i->notices[0].text.at("by_role"), kByAdmin);
}

TEST(InterpretTest, WhoDidItIsTheStrongestRoleInventoryHas) {
  EXPECT_EQ(ByRole({Role::kLabUser, Role::kConsortiumAdmin}), kByAdmin);
  EXPECT_EQ(ByRole({Role::kMemberBillingAdmin, Role::kFacilityStaff}), kByStaff);
  EXPECT_EQ(ByRole({Role::kLabUser, Role::kMemberBillingAdmin}), kByBillingAdmin);
  EXPECT_EQ(ByRole({Role::kLabUser}), kByMember);
  EXPECT_EQ(ByRole({}), kByMember);
}

// Every new kind in both languages, in the recipient's zone, with names by
// their display names (else ids), who did it, the reason (or that none was
// given), the console link and the unsubscribe line.
TEST(RenderTest, TheNewKindsInBothLanguages) {
  RenderContext en = Context("en", "Europe/Berlin");
  RenderContext zh = Context("zh-CN", "Asia/Shanghai");
  for (RenderContext* c : {&en, &zh}) {
    c->names = {{"by_org", c == &en ? "Owner Institute" : "所有者研究所"}, {"client", "Lab University"},
                {"requester", "Dr. Ana"}};
  }
  struct Want {
    std::string subject;
    std::vector<std::string> facts;
  };
  auto check = [&](const Notice& n, const Want& want_en, const Want& want_zh) {
    for (bool english : {true, false}) {
      const RenderedMail m = Render(n, english ? en : zh);
      const Want& w = english ? want_en : want_zh;
      EXPECT_EQ(m.subject, w.subject) << KindName(n.kind) << "/" << n.variant;
      for (const std::string& fact : w.facts) {
        EXPECT_TRUE(absl::StrContains(m.text, fact)) << KindName(n.kind) << "/" << n.variant << ": " << fact
                                                      << "\n" << m.text;
      }
      EXPECT_TRUE(absl::StrContains(m.text, english ? "Unsubscribe from these mails: https://console.test/unsubscribe?token=t"
                                                    : "退订此类邮件：https://console.test/unsubscribe?token=t"))
          << m.text;
      EXPECT_FALSE(absl::StrContains(m.text, "{")) << m.text;
      EXPECT_FALSE(absl::StrContains(m.text, "organizations/")) << m.text;
    }
  };
  const std::string berlin = "2027-03-01 03:00 (Europe/Berlin)", berlin_end = "2027-03-01 04:00 (Europe/Berlin)";
  const std::string shanghai = "2027-03-01 10:00 (Asia/Shanghai)";

  Notice b = Interpret(Entry(Cancelled("users/staff1", "organizations/owner", bk::Booking::OWNER_STAFF)), {})
                 ->notices.at(0);
  check(b,
        {"Booking cancelled: TEM 2100, " + berlin,
         {"Your booking b1 of TEM 2100 (" + berlin + " - " + berlin_end +
              ") was cancelled by staff of Owner Institute.\nReason: magnet quench\nYou will not be charged.",
          "Open in LabShare: https://console.test/#/lab/bookings"}},
        {"预约已被取消：TEM 2100，" + shanghai,
         {"已被 所有者研究所 的工作人员 取消。\n原因：magnet quench\n不收取费用。", "在 LabShare 中查看：https://console.test/#/lab/bookings"}});
  bk::BookingEvent late = Cancelled("users/billadm", "organizations/lab", bk::Booking::BOOKER);
  late.mutable_booking_cancelled()->set_late_cancellation(true);
  late.mutable_booking_cancelled()->mutable_booking()->mutable_cancellation()->clear_reason();
  Notice bl = Interpret(Entry(late), {})->notices.at(0);
  bl.names["by_org"] = "organizations/lab";  // no display name given: its id
  RenderContext en_ids = en, zh_ids = zh;
  en_ids.names.erase("by_org");
  zh_ids.names.erase("by_org");
  EXPECT_TRUE(absl::StrContains(Render(bl, en_ids).text,
                                "was cancelled by a billing administrator of lab, later than the instrument's "
                                "cancellation notice.\nReason: none given\nA late-cancellation fee may apply."))
      << Render(bl, en_ids).text;
  EXPECT_TRUE(absl::StrContains(Render(bl, zh_ids).text, "已被 lab 的财务管理员 取消，晚于仪器规定的取消期限。\n原因：未说明\n可能收取逾期取消费。"))
      << Render(bl, zh_ids).text;
  Notice admin = Interpret(Entry(Cancelled("users/root", "organizations/owner", bk::Booking::PLATFORM_ADMIN)), {})
                     ->notices.at(0);
  EXPECT_TRUE(absl::StrContains(Render(admin, en).text, "was cancelled by a consortium administrator.")) << Render(admin, en).text;
  EXPECT_TRUE(absl::StrContains(Render(admin, zh).text, "已被 联盟管理员 取消。")) << Render(admin, zh).text;

  Notice lr;
  lr.kind = v1::LEASE_REJECTED;
  lr.resource = "leases/l1";
  lr.text = {{"lease", "l1"}, {"reason", "booked for calibration"}};
  lr.times = {{"start", kStart}, {"end", kStart + absl::Hours(1)}};
  check(lr,
        {"Lease rejected: TEM 2100",
         {"Your lease request l1 of TEM 2100 was rejected.\nTerm: " + berlin + " - " + berlin_end +
              "\nReason: booked for calibration"}},
        {"租赁被拒绝：TEM 2100", {"您对 TEM 2100 的租赁申请 l1 未获批准。", "原因：booked for calibration"}});
  Notice lc = lr;
  lc.kind = v1::LEASE_CANCELLED;
  lc.text = {{"lease", "l1"}, {"reason", "lent out"}, {"by_role", kByStaff}};
  lc.names = {{"by_org", "organizations/owner"}};
  check(lc,
        {"Lease cancelled: TEM 2100",
         {"Your lease l1 of TEM 2100 was cancelled by staff of Owner Institute.", "Reason: lent out",
          "Nothing is charged."}},
        {"租赁已取消：TEM 2100", {"您对 TEM 2100 的租赁 l1 已被 所有者研究所 的工作人员 取消。", "原因：lent out", "不收取任何费用。"}});
  lc.variant = "expired";
  check(lc,
        {"Lease request expired: TEM 2100", {"was not approved before its term (handover included) began"}},
        {"租赁申请已过期：TEM 2100", {"在租期（含交接时间）开始前未获批准，已自动取消。"}});
  lc.variant = "outage";
  for (RenderContext* c : {&en, &zh}) {
    c->has_window = true;
    c->window_start = kStart - absl::Hours(1);
    c->window_end = kStart + absl::Hours(5);
  }
  check(lc,
        {"Lease cancelled by an outage: TEM 2100",
         {"was cancelled because the instrument is unavailable 2027-03-01 02:00 (Europe/Berlin) - 2027-03-01 08:00 "
          "(Europe/Berlin).\nReason: lent out"}},
        {"租赁因停机取消：TEM 2100", {"由于仪器在 2027-03-01 09:00 (Asia/Shanghai) - 2027-03-01 15:00 (Asia/Shanghai) 停机"}});

  bk::BookingEvent created = OrderEvent("users/ana", "organizations/lab");
  *created.mutable_service_order_created()->mutable_service_order() = AnaOrder();
  Notice rcv = Interpret(Entry(created), {})->notices.at(0);
  check(rcv,
        {"New service order: so1 on TEM 2100",
         {"A service order on TEM 2100 waits for your quote.\nOrder: so1\nService: imaging\nClient: Lab University\n"
          "Requester: Dr. Ana\nSamples: 3\nDescription: three thin films\nWanted by: -",
          "Open in LabShare: https://console.test/#/staff/orders"}},
        {"新技术服务订单：so1（TEM 2100）", {"客户：Lab University\n申请人：Dr. Ana\n样品数：3"}});
  bk::BookingEvent accepted = OrderEvent("users/ana", "organizations/lab");
  *accepted.mutable_service_order_quote_accepted()->mutable_service_order() = AnaOrder();
  check(Interpret(Entry(accepted), {})->notices.at(0),
        {"Quote accepted: order so1",
         {"The client Lab University accepted the quote for service order so1 on TEM 2100: 888.00 CNY.\n"
          "Requester: Dr. Ana\nSamples to receive: 3"}},
        {"报价已接受：订单 so1", {"客户 Lab University 已接受 TEM 2100 上技术服务订单 so1 的报价：888.00 CNY。"}});
  bk::BookingEvent scheduled = OrderEvent("users/staff1", "organizations/owner");
  auto* so = scheduled.mutable_service_order_scheduled()->mutable_service_order();
  *so = AnaOrder();
  *so->mutable_scheduled_interval()->mutable_start_time() = ToProto(kStart);
  *so->mutable_scheduled_interval()->mutable_end_time() = ToProto(kStart + absl::Hours(1));
  check(Interpret(Entry(scheduled), {})->notices.at(0),
        {"Service run scheduled: order so1, " + berlin,
         {"The run of your service order so1 on TEM 2100 is scheduled.\nTime: " + berlin + " - " + berlin_end,
          "Open in LabShare: https://console.test/#/lab/orders/so1"}},
        {"技术服务已排期：订单 so1，" + shanghai, {"您在 TEM 2100 上的技术服务订单 so1 已排期。"}});
  scheduled.mutable_service_order_scheduled()->set_previous_booking("bookings/run-1");
  check(Interpret(Entry(scheduled), {})->notices.at(0),
        {"Service run moved: order so1, " + berlin, {"was moved.\nNew time: " + berlin}},
        {"技术服务已改期：订单 so1，" + shanghai, {"已改期。\n新时间：" + shanghai}});

  bk::BookingEvent cancelled = OrderEvent("users/staff1", "organizations/owner");
  *cancelled.mutable_service_order_cancelled()->mutable_service_order() = AnaOrder();
  cancelled.mutable_service_order_cancelled()->set_reason("no capacity");
  check(Interpret(Entry(cancelled), {})->notices.at(0),
        {"Service order cancelled: so1",
         {"Your service order so1 on TEM 2100 was cancelled by staff of Owner Institute.\nReason: no capacity",
          "https://console.test/#/lab/orders/so1"}},
        {"技术服务订单已取消：so1", {"已被 所有者研究所 的工作人员 取消。\n原因：no capacity"}});
  cancelled.mutable_header()->set_actor("users/ana");
  cancelled.mutable_header()->set_actor_organization("organizations/lab");
  Notice to_staff = Interpret(Entry(cancelled), {})->notices.at(0);
  to_staff.names["by_org"] = "organizations/lab";
  for (RenderContext* c : {&en, &zh}) c->names["by_org"] = "Lab University";
  check(to_staff,
        {"Service order cancelled by the client: so1",
         {"The client Lab University cancelled service order so1 on TEM 2100.\nRequester: Dr. Ana\n"
          "Cancelled by: a user of Lab University\nReason: no capacity",
          "Open in LabShare: https://console.test/#/staff/orders"}},
        {"客户取消了技术服务订单：so1", {"客户 Lab University 取消了 TEM 2100 上的技术服务订单 so1。", "取消人：Lab University 的用户"}});
  bk::BookingEvent unscheduled = OrderEvent("services/booking", "");
  *unscheduled.mutable_service_order_unscheduled()->mutable_service_order() = AnaOrder();
  unscheduled.mutable_service_order_unscheduled()->set_cancelled_by_outage(true);
  check(Interpret(Entry(unscheduled), {})->notices.at(0),
        {"Service run cancelled by an outage: order so1",
         {"The scheduled run of your service order so1 on TEM 2100 was cancelled because the instrument is out of "
          "service. The order stays open and waits to be scheduled again."}},
        {"技术服务排期因停机取消：订单 so1", {"由于仪器停机", "订单仍有效，等待重新排期。"}});
  unscheduled.mutable_service_order_unscheduled()->set_cancelled_by_outage(false);
  unscheduled.mutable_header()->set_actor("users/staff2");
  unscheduled.mutable_header()->set_actor_organization("organizations/owner");
  for (RenderContext* c : {&en, &zh}) c->names["by_org"] = "Owner Institute";
  check(Interpret(Entry(unscheduled), {})->notices.at(0),
        {"Service run cancelled: order so1", {"was cancelled by staff of Owner Institute. The order stays open"}},
        {"技术服务排期已取消：订单 so1", {"的排期已被 Owner Institute 的工作人员 取消。"}});
}

// ORDER_CANCELLED, late: the requester's and the staff's mails say the fee
// billing charges, exactly (the fee pinned on the order of the quote's
// total, billing's rounding), that none is charged (a pinned fee of 0),
// or that one may apply (an order from before the fee was pinned). On the
// code before, every late cancellation said "The late-cancellation fee
// applies" (将收取逾期取消费), also when billing charged nothing.
TEST(RenderTest, ALateOrderCancellationSaysTheFeeBillingCharges) {
  bk::BookingEvent e = OrderEvent("users/billadm", "organizations/lab");
  auto* c = e.mutable_service_order_cancelled();
  *c->mutable_service_order() = AnaOrder();
  c->set_reason("budget frozen");
  c->set_late_cancellation(true);
  c->mutable_service_order()->set_late_cancellation(true);
  c->mutable_service_order()->set_late_cancel_fee_bps(2500);
  RenderContext en = Context("en", "UTC"), zh = Context("zh-CN", "Asia/Shanghai");
  for (RenderContext* r : {&en, &zh}) {
    r->names = {{"by_org", "Lab University"}, {"client", "Lab University"}, {"requester", "Dr. Ana"}};
  }
  struct Case {
    std::function<void(bk::ServiceOrder*)> change;
    std::string en, zh;  // the last line
  };
  const std::vector<Case> cases = {
      {[](bk::ServiceOrder*) {}, "A late-cancellation fee of 222.00 CNY is charged.", "将收取逾期取消费 222.00 CNY。"},
      {[](bk::ServiceOrder* o) { o->set_late_cancel_fee_bps(0); }, "No late-cancellation fee is charged.",
       "不收取逾期取消费。"},
      {[](bk::ServiceOrder* o) { o->clear_late_cancel_fee_bps(); }, "A late-cancellation fee may apply.",
       "可能收取逾期取消费。"},
  };
  for (const Case& k : cases) {
    bk::BookingEvent ev = e;
    k.change(ev.mutable_service_order_cancelled()->mutable_service_order());
    auto i = Interpret(Entry(ev), {});
    ASSERT_TRUE(i.ok());
    ASSERT_EQ(i->notices.size(), 2u);
    const Notice& to_requester = i->notices[0];
    Notice to_staff = i->notices[1];
    to_staff.text["by_role"] = kByBillingAdmin;  // as inventory has the actor
    RenderedMail m = Render(to_requester, en);
    EXPECT_EQ(m.text, MailText(true,
                               "Your service order so1 on TEM 2100 was cancelled by a user of Lab University, later "
                               "than the instrument's cancellation notice before its run.\nReason: budget frozen\n" +
                                   k.en,
                               "#/lab/orders/so1"));
    m = Render(to_requester, zh);
    EXPECT_EQ(m.text, MailText(false,
                               "您在 TEM 2100 上的技术服务订单 so1 已被 Lab University 的用户 取消，晚于运行前的取消期限。\n"
                               "原因：budget frozen\n" + k.zh,
                               "#/lab/orders/so1"));
    m = Render(to_staff, en);
    EXPECT_EQ(m.text, MailText(true,
                               "The client Lab University cancelled service order so1 on TEM 2100, later than the "
                               "cancellation notice before its run.\nRequester: Dr. Ana\nCancelled by: a billing "
                               "administrator of Lab University\nReason: budget frozen\n" + k.en,
                               "#/staff/orders"));
    m = Render(to_staff, zh);
    EXPECT_EQ(m.text, MailText(false,
                               "客户 Lab University 取消了 TEM 2100 上的技术服务订单 so1，晚于运行前的取消期限。\n"
                               "申请人：Dr. Ana\n取消人：Lab University 的财务管理员\n原因：budget frozen\n" + k.zh,
                               "#/staff/orders"));
  }
}

// ------------------------------------------------------------ reports accepted automatically (notify.proto)

// REPORT_DELIVERED says until when the requester may dispute the report
// when the order has a report_accept_deadline (and that the quote is then
// charged); REPORT_AUTO_ACCEPTED goes to the requester and the owner's
// staff when booking's sweep accepted the report, never for the client's
// own AcceptReport. On the code before, the delivery mail said nothing of a
// deadline and an automatic acceptance made no mail.
TEST(InterpretTest, AReportAcceptedAutomaticallyTellsTheRequesterAndTheStaff) {
  const absl::Time deadline = kStart + absl::Hours(72);  // 2027-03-04T02:00:00Z
  bk::BookingEvent delivered = OrderEvent("users/staff1", "organizations/owner");
  bk::ServiceOrder* so = delivered.mutable_service_order_report_delivered()->mutable_service_order();
  *so = AnaOrder();
  so->add_reports()->set_summary("12 images");
  // Without a deadline: as before.
  auto i = Interpret(Entry(delivered), {});
  ASSERT_TRUE(i.ok());
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].kind, v1::REPORT_DELIVERED);
  EXPECT_EQ(i->notices[0].users, std::vector<std::string>{"users/ana"});
  EXPECT_TRUE(i->notices[0].org_roles.empty());
  EXPECT_EQ(i->notices[0].variant, "");
  EXPECT_EQ(i->notices[0].times.count("deadline"), 0u);
  // With one: the deadline and the quote's total.
  *so->mutable_report_accept_deadline() = ToProto(deadline);
  i = Interpret(Entry(delivered), {});
  ASSERT_EQ(i->notices.size(), 1u);
  EXPECT_EQ(i->notices[0].kind, v1::REPORT_DELIVERED);
  EXPECT_EQ(i->notices[0].users, std::vector<std::string>{"users/ana"});
  EXPECT_EQ(i->notices[0].variant, "deadline");
  EXPECT_EQ(i->notices[0].times.at("deadline"), deadline);
  EXPECT_EQ(i->notices[0].text.at("amount"), "888.00 CNY");

  // The sweep's acceptance (actor the booking service; the snapshot's
  // report_accept_time is the deadline, its deadline cleared).
  bk::BookingEvent accepted = OrderEvent("services/booking", "");
  *accepted.mutable_header()->mutable_event_time() = ToProto(deadline + absl::Minutes(3));
  auto* a = accepted.mutable_service_order_report_accepted();
  *a->mutable_service_order() = AnaOrder();
  a->mutable_service_order()->set_state(bk::ServiceOrder::COMPLETED);
  *a->mutable_service_order()->mutable_report_accept_time() = ToProto(deadline);
  a->mutable_service_order()->set_report_auto_accepted(true);
  // The client's own acceptance: nothing.
  i = Interpret(Entry(accepted), {});
  ASSERT_TRUE(i.ok());
  EXPECT_TRUE(i->notices.empty());
  a->set_auto_accepted(true);
  i = Interpret(Entry(accepted), {});
  ASSERT_EQ(i->notices.size(), 2u);
  const Notice& to_requester = i->notices[0];
  const Notice& to_staff = i->notices[1];
  EXPECT_EQ(to_requester.kind, v1::REPORT_AUTO_ACCEPTED);
  EXPECT_EQ(to_requester.users, std::vector<std::string>{"users/ana"});
  EXPECT_TRUE(to_requester.org_roles.empty());
  EXPECT_EQ(to_requester.times.at("accepted"), deadline);  // not when the sweep ran
  EXPECT_EQ(to_requester.text.at("amount"), "888.00 CNY");
  EXPECT_EQ(to_requester.resource, "serviceOrders/so1");
  EXPECT_EQ(to_staff.kind, v1::REPORT_AUTO_ACCEPTED);
  EXPECT_TRUE(to_staff.users.empty());
  EXPECT_EQ(to_staff.org_roles, (std::vector<std::pair<std::string, Role>>{{"organizations/owner", Role::kFacilityStaff}}));
  EXPECT_EQ(to_staff.variant, "staff");
  EXPECT_NE(to_requester.discriminator, to_staff.discriminator);
  EXPECT_EQ(to_staff.names.at("client"), "organizations/lab");
  EXPECT_EQ(to_staff.names.at("requester"), "users/ana");
  // Not a legal notice: turned off, digested and unsubscribed as the others.
  EXPECT_FALSE(IsLegalNotice(v1::REPORT_AUTO_ACCEPTED));
  Kind parsed;
  ASSERT_TRUE(ParseKind("REPORT_AUTO_ACCEPTED", &parsed));
  EXPECT_EQ(parsed, v1::REPORT_AUTO_ACCEPTED);
  EXPECT_EQ(static_cast<int>(v1::REPORT_AUTO_ACCEPTED), 27);
  EXPECT_EQ(ConsolePath(to_requester), "#/lab/orders/so1");
  EXPECT_EQ(ConsolePath(to_staff), "#/staff/orders");
}

TEST(RenderTest, TheReportDeadlineAndTheAutomaticAcceptanceInBothLanguages) {
  const absl::Time deadline = kStart + absl::Hours(72);
  RenderContext en = Context("en", "Europe/Berlin");
  RenderContext zh = Context("zh-CN", "Asia/Shanghai");
  for (RenderContext* c : {&en, &zh}) c->names = {{"client", "Lab University"}, {"requester", "Dr. Ana"}};
  const std::string berlin = "2027-03-04 03:00 (Europe/Berlin)", shanghai = "2027-03-04 10:00 (Asia/Shanghai)";

  bk::BookingEvent delivered = OrderEvent("users/staff1", "organizations/owner");
  bk::ServiceOrder* so = delivered.mutable_service_order_report_delivered()->mutable_service_order();
  *so = AnaOrder();
  so->add_reports()->set_summary("12 images");
  // Without a deadline: exactly as before.
  Notice plain = Interpret(Entry(delivered), {})->notices.at(0);
  RenderedMail m = Render(plain, en);
  EXPECT_EQ(m.subject, "Report delivered: order so1");
  EXPECT_EQ(m.text,
            "Hello Ana,\n\nThe report of your service order so1 on TEM 2100 was delivered.\n12 images\n\n"
            "Open in LabShare: https://console.test/#/lab/orders/so1\n\n-- \nLabShare\n"
            "Unsubscribe from these mails: https://console.test/unsubscribe?token=t\n");
  m = Render(plain, zh);
  EXPECT_EQ(m.subject, "报告已交付：订单 so1");
  EXPECT_TRUE(absl::StrContains(m.text, "您在 TEM 2100 上的技术服务订单 so1 的报告已交付。\n12 images\n\n在 LabShare 中查看："))
      << m.text;
  EXPECT_FALSE(absl::StrContains(m.text, "异议")) << m.text;

  // With a deadline: until when to dispute, in the recipient's zone, and
  // the quote charged after it.
  *so->mutable_report_accept_deadline() = ToProto(deadline);
  Notice with_deadline = Interpret(Entry(delivered), {})->notices.at(0);
  m = Render(with_deadline, en);
  EXPECT_EQ(m.subject, "Report delivered: order so1");
  EXPECT_EQ(m.text,
            "Hello Ana,\n\nThe report of your service order so1 on TEM 2100 was delivered.\n12 images\n"
            "You may dispute it in LabShare before " + berlin + ". From then on the report is accepted "
            "automatically and the quote of 888.00 CNY is charged.\n\n"
            "Open in LabShare: https://console.test/#/lab/orders/so1\n\n-- \nLabShare\n"
            "Unsubscribe from these mails: https://console.test/unsubscribe?token=t\n");
  EXPECT_TRUE(absl::StrContains(m.html, "<p>You may dispute it in LabShare before " + berlin)) << m.html;
  m = Render(with_deadline, zh);
  EXPECT_EQ(m.subject, "报告已交付：订单 so1");
  EXPECT_TRUE(absl::StrContains(m.text, "的报告已交付。\n12 images\n如有异议，请在 " + shanghai +
                                            " 之前在 LabShare 中提出。此后报告将自动验收，并按报价收取 888.00 CNY。"))
      << m.text;
  EXPECT_TRUE(absl::StrContains(m.text, "退订此类邮件：https://console.test/unsubscribe?token=t")) << m.text;

  bk::BookingEvent accepted = OrderEvent("services/booking", "");
  auto* a = accepted.mutable_service_order_report_accepted();
  a->set_auto_accepted(true);
  *a->mutable_service_order() = AnaOrder();
  *a->mutable_service_order()->mutable_report_accept_time() = ToProto(deadline);
  a->mutable_service_order()->set_report_auto_accepted(true);
  const auto notices = Interpret(Entry(accepted), {})->notices;
  ASSERT_EQ(notices.size(), 2u);
  m = Render(notices[0], en);
  EXPECT_EQ(m.subject, "Report accepted automatically: order so1");
  EXPECT_EQ(m.text,
            "Hello Ana,\n\nThe report of your service order so1 on TEM 2100 was not disputed before its acceptance "
            "period ended and was accepted automatically on " + berlin + ".\nThe order is complete; the quote of "
            "888.00 CNY is charged.\n\nOpen in LabShare: https://console.test/#/lab/orders/so1\n\n-- \nLabShare\n"
            "Unsubscribe from these mails: https://console.test/unsubscribe?token=t\n");
  m = Render(notices[0], zh);
  EXPECT_EQ(m.subject, "报告已自动验收：订单 so1");
  EXPECT_TRUE(absl::StrContains(m.text, "您在 TEM 2100 上的技术服务订单 so1 的报告在验收期内未被提出异议，已于 " + shanghai +
                                            " 自动验收。\n订单已完成，将按报价收取 888.00 CNY。"))
      << m.text;
  EXPECT_TRUE(absl::StrContains(m.text, "在 LabShare 中查看：https://console.test/#/lab/orders/so1")) << m.text;
  m = Render(notices[1], en);
  EXPECT_EQ(m.subject, "Report accepted automatically: order so1");
  EXPECT_TRUE(absl::StrContains(m.text,
                                "The report of service order so1 on TEM 2100 was accepted automatically on " + berlin +
                                    ": the client Lab University did not dispute it before its acceptance period "
                                    "ended.\nThe order is complete.\nRequester: Dr. Ana\nCharged: 888.00 CNY\n\n"
                                    "Open in LabShare: https://console.test/#/staff/orders\n"))
      << m.text;
  EXPECT_TRUE(absl::StrContains(m.text, "Unsubscribe from these mails: https://console.test/unsubscribe?token=t"));
  m = Render(notices[1], zh);
  EXPECT_EQ(m.subject, "报告已自动验收：订单 so1");
  EXPECT_TRUE(absl::StrContains(m.text, "TEM 2100 上技术服务订单 so1 的报告已于 " + shanghai +
                                            " 自动验收：客户 Lab University 在验收期内未提出异议。\n订单已完成。\n"
                                            "申请人：Dr. Ana\n收费：888.00 CNY"))
      << m.text;
  // Names by their ids when inventory has no display name.
  m = Render(notices[1], Context("en", "UTC"));
  EXPECT_TRUE(absl::StrContains(m.text, "the client lab did not dispute it")) << m.text;
  EXPECT_TRUE(absl::StrContains(m.text, "Requester: ana\n")) << m.text;
  EXPECT_FALSE(absl::StrContains(m.text, "organizations/")) << m.text;
}

TEST(FormatTest, MoneyAndMessageIds) {
  EXPECT_EQ(FormatMoney(0, "CNY"), "0.00 CNY");
  EXPECT_EQ(FormatMoney(5, "CNY"), "0.05 CNY");
  EXPECT_EQ(FormatMoney(123456789, "CNY"), "1,234,567.89 CNY");
  EXPECT_EQ(FormatMoney(-100000, "USD"), "-1,000.00 USD");
  // The currency's ISO 4217 minor digits: yen have none, dinars three.
  EXPECT_EQ(FormatMoney(1234560, "JPY"), "1,234,560 JPY");
  EXPECT_EQ(FormatMoney(5, "JPY"), "5 JPY");
  EXPECT_EQ(FormatMoney(-1234, "KRW"), "-1,234 KRW");
  EXPECT_EQ(FormatMoney(1234560, "CNY"), "12,345.60 CNY");
  EXPECT_EQ(FormatMoney(12345, "KWD"), "12.345 KWD");
  EXPECT_EQ(FormatMoney(5, "BHD"), "0.005 BHD");
  EXPECT_EQ(MessageId("e", "K", "users/a", ""), MessageId("e", "K", "users/a", ""));
  EXPECT_NE(MessageId("e", "K", "users/a", ""), MessageId("e", "K", "users/b", ""));
  EXPECT_NE(MessageId("e", "K", "users/a", ""), MessageId("e", "K", "users/a", "organizations/x"));
  EXPECT_EQ(MessageId("e", "K", "users/a", "").size(), 32u);
}

TEST(MimeTest, MultipartWithEncodedSubjectAndOneClickHeaders) {
  OutgoingMail m;
  m.message_id = "abc";
  m.to_address = "ana@lab.test";
  m.to_name = "安娜";
  m.subject = "预约已确认";
  m.text = "文本";
  m.html = "<p>html</p>";
  m.unsubscribe_url = "https://console.test/unsubscribe?token=t";
  m.kind = "BOOKING_CONFIRMED";
  m.date = absl::FromUnixSeconds(1803859200);
  const std::string mime = BuildMime(m, "noreply@labshare.test");
  EXPECT_TRUE(absl::StrContains(mime, "Subject: =?UTF-8?B?" + absl::Base64Escape("预约已确认") + "?=\r\n"));
  EXPECT_TRUE(absl::StrContains(mime, "List-Unsubscribe: <https://console.test/unsubscribe?token=t>\r\n"));
  EXPECT_TRUE(absl::StrContains(mime, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
  EXPECT_TRUE(absl::StrContains(mime, "Date: Mon, 01 Mar 2027 00:00:00 +0000\r\n"));
  EXPECT_TRUE(absl::StrContains(mime, "Content-Type: multipart/alternative;"));
  EXPECT_TRUE(absl::StrContains(mime, "Content-Type: text/plain; charset=utf-8"));
  EXPECT_TRUE(absl::StrContains(mime, "Content-Type: text/html; charset=utf-8"));
  EXPECT_TRUE(absl::StrContains(mime, absl::Base64Escape("文本")));
  m.unsubscribe_url.clear();
  EXPECT_FALSE(absl::StrContains(BuildMime(m, "x@y"), "List-Unsubscribe"));
}

TEST(MimeTest, DisplayNamesAreQuotedOrEncodedAndLongSubjectsFolded) {
  OutgoingMail m;
  m.message_id = "abc";
  m.to_address = "ana@lab.test";
  m.to_name = "Eve, \"Boss\" <x@evil.test> \\";
  m.subject = "a";
  for (int i = 0; i < 20; ++i) m.subject += "预";
  m.date = absl::FromUnixSeconds(1803859200);
  std::string mime = BuildMime(m, "noreply@labshare.test");
  EXPECT_TRUE(absl::StrContains(mime, "To: \"Eve, \\\"Boss\\\" <x@evil.test> \\\\\" <ana@lab.test>\r\n")) << mime;
  // 61 bytes: 43 (the 45-byte cut backs off to a character boundary) + 18.
  std::string first = "a", second;
  for (int i = 0; i < 14; ++i) first += "预";
  for (int i = 0; i < 6; ++i) second += "预";
  const std::string w1 = "=?UTF-8?B?" + absl::Base64Escape(first) + "?=";
  const std::string w2 = "=?UTF-8?B?" + absl::Base64Escape(second) + "?=";
  EXPECT_LE(w1.size(), 75u);
  EXPECT_TRUE(absl::StrContains(mime, "Subject: " + w1 + "\r\n " + w2 + "\r\nDate: ")) << mime;
  // A name with a line break cannot add a header: encoded.
  m.to_name = "Eve\r\nBcc: all@lab.test";
  mime = BuildMime(m, "noreply@labshare.test");
  EXPECT_TRUE(absl::StrContains(mime, "To: =?UTF-8?B?" + absl::Base64Escape(m.to_name) + "?= <ana@lab.test>\r\n"));
  EXPECT_FALSE(absl::StrContains(mime, "\nBcc:"));
}

TEST(MimeTest, OnlyPlainAddressesAreValid) {
  EXPECT_TRUE(ValidMailAddress("ana.b+x@lab.test"));
  std::string why;
  EXPECT_FALSE(ValidMailAddress("ana@lab.test\r\nBcc: x@y", &why));
  EXPECT_EQ(why, "contains a space, line break or control character");
  EXPECT_FALSE(ValidMailAddress("ana@lab.test>", &why));
  EXPECT_EQ(why, "contains '<' or '>'");
  EXPECT_FALSE(ValidMailAddress("ana@b@lab.test", &why));
  EXPECT_EQ(why, "must contain exactly one '@'");
  EXPECT_FALSE(ValidMailAddress("analab.test", &why));
  EXPECT_EQ(why, "must contain exactly one '@'");
  EXPECT_FALSE(ValidMailAddress("@lab.test", &why));
  EXPECT_EQ(why, "needs a local part and a domain");
  EXPECT_FALSE(ValidMailAddress("ana\t@lab.test", &why));
  EXPECT_FALSE(ValidMailAddress("", &why));
  EXPECT_EQ(why, "empty or longer than 254 characters");
  // Unicode line and paragraph separators, C1 controls and spaces are line
  // breaks, controls and spaces too; the limit counts characters.
  for (const char* bad : {"a\u2028b@lab.test", "a\u2029b@lab.test", "a\u0085b@lab.test", "a\u00a0b@lab.test",
                          "a\u3000b@lab.test"}) {
    EXPECT_FALSE(ValidMailAddress(bad, &why)) << bad;
    EXPECT_EQ(why, "contains a space, line break or control character") << bad;
  }
  EXPECT_FALSE(ValidMailAddress("a\xff" "b@lab.test", &why));
  EXPECT_EQ(why, "is not UTF-8 text");
  EXPECT_FALSE(ValidMailAddress("a\xc0\xa0" "b@lab.test", &why));  // an overlong space
  EXPECT_EQ(why, "is not UTF-8 text");
  std::string chinese;  // 100 three-byte characters: 300 bytes
  for (int i = 0; i < 100; ++i) chinese += "\u90ae";
  EXPECT_TRUE(ValidMailAddress(chinese + "@lab.test"));  // 109 characters
  EXPECT_FALSE(ValidMailAddress(std::string(246, 'a') + "@lab.test", &why));  // 255
  EXPECT_EQ(why, "empty or longer than 254 characters");
  EXPECT_TRUE(ValidMailAddress(std::string(245, 'a') + "@lab.test"));  // 254
}

// --default_time_zone is an IANA name (notify.proto): names the zone
// library also takes (the host's zone, fixed offsets, files) stop the
// notifier at start.
TEST(MailFlags, DefaultTimeZoneIsAnIanaName) {
  const std::string saved = absl::GetFlag(FLAGS_default_time_zone);
  for (const char* zone : {"localtime", "Fixed/UTC+08:00:00", "/usr/share/zoneinfo/Asia/Shanghai", "Mars/Olympus"}) {
    absl::SetFlag(&FLAGS_default_time_zone, zone);
    auto options = MailOptionsFromFlags();
    EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument) << zone;
    EXPECT_TRUE(absl::StrContains(options.status().message(), "--default_time_zone")) << options.status();
  }
  absl::SetFlag(&FLAGS_default_time_zone, "Europe/Berlin");
  auto options = MailOptionsFromFlags();
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->default_time_zone, "Europe/Berlin");
  absl::SetFlag(&FLAGS_default_time_zone, saved);
}

}  // namespace
}  // namespace labshare::notify
