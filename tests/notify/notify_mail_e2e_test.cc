// labshare-notify's mail, black box: real processes (redis-server,
// labshare-inventory, labshare-booking, labshare-notify and an SMTP sink,
// tests/notify/smtp_sink.py on Debian's python3-aiosmtpd) on free loopback
// ports, in demo time (a clock file every process reads).
//
// Booking kinds come from the real booking service (confirmed, approval
// requested, approved, rejected, cancelled by an outage window created in
// inventory, reminder, missed); lease, service-order, billing and webhook
// kinds from events written to their outboxes exactly as those services
// write them (the full snapshot in the payload). The notifier is killed with
// SIGKILL while a mail is in the relay's hands (the sink holds it), then
// restarted with the same consumer name, and a second replica joins (the
// reminders, the digest and the rest go out once all the same). Asserted,
// exactly: which mails every person got (by kind, from the sink's files),
// digests and unsubscribes honoured, legal notices not turned off, retries
// ending in the dead letters, a replay, and the mail in flight at the kill:
// delivered at most once and dead-lettered as DELIVERY_UNCERTAIN; nothing
// else lost or sent twice. Waits poll with bounded deadlines; no sleeps for ordering.
#include <dirent.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "labshare/notify/v1/notify.grpc.pb.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "labshare/usage/v1/usage.grpc.pb.h"
#include "tests/booking/booking_test_cluster.h"

namespace labshare::testing {
namespace {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing::v1;
namespace iv = labshare::inventory::v1;
namespace nv = labshare::notify::v1;
namespace tv = labshare::type::v1;
namespace uv = labshare::usage::v1;

constexpr absl::Duration kWait = absl::Seconds(90);
// Demo time: Monday 2027-03-01 08:00 in Shanghai.
const absl::Time kT0 = absl::FromUnixSeconds(1803859200);  // 2027-03-01T00:00:00Z

std::string SourceDir() { return LABSHARE_SOURCE_DIR; }

void WriteClock(const std::string& path, absl::Time t) {
  std::ofstream(path + ".tmp") << absl::FormatTime(absl::RFC3339_sec, t, absl::UTCTimeZone()) << "\n";
  std::filesystem::rename(path + ".tmp", path);
}

struct Mail {
  std::string file;
  std::string to;
  std::string kind;
  std::string subject;
  std::string unsubscribe;
  std::string text;  // decoded text/plain part
};

// The header's value, unfolded (continuation lines joined with a space).
std::string Header(const std::string& raw, const std::string& name) {
  std::string out;
  bool in = false;
  for (absl::string_view line : absl::StrSplit(raw, '\n')) {
    line = absl::StripSuffix(line, "\r");
    if (line.empty()) break;  // end of the header
    if (in && (line[0] == ' ' || line[0] == '\t')) {
      absl::StrAppend(&out, " ", absl::StripLeadingAsciiWhitespace(line));
      continue;
    }
    if (in) break;
    if (absl::StartsWithIgnoreCase(line, name + ": ")) {
      out = std::string(line.substr(name.size() + 2));
      in = true;
    }
  }
  return out;
}

// RFC 2047 B encoded words (one or several, folded), decoded and joined.
std::string DecodeWords(const std::string& value) {
  if (!absl::StartsWith(value, "=?UTF-8?B?")) return value;
  std::string out;
  for (absl::string_view word : absl::StrSplit(value, ' ', absl::SkipEmpty())) {
    std::string dec;
    absl::Base64Unescape(absl::StripSuffix(absl::StripPrefix(word, "=?UTF-8?B?"), "?="), &dec);
    out += dec;
  }
  return out;
}

std::vector<Mail> ReadMails(const std::string& dir) {
  std::vector<Mail> out;
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (absl::EndsWith(n, ".eml") && n[0] != '.') names.push_back(e.path().string());
  }
  std::sort(names.begin(), names.end());
  for (const std::string& path : names) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string raw = ss.str();
    Mail m;
    m.file = path;
    m.to = Header(raw, "X-Envelope-To");
    m.kind = Header(raw, "X-LabShare-Kind");
    m.subject = DecodeWords(Header(raw, "Subject"));
    m.unsubscribe = std::string(absl::StripSuffix(absl::StripPrefix(Header(raw, "List-Unsubscribe"), "<"), ">"));
    const size_t plain = raw.find("Content-Type: text/plain");
    if (plain != std::string::npos) {
      const size_t body = raw.find("\r\n\r\n", plain);
      const size_t end = raw.find("--=_labshare_", body);
      std::string b64 = raw.substr(body + 4, end - body - 4);
      b64.erase(std::remove_if(b64.begin(), b64.end(), [](char c) { return c == '\r' || c == '\n'; }), b64.end());
      absl::Base64Unescape(b64, &m.text);
    }
    out.push_back(std::move(m));
  }
  return out;
}

// recipient address -> sorted kinds.
std::map<std::string, std::vector<std::string>> ByRecipient(const std::vector<Mail>& mails) {
  std::map<std::string, std::vector<std::string>> out;
  for (const Mail& m : mails) out[m.to].push_back(m.kind);
  for (auto& [k, v] : out) std::sort(v.begin(), v.end());
  return out;
}

uint32_t Fnv1a(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

class NotifyMailE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/labshare-notify-e2e-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    work_ = tmpl;
    clock_file_ = work_ + "/clock";
    mail_dir_ = work_ + "/mail";
    WriteClock(clock_file_, kT0);
    BookingTestClusterOptions options;
    const std::string clock_flag = "--clock_file=" + clock_file_;
    options.service_args = [clock_flag](const std::string& service) -> std::vector<std::string> {
      if (service == "booking") return {clock_flag, "--sweep_interval=200ms", "--inventory_cache_ttl=0s"};
      return {clock_flag};
    };
    auto c = BookingTestCluster::Start(1, options);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = *std::move(c);
    auto sink = ChildProcess::Start("smtp-sink", SourceDir() + "/tests/notify/smtp_sink.py",
                                    {"--dir=" + mail_dir_}, cluster_->log_dir());
    ASSERT_TRUE(sink.ok()) << sink.status();
    sink_ = *std::move(sink);
    // usage: notify's own events reach the audit trail.
    auto usage = ChildProcess::Start(
        "usage", cluster_->bin_dir() + "/labshare-usage",
        WithTls({"--listen=127.0.0.1:0", "--redis=" + cluster_->redis_server().address(), "--audit_unsigned",
                 "--clock_file=" + clock_file_},
                "usage"),
        cluster_->log_dir());
    ASSERT_TRUE(usage.ok()) << usage.status();
    usage_ = *std::move(usage);
    usage_stub_ = uv::UsageService::NewStub(TlsChannel(usage_->address()));
    StartNotify();
  }

  // What the notifier holds, for failure output.
  std::string Diagnose() {
    std::string out;
    auto& r = cluster_->redis();
    auto keys = r.Command({"KEYS", "*"});
    if (keys.ok()) {
      for (const auto& k : keys->elements) {
        auto t = r.Command({"TYPE", k.str});
        absl::StrAppend(&out, k.str, " (", t.ok() ? t->str : "?", ")");
        if (t.ok() && t->str == "stream") {
          auto g = r.Command({"XINFO", "GROUPS", k.str});
          if (g.ok()) absl::StrAppend(&out, " groups: ", g->DebugString().substr(0, 600));
          auto len = r.Command({"XLEN", k.str});
          if (len.ok()) absl::StrAppend(&out, " len ", len->integer);
        }
        if (t.ok() && t->str == "hash" && absl::StartsWith(k.str, "{notify}:mail:msg:")) {
          auto f = r.Command({"HMGET", k.str, "state", "kind", "email", "attempts", "error"});
          if (f.ok()) absl::StrAppend(&out, " ", f->DebugString());
        }
        absl::StrAppend(&out, "\n");
      }
    }
    return out;
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "----- redis -----\n" << Diagnose();
      std::cerr << cluster_->DumpLogs(6000);
      if (notify_ != nullptr) std::cerr << "----- notify -----\n" << notify_->StderrTail(8000) << "\n";
      for (auto& r : replicas_) std::cerr << "----- " << r->name() << " -----\n" << r->StderrTail(4000) << "\n";
      if (sink_ != nullptr) std::cerr << "----- smtp sink -----\n" << sink_->StderrTail(3000) << "\n";
    }
    notify_stub_.reset();
    notify_.reset();
    replicas_.clear();
    usage_stub_.reset();
    usage_.reset();
    sink_.reset();
    cluster_.reset();
    if (!HasFailure()) std::filesystem::remove_all(work_);
  }

  // A notifier; replica 0 is notify_ (the one killed), others go to
  // replicas_.
  void StartNotify(int replica = 0) {
    auto n = ChildProcess::Start(
        absl::StrCat("notify-", replica), cluster_->bin_dir() + "/labshare-notify",
        WithTls({"--listen=127.0.0.1:0", "--redis=" + cluster_->redis_server().address(),
                 "--inventory=" + cluster_->inventory_address(), "--smtp=" + sink_->address(),
                 "--console_url=https://console.test", "--clock_file=" + clock_file_,
                 absl::StrCat("--consumer_name=notify-e2e-", replica),
                 "--reminder_lead=1h", "--handover_lead=1h", "--return_lead=1h", "--digest_hour=9",
                 "--subsidy_pool_low_minor=100000", "--mail_retry_initial=100ms", "--mail_retry_max=200ms",
                 "--mail_max_attempts=3", "--mail_poll=50ms", "--mail_from=noreply@labshare.test"},
                "notify"),
        cluster_->log_dir());
    ASSERT_TRUE(n.ok()) << n.status();
    if (replica > 0) {
      replicas_.push_back(*std::move(n));
      return;
    }
    notify_ = *std::move(n);
    notify_stub_ = nv::NotificationService::NewStub(TlsChannel(notify_->address()));
  }

  std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    return ctx;
  }
  std::string Admin() { return cluster_->admin_token(); }

  void CreateUser(const std::string& id, const std::string& org, tv::Role role, const std::string& email) {
    iv::CreateUserRequest r;
    r.set_user_id(id);
    r.mutable_user()->set_display_name(absl::StrCat("Dr. ", id));
    r.mutable_user()->set_organization("organizations/" + org);
    r.mutable_user()->add_roles(role);
    r.mutable_user()->set_email(email);
    iv::User out;
    grpc::Status s = cluster_->inventory().CreateUser(Ctx(Admin()).get(), r, &out);
    ASSERT_TRUE(s.ok()) << id << ": " << s.error_message();
  }

  void CreateInstrument(const std::string& id, bool approval) {
    iv::CreateInstrumentRequest r;
    r.set_instrument_id(id);
    auto* in = r.mutable_instrument();
    in->set_display_name(absl::StrCat("Instrument ", id));
    in->set_owner_organization("organizations/owner");
    in->set_facility("facilities/fac");
    in->set_category("electron-microscopy");
    in->mutable_original_value()->set_currency_code("CNY");
    in->mutable_original_value()->set_amount_minor(100000000);
    in->set_daily_available_hours(24);
    auto* m = in->add_modes();
    m->set_mode(tv::ON_SITE);
    m->set_approval_required(approval);
    auto* sr = m->mutable_slot_rules();
    *sr->mutable_min_block() = ToProto(absl::Minutes(1));
    *sr->mutable_max_block() = ToProto(absl::Hours(24));
    *sr->mutable_member_horizon() = ToProto(absl::Hours(24 * 3650));
    *sr->mutable_non_member_horizon() = ToProto(absl::Hours(24 * 3650));
    *sr->mutable_min_notice() = ToProto(absl::ZeroDuration());
    *sr->mutable_buffer() = ToProto(absl::ZeroDuration());
    *sr->mutable_no_show_grace() = ToProto(absl::Minutes(10));
    sr->set_billing_basis(iv::ACTUAL_TIME);
    *sr->mutable_billing_unit() = ToProto(absl::Minutes(15));
    iv::Instrument out;
    grpc::Status s = cluster_->inventory().CreateInstrument(Ctx(Admin()).get(), r, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
    iv::CreateRateRequest rate;
    rate.set_parent("instruments/" + id);
    rate.mutable_rate()->set_mode(tv::ON_SITE);
    rate.mutable_rate()->set_payer_class(tv::MEMBER);
    rate.mutable_rate()->set_unit(iv::PER_HOUR);
    rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
    rate.mutable_rate()->mutable_price()->set_amount_minor(50000);
    iv::Rate rate_out;
    s = cluster_->inventory().CreateRate(Ctx(Admin()).get(), rate, &rate_out);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  bk::Booking Book(const std::string& user, const std::string& instrument, absl::Time start, absl::Duration d) {
    bk::CreateBookingRequest r;
    r.set_request_id(absl::StrCat("rq-", user, "-", instrument, "-", absl::ToUnixSeconds(start)));
    auto* b = r.mutable_booking();
    b->set_instrument("instruments/" + instrument);
    b->set_mode(tv::ON_SITE);
    b->set_user("users/" + user);
    b->set_payer_organization("organizations/lab");
    b->set_purpose("imaging");
    *b->mutable_reserved_interval()->mutable_start_time() = ToProto(start);
    *b->mutable_reserved_interval()->mutable_end_time() = ToProto(start + d);
    bk::Booking out;
    grpc::Status s = cluster_->booking(0).CreateBooking(
        Ctx(cluster_->Mint(user, "lab", {Role::kLabUser})).get(), r, &out);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << " " << s.error_message();
    return out;
  }

  // XADD of an event as its service writes it.
  void Publish(const std::string& stream, const std::string& type, const std::string& payload) {
    auto r = cluster_->redis().Command({"XADD", stream, "*", "type", type, "payload", payload});
    ASSERT_TRUE(r.ok() && !r->is_error()) << stream;
  }
  tv::EventHeader Header(const std::string& id) {
    tv::EventHeader h;
    h.set_event_id(id);
    *h.mutable_event_time() = ToProto(kT0);
    h.set_actor("users/staff1");
    return h;
  }
  std::string Partition(const std::string& instrument) {
    return absl::StrCat("{bk:", Fnv1a(instrument) % 16, "}:outbox");
  }

  // Waits until `pred` holds (bounded).
  template <typename Pred>
  bool WaitFor(Pred pred, absl::Duration d = kWait) {
    const absl::Time deadline = absl::Now() + d;
    while (absl::Now() < deadline) {
      if (pred()) return true;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return pred();
  }

  // Every notify-mail group has read and acknowledged every entry, and no
  // mail waits or is in flight.
  bool Quiet() {
    auto& r = cluster_->redis();
    for (const char* key : {"{notify}:mail:due", "{notify}:mail:inflight", "{notify}:mail:schedclaimed"}) {
      auto n = r.Command({"ZCARD", key});
      if (!n.ok() || n->integer != 0) return false;
    }
    std::vector<std::string> streams = {"{inventory}:outbox", "{booking}:outbox", "{billing}:outbox",
                                        "{usage}:outbox", "{notify}:outbox"};
    for (int p = 0; p < 16; ++p) streams.push_back(absl::StrCat("{bk:", p, "}:outbox"));
    for (const auto& s : streams) {
      auto last = r.Command({"XREVRANGE", s, "+", "-", "COUNT", "1"});
      if (!last.ok()) return false;
      if (last->elements.empty()) continue;
      const std::string last_id = last->elements[0].elements[0].str;
      auto groups = r.Command({"XINFO", "GROUPS", s});
      if (!groups.ok() || groups->is_error()) return false;
      bool found = false;
      for (const auto& g : groups->elements) {
        std::map<std::string, std::string> f;
        for (size_t i = 0; i + 1 < g.elements.size(); i += 2) {
          f[g.elements[i].str] = g.elements[i + 1].is_array() ? "" : (g.elements[i + 1].str.empty() ? absl::StrCat(g.elements[i + 1].integer) : g.elements[i + 1].str);
        }
        if (f["name"] != "notify-mail") continue;
        found = true;
        if (f["pending"] != "0" || f["last-delivered-id"] != last_id) return false;
      }
      if (!found) return false;
    }
    return true;
  }

  std::vector<nv::DeadLetter> DeadLetters() {
    nv::ListDeadLettersRequest req;
    nv::ListDeadLettersResponse resp;
    grpc::Status s = notify_stub_->ListDeadLetters(Ctx(Admin()).get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.dead_letters().begin(), resp.dead_letters().end()};
  }

  std::string work_, clock_file_, mail_dir_;
  std::unique_ptr<BookingTestCluster> cluster_;
  std::unique_ptr<ChildProcess> sink_, notify_;
  std::vector<std::unique_ptr<ChildProcess>> replicas_;
  std::unique_ptr<ChildProcess> usage_;
  std::unique_ptr<uv::UsageService::Stub> usage_stub_;
  std::unique_ptr<nv::NotificationService::Stub> notify_stub_;
};

TEST_F(NotifyMailE2eTest, EveryKindReachesTheRightPeopleExactlyOnceAcrossAKill9) {
  // ------------------------------------------------------------ people and instruments
  ASSERT_TRUE(cluster_->CreateMemberOrganization("owner", "CORE").ok());
  ASSERT_TRUE(cluster_->CreateMemberOrganization("lab", "CORE").ok());
  ASSERT_TRUE(cluster_->CreateFacility("fac", "owner").ok());
  CreateInstrument("tem", false);
  CreateInstrument("nmr", true);
  CreateUser("ana", "lab", tv::LAB_USER, "ana@lab.test");
  CreateUser("bo", "lab", tv::LAB_USER, "bo@lab.test");
  CreateUser("cy", "lab", tv::LAB_USER, "cy@lab.test");
  CreateUser("staff1", "owner", tv::FACILITY_STAFF, "staff1@owner.test");
  CreateUser("staff2", "owner", tv::FACILITY_STAFF, "staff2@owner.test");
  CreateUser("billadm", "lab", tv::MEMBER_BILLING_ADMIN, "billadm@lab.test");
  CreateUser("owneradm", "owner", tv::MEMBER_BILLING_ADMIN, "owneradm@owner.test");
  CreateUser("root", "owner", tv::CONSORTIUM_ADMIN, "root@consortium.test");
  CreateUser("holdy", "lab", tv::LAB_USER, "hold-holdy@lab.test");
  CreateUser("flaky", "lab", tv::LAB_USER, "tempfail-flaky@lab.test");
  CreateUser("gone", "lab", tv::LAB_USER, "reject-gone@lab.test");
  ASSERT_FALSE(HasFailure());

  // ------------------------------------------------------------ settings
  const std::string ana_token = cluster_->Mint("ana", "lab", {Role::kLabUser});
  {
    nv::UpdateNotificationSettingsRequest r;
    r.set_request_id("ana-settings");
    r.mutable_settings()->set_name("users/ana/notificationSettings");
    r.mutable_settings()->set_language("en");
    r.mutable_settings()->set_time_zone("Europe/Berlin");
    r.mutable_update_mask()->add_paths("language");
    r.mutable_update_mask()->add_paths("time_zone");
    nv::NotificationSettings out;
    grpc::Status s = notify_stub_->UpdateNotificationSettings(Ctx(ana_token).get(), r, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(out.language(), "en");
    EXPECT_EQ(out.time_zone(), "Europe/Berlin");
    EXPECT_FALSE(out.etag().empty());
    // Someone else's settings: USER_SCOPE.
    nv::GetNotificationSettingsRequest g;
    g.set_name("users/bo/notificationSettings");
    s = notify_stub_->GetNotificationSettings(Ctx(ana_token).get(), g, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(GrpcErrorReason(s), "USER_SCOPE");
    // An etag that is not the current one: refused; the same request again
    // answers the same.
    nv::UpdateNotificationSettingsRequest stale = r;
    stale.set_request_id("ana-stale");
    stale.mutable_settings()->set_etag("not-the-etag");
    s = notify_stub_->UpdateNotificationSettings(Ctx(ana_token).get(), stale, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(GrpcErrorReason(s), "ETAG_MISMATCH");
    nv::NotificationSettings again;
    s = notify_stub_->UpdateNotificationSettings(Ctx(ana_token).get(), r, &again);
    ASSERT_TRUE(s.ok()) << s.error_message();
    // Legal notices cannot be turned off.
    nv::UpdateNotificationSettingsRequest legal;
    legal.mutable_settings()->set_name("users/ana/notificationSettings");
    legal.mutable_settings()->add_disabled_kinds(nv::INVOICE_ISSUED);
    legal.mutable_update_mask()->add_paths("disabled_kinds");
    s = notify_stub_->UpdateNotificationSettings(Ctx(ana_token).get(), legal, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(GrpcErrorReason(s), "LEGAL_NOTICE_REQUIRED");
  }
  {
    nv::UpdateNotificationSettingsRequest r;
    r.mutable_settings()->set_name("users/bo/notificationSettings");
    r.mutable_settings()->set_delivery(nv::NotificationSettings::DAILY_DIGEST);
    r.mutable_update_mask()->add_paths("delivery");
    nv::NotificationSettings out;
    grpc::Status s = notify_stub_->UpdateNotificationSettings(Ctx(Admin()).get(), r, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // ------------------------------------------------------------ real booking events
  const bk::Booking b1 = Book("ana", "tem", kT0 + absl::Hours(48 + 2), absl::Hours(1));  // 10:00+08 on Mar 3
  EXPECT_EQ(b1.state(), bk::Booking::CONFIRMED);
  const bk::Booking b2 = Book("ana", "nmr", kT0 + absl::Hours(72 + 2), absl::Hours(1));
  EXPECT_EQ(b2.state(), bk::Booking::PENDING_APPROVAL);
  const bk::Booking b3 = Book("ana", "nmr", kT0 + absl::Hours(96 + 2), absl::Hours(1));
  const bk::Booking b4 = Book("ana", "tem", kT0 + absl::Hours(120 + 2), absl::Hours(1));
  const bk::Booking b5 = Book("ana", "tem", kT0 + absl::Hours(1), absl::Hours(1));  // reminder due at once
  const bk::Booking bo1 = Book("bo", "tem", kT0 + absl::Hours(144 + 2), absl::Hours(1));
  const bk::Booking cy1 = Book("cy", "tem", kT0 + absl::Hours(168 + 2), absl::Hours(1));
  ASSERT_FALSE(HasFailure());
  const std::string staff_token = cluster_->Mint("staff1", "owner", {Role::kFacilityStaff});
  {
    bk::ApproveBookingRequest a;
    a.set_name(b2.name());
    a.set_request_id("approve-b2");
    bk::Booking out;
    grpc::Status s = cluster_->booking(0).ApproveBooking(Ctx(staff_token).get(), a, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
    bk::RejectBookingRequest rj;
    rj.set_name(b3.name());
    rj.set_reason("the magnet is being refilled");
    rj.set_request_id("reject-b3");
    s = cluster_->booking(0).RejectBooking(Ctx(staff_token).get(), rj, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  {
    iv::CreateMaintenanceWindowRequest w;
    w.set_parent("instruments/tem");
    w.set_request_id("outage-1");
    auto* mw = w.mutable_maintenance_window();
    *mw->mutable_interval()->mutable_start_time() = ToProto(kT0 + absl::Hours(120));
    *mw->mutable_interval()->mutable_end_time() = ToProto(kT0 + absl::Hours(126));
    mw->set_reason("power cut");
    mw->set_outage(true);
    iv::MaintenanceWindow out;
    grpc::Status s = cluster_->inventory().CreateMaintenanceWindow(Ctx(Admin()).get(), w, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  // cy's first confirmation carries the unsubscribe link; cy uses it.
  std::string cy_unsubscribe;
  ASSERT_TRUE(WaitFor([&] {
    for (const Mail& m : ReadMails(mail_dir_)) {
      if (m.to == "cy@lab.test") cy_unsubscribe = m.unsubscribe;
    }
    return !cy_unsubscribe.empty();
  })) << "cy's confirmation did not arrive";
  ASSERT_TRUE(absl::StartsWith(cy_unsubscribe, "https://console.test/unsubscribe?token=")) << cy_unsubscribe;
  {
    nv::UnsubscribeRequest u;
    u.set_token(cy_unsubscribe.substr(cy_unsubscribe.find("token=") + 6));
    u.set_validate_only(true);
    nv::UnsubscribeResponse out;
    grpc::Status s = notify_stub_->Unsubscribe(Ctx("").get(), u, &out);  // no LabShare token
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(out.user(), "users/cy");
    EXPECT_EQ(out.kind(), nv::BOOKING_CONFIRMED);
    EXPECT_FALSE(out.changed());
    u.set_validate_only(false);
    s = notify_stub_->Unsubscribe(Ctx("").get(), u, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_TRUE(out.changed());
    s = notify_stub_->Unsubscribe(Ctx("").get(), u, &out);
    ASSERT_TRUE(s.ok());
    EXPECT_FALSE(out.changed());  // idempotent
    nv::UnsubscribeRequest forged = u;
    forged.set_token(u.token().substr(0, u.token().size() - 1) + (u.token().back() == '0' ? "1" : "0"));
    s = notify_stub_->Unsubscribe(Ctx("").get(), forged, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(GrpcErrorReason(s), "UNSUBSCRIBE_TOKEN_NOT_FOUND");
    forged.set_token("%%%.zz");  // not a link's token at all
    s = notify_stub_->Unsubscribe(Ctx("").get(), forged, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  }
  const bk::Booking cy2 = Book("cy", "tem", kT0 + absl::Hours(192 + 2), absl::Hours(1));  // no mail now
  ASSERT_EQ(cy2.state(), bk::Booking::CONFIRMED);

  // ------------------------------------------------------------ kill -9 with a mail in flight
  {
    bk::BookingEvent e;
    *e.mutable_header() = Header("quote-holdy");
    auto* so = e.mutable_service_order_quoted()->mutable_service_order();
    so->set_name("serviceOrders/so-hold");
    so->set_instrument("instruments/tem");
    so->set_instrument_owner("organizations/owner");
    so->set_client_organization("organizations/lab");
    so->set_requester("users/holdy");
    so->mutable_quote()->mutable_total()->set_currency_code("CNY");
    so->mutable_quote()->mutable_total()->set_amount_minor(123450);
    Publish(Partition("tem"), "labshare.booking.v1.BookingEvent", e.SerializeAsString());
  }
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(mail_dir_ + "/holding-hold-holdy@lab.test"); }))
      << "the held mail never reached the sink";
  ASSERT_EQ(kill(notify_->pid(), SIGKILL), 0);
  notify_->WaitExit();
  notify_stub_.reset();
  notify_.reset();

  // ------------------------------------------------------------ events while the notifier is down
  auto lease = [&](bk::Lease* l, const std::string& name) {
    l->set_name(name);
    l->set_instrument("instruments/tem");
    l->set_instrument_owner("organizations/owner");
    l->set_lessee_organization("organizations/lab");
    l->set_contact_user("users/ana");
    // Handover due at +48h45m, return at +49h15m: both still ahead of the
    // lease's start and end (and within --schedule_grace) when the clock
    // jumps to +49h30m below; anything later would be dropped unmailed.
    *l->mutable_term()->mutable_start_time() = ToProto(kT0 + absl::Hours(49) + absl::Minutes(45));
    *l->mutable_term()->mutable_end_time() = ToProto(kT0 + absl::Hours(50) + absl::Minutes(15));
    l->mutable_contract()->mutable_rate()->set_currency_code("CNY");
    l->mutable_contract()->mutable_rate()->set_amount_minor(80000);
    l->mutable_contract()->mutable_deposit()->set_currency_code("CNY");
    l->mutable_contract()->mutable_deposit()->set_amount_minor(1000000);
  };
  {
    bk::BookingEvent e;
    *e.mutable_header() = Header("lease-approved");
    lease(e.mutable_lease_approved()->mutable_lease(), "leases/l1");
    e.mutable_lease_approved()->mutable_lease()->set_state(bk::Lease::APPROVED);
    Publish(Partition("tem"), "labshare.booking.v1.BookingEvent", e.SerializeAsString());
    // l1 is handed over before its handover falls due (no handover notice
    // then); l2 is not (its handover notice goes out).
    bk::BookingEvent e2;
    *e2.mutable_header() = Header("lease-2-approved");
    lease(e2.mutable_lease_approved()->mutable_lease(), "leases/l2");
    e2.mutable_lease_approved()->mutable_lease()->set_state(bk::Lease::APPROVED);
    Publish(Partition("tem"), "labshare.booking.v1.BookingEvent", e2.SerializeAsString());
    bk::BookingEvent h;
    *h.mutable_header() = Header("lease-handed-over");
    lease(h.mutable_lease_handed_over()->mutable_lease(), "leases/l1");
    h.mutable_lease_handed_over()->mutable_lease()->set_state(bk::Lease::HANDED_OVER);
    Publish(Partition("tem"), "labshare.booking.v1.BookingEvent", h.SerializeAsString());
  }
  auto order = [&](bk::ServiceOrder* so, const std::string& requester) {
    so->set_name("serviceOrders/so-" + requester);
    so->set_instrument("instruments/tem");
    so->set_instrument_owner("organizations/owner");
    so->set_client_organization("organizations/lab");
    so->set_requester("users/" + requester);
    so->mutable_quote()->mutable_total()->set_currency_code("CNY");
    so->mutable_quote()->mutable_total()->set_amount_minor(88800);
    so->add_reports()->set_summary("12 spectra, all within tolerance");
    so->set_dispute_reason("sample 3 is missing");
  };
  for (const std::string who : {"ana", "flaky", "gone"}) {
    bk::BookingEvent q;
    *q.mutable_header() = Header("quote-" + who);
    order(q.mutable_service_order_quoted()->mutable_service_order(), who);
    Publish(Partition("tem"), "labshare.booking.v1.BookingEvent", q.SerializeAsString());
  }
  {
    bk::BookingEvent r;
    *r.mutable_header() = Header("report-ana");
    order(r.mutable_service_order_report_delivered()->mutable_service_order(), "ana");
    Publish(Partition("tem"), "labshare.booking.v1.BookingEvent", r.SerializeAsString());
    bk::BookingEvent d;
    *d.mutable_header() = Header("dispute-ana");
    order(d.mutable_service_order_report_disputed()->mutable_service_order(), "ana");
    Publish(Partition("tem"), "labshare.booking.v1.BookingEvent", d.SerializeAsString());
    // Published twice (at-least-once publishing): still one mail each.
    Publish(Partition("tem"), "labshare.booking.v1.BookingEvent", d.SerializeAsString());
  }
  {
    bl::BillingEvent inv;
    *inv.mutable_header() = Header("invoice-1");
    auto* i = inv.mutable_invoice_issued()->mutable_invoice();
    i->set_name("invoices/inv-1");
    i->set_number("LS-2027-000001");
    i->set_period("2027-02");
    i->set_payer_organization("organizations/lab");
    i->mutable_amount_due()->set_currency_code("CNY");
    i->mutable_amount_due()->set_amount_minor(1234560);
    *i->mutable_due_time() = ToProto(kT0 + absl::Hours(24 * 30));
    Publish("{billing}:outbox", "labshare.billing.v1.BillingEvent", inv.SerializeAsString());
    // History, not news (older than --mail_max_event_age): no mail.
    bl::BillingEvent old = inv;
    old.mutable_header()->set_event_id("invoice-old");
    *old.mutable_header()->mutable_event_time() = ToProto(kT0 - absl::Hours(24 * 30));
    old.mutable_invoice_issued()->mutable_invoice()->set_name("invoices/inv-0");
    Publish("{billing}:outbox", "labshare.billing.v1.BillingEvent", old.SerializeAsString());
    bl::BillingEvent pay;
    *pay.mutable_header() = Header("payment-1");
    auto* p = pay.mutable_payment_recorded()->mutable_payment();
    p->set_name("payments/p1");
    p->set_payer("organizations/lab");
    p->set_payee("organizations/owner");
    p->set_invoice("invoices/inv-1");
    p->mutable_amount()->set_currency_code("CNY");
    p->mutable_amount()->set_amount_minor(1234560);
    Publish("{billing}:outbox", "labshare.billing.v1.BillingEvent", pay.SerializeAsString());
    // From a subsidy pool (the consortium admin records it): the payee's
    // billing admins only; the pool is no organisation to ask inventory
    // about (it used to be asked, refuse, and leave the event pending for
    // ever: Quiet() below would never hold).
    bl::BillingEvent pool_pay;
    *pool_pay.mutable_header() = Header("payment-pool");
    auto* pp = pool_pay.mutable_payment_recorded()->mutable_payment();
    pp->set_name("payments/p-pool");
    pp->set_payer("subsidyPools/sme");
    pp->set_payee("organizations/owner");
    pp->mutable_amount()->set_currency_code("CNY");
    pp->mutable_amount()->set_amount_minor(200000);
    Publish("{billing}:outbox", "labshare.billing.v1.BillingEvent", pool_pay.SerializeAsString());
    bl::BillingEvent st;
    *st.mutable_header() = Header("settlement-1");
    auto* s = st.mutable_settlement_computed()->mutable_settlement();
    s->set_name("settlements/2027-02");
    s->set_period("2027-02");
    auto* t = s->add_transfers();
    t->set_from_organization("organizations/lab");
    t->set_to_organization("organizations/owner");
    t->mutable_amount()->set_currency_code("CNY");
    t->mutable_amount()->set_amount_minor(5000);
    Publish("{billing}:outbox", "labshare.billing.v1.BillingEvent", st.SerializeAsString());
    for (int k = 0; k < 2; ++k) {  // above, then below the threshold (100000)
      bl::BillingEvent sa;
      *sa.mutable_header() = Header(absl::StrCat("subsidy-", k));
      auto* a = sa.mutable_subsidy_applied();
      a->mutable_line()->set_subsidy_pool("subsidyPools/sme");
      a->mutable_line()->mutable_amount()->set_currency_code("CNY");
      a->mutable_line()->mutable_amount()->set_amount_minor(60000);
      a->mutable_pool_balance()->set_currency_code("CNY");
      a->mutable_pool_balance()->set_amount_minor(k == 0 ? 120000 : 60000);
      Publish("{billing}:outbox", "labshare.billing.v1.BillingEvent", sa.SerializeAsString());
    }
    nv::NotifyEvent wh;
    *wh.mutable_header() = Header("webhook-off");
    wh.mutable_webhook_disabled()->set_webhook("organizations/lab/webhooks/w1");
    wh.mutable_webhook_disabled()->set_organization("organizations/lab");
    wh.mutable_webhook_disabled()->set_url("https://erp.lab.test/hook");
    wh.mutable_webhook_disabled()->set_consecutive_failures(10);
    wh.mutable_webhook_disabled()->set_last_error("HTTP 503");
    Publish("{notify}:outbox", "labshare.notify.v1.NotifyEvent", wh.SerializeAsString());
  }

  // ------------------------------------------------------------ restart; the held mail lets go
  std::ofstream(mail_dir_ + "/release").close();
  StartNotify();
  // From here on two replicas share the work: reminders, digests and every
  // mail still go out once.
  StartNotify(1);
  ASSERT_FALSE(HasFailure());
  // Time moves: b5 missed (start +1h, grace 10 min), bo's digest (09:00),
  // then the lease's handover/return and b1's reminder (Mar 3, 09:00+08).
  WriteClock(clock_file_, kT0 + absl::Hours(2));
  ASSERT_TRUE(WaitFor([&] {
    bk::GetBookingRequest g;
    g.set_name(b5.name());
    bk::Booking out;
    return cluster_->booking(0).GetBooking(Ctx(Admin()).get(), g, &out).ok() && out.state() == bk::Booking::MISSED;
  })) << "b5 never became MISSED";
  WriteClock(clock_file_, kT0 + absl::Hours(48 + 1) + absl::Minutes(30));
  ASSERT_TRUE(WaitFor([&] { return Quiet() && ReadMails(mail_dir_).size() >= 30; }))
      << "the notifier did not settle; mails so far: " << ReadMails(mail_dir_).size();
  ASSERT_TRUE(WaitFor([&] { return Quiet(); }));

  // ------------------------------------------------------------ what everyone got
  const std::vector<Mail> mails = ReadMails(mail_dir_);
  std::map<std::string, std::vector<std::string>> got = ByRecipient(mails);
  using V = std::vector<std::string>;
  std::map<std::string, V> want = {
      {"ana@lab.test",
       {"BOOKING_APPROVED", "BOOKING_CANCELLED_BY_OUTAGE", "BOOKING_CONFIRMED", "BOOKING_CONFIRMED",
        "BOOKING_CONFIRMED", "BOOKING_MISSED", "BOOKING_REJECTED", "BOOKING_REMINDER", "BOOKING_REMINDER",
        "LEASE_APPROVED", "LEASE_APPROVED", "LEASE_HANDOVER_DUE", "LEASE_RETURN_DUE", "QUOTE_ISSUED",
        "REPORT_DELIVERED"}},
      {"staff1@owner.test", {"APPROVAL_REQUESTED", "APPROVAL_REQUESTED", "ORDER_DISPUTED"}},
      {"staff2@owner.test", {"APPROVAL_REQUESTED", "APPROVAL_REQUESTED", "ORDER_DISPUTED"}},
      {"bo@lab.test", {"DIGEST"}},
      {"cy@lab.test", {"BOOKING_CONFIRMED"}},
      {"billadm@lab.test", {"INVOICE_ISSUED", "PAYMENT_RECEIVED", "SETTLEMENT_TRANSFERS_DUE", "WEBHOOK_DISABLED"}},
      {"owneradm@owner.test", {"PAYMENT_RECEIVED", "PAYMENT_RECEIVED"}},
      {"root@consortium.test", {"SUBSIDY_POOL_LOW"}},
  };
  // The mail in flight at the kill: at most once at the sink.
  const size_t held = got.count("hold-holdy@lab.test") ? got["hold-holdy@lab.test"].size() : 0;
  EXPECT_LE(held, 1u);
  got.erase("hold-holdy@lab.test");
  EXPECT_EQ(got, want);

  // Content: ana's in English and Berlin time; staff's in Chinese.
  for (const Mail& m : mails) {
    if (m.to == "ana@lab.test" && m.kind == "BOOKING_CONFIRMED" &&
        absl::StrContains(m.text, std::string(absl::StripPrefix(b1.name(), "bookings/")))) {
      EXPECT_TRUE(absl::StrContains(m.text, "Hello Dr. ana,")) << m.text;
      EXPECT_TRUE(absl::StrContains(m.text, "2027-03-03 03:00 (Europe/Berlin)")) << m.text;
      EXPECT_TRUE(absl::StrContains(m.text, "Open in LabShare: https://console.test/#/lab/bookings")) << m.text;
      EXPECT_EQ(m.subject, "Booking confirmed: Instrument tem, 2027-03-03 03:00 (Europe/Berlin)");
    }
    // People, organisations, pools and invoices by their display names or
    // ids (notify.proto "Messages"; the organisations' display names are
    // their ids here), never as resource names.
    if (m.to == "staff1@owner.test" && m.kind == "APPROVAL_REQUESTED") {
      EXPECT_TRUE(absl::StartsWith(m.subject, "待审批：Instrument nmr，")) << m.subject;
      EXPECT_TRUE(absl::StrContains(m.text, "(Asia/Shanghai)")) << m.text;
      EXPECT_TRUE(absl::StrContains(m.text, "\n申请人：Dr. ana\n")) << m.text;
    }
    if (m.to == "billadm@lab.test" && m.kind == "SETTLEMENT_TRANSFERS_DUE") {
      EXPECT_TRUE(absl::StrContains(m.text, "2027-02 的结算已完成。贵单位应付的转账：\n  -> owner: 50.00 CNY\n")) << m.text;
    }
    if (m.to == "billadm@lab.test" && m.kind == "PAYMENT_RECEIVED") {
      EXPECT_TRUE(absl::StrContains(m.text, "\n发票：inv-1\n")) << m.text;
    }
    if (m.kind == "SUBSIDY_POOL_LOW") {
      EXPECT_EQ(m.subject, "补贴资金池余额不足：sme");
      EXPECT_TRUE(absl::StrContains(m.text, "补贴资金池 sme 的余额已降至 600.00 CNY，低于 1,000.00 CNY。")) << m.text;
    }
    if (m.kind == "INVOICE_ISSUED") {
      EXPECT_TRUE(m.unsubscribe.empty()) << "a legal notice has no unsubscribe link";
      EXPECT_TRUE(absl::StrContains(m.text, "https://console.test/#/billing/invoices/inv-1")) << m.text;
      EXPECT_TRUE(absl::StrContains(m.text, "12,345.60 CNY")) << m.text;
    }
    if (m.kind == "BOOKING_CANCELLED_BY_OUTAGE") {
      EXPECT_TRUE(absl::StrContains(m.text, "2027-03-06 01:00 (Europe/Berlin) - 2027-03-06 07:00 (Europe/Berlin)"))
          << m.text;
    }
    if (m.kind == "DIGEST") {
      EXPECT_TRUE(absl::StrContains(m.text, "预约已确认：Instrument tem")) << m.text;
      // No unsubscribe headers of its own (DIGEST is not a kind one turns
      // off); its parts keep their kind's link, its footer the settings
      // (it used to call itself a required notice).
      EXPECT_TRUE(m.unsubscribe.empty()) << m.unsubscribe;
      EXPECT_TRUE(absl::StrContains(m.text, "退订此类邮件：https://console.test/unsubscribe?token=")) << m.text;
      EXPECT_TRUE(absl::StrContains(m.text, "修改通知设置：https://console.test/#/settings/notifications")) << m.text;
      EXPECT_FALSE(absl::StrContains(m.text, "必要通知")) << m.text;
    }
  }

  // ------------------------------------------------------------ dead letters
  std::map<std::string, nv::DeadLetter> dead;
  for (const auto& d : DeadLetters()) dead[d.recipient()] = d;
  ASSERT_EQ(dead.size(), 3u);
  EXPECT_EQ(dead["users/holdy"].reason(), nv::DeadLetter::DELIVERY_UNCERTAIN);
  EXPECT_EQ(dead["users/holdy"].kind(), nv::QUOTE_ISSUED);
  EXPECT_EQ(dead["users/flaky"].reason(), nv::DeadLetter::RETRIES_EXHAUSTED);
  EXPECT_EQ(dead["users/flaky"].attempts(), 3);
  EXPECT_EQ(dead["users/gone"].reason(), nv::DeadLetter::REJECTED);
  EXPECT_EQ(dead["users/gone"].attempts(), 1);
  EXPECT_EQ(dead["users/gone"].recipient_organization(), "organizations/lab");

  // Staff of another organisation see none of them; replay is scoped too.
  {
    const std::string owner_staff = cluster_->Mint("staff1", "owner", {Role::kFacilityStaff});
    nv::ListDeadLettersRequest req;
    nv::ListDeadLettersResponse resp;
    ASSERT_TRUE(notify_stub_->ListDeadLetters(Ctx(owner_staff).get(), req, &resp).ok());
    EXPECT_EQ(resp.dead_letters_size(), 0);
    nv::ReplayDeadLetterRequest r;
    r.set_name(dead["users/gone"].name());
    nv::DeadLetter out;
    grpc::Status s = notify_stub_->ReplayDeadLetter(Ctx(owner_staff).get(), r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  }
  // Replay by the consortium admin: attempted again, refused again.
  {
    nv::ReplayDeadLetterRequest r;
    r.set_name(dead["users/gone"].name());
    r.set_request_id("replay-gone");
    nv::DeadLetter out;
    grpc::Status s = notify_stub_->ReplayDeadLetter(Ctx(Admin()).get(), r, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(out.replayed_by(), "users/admin");
    ASSERT_TRUE(WaitFor([&] {
      for (const auto& d : DeadLetters()) {
        if (d.recipient() == "users/gone" && d.has_replay_time() && d.attempts() == 1) return true;
      }
      return false;
    }));
    s = notify_stub_->ReplayDeadLetter(Ctx(Admin()).get(), r, &out);  // same request_id after it died again
    EXPECT_TRUE(s.ok()) << s.error_message();  // the same request_id answers the same
  }
  // notify's events in the audit trail (usage consumes {notify}:outbox):
  // settings of ana, bo and cy's unsubscribe; four mails to the dead
  // letters (holdy, flaky, gone twice), one replay; the webhook notice.
  {
    std::map<std::string, int> types;
    ASSERT_TRUE(WaitFor([&] {
      types.clear();
      uv::ListAuditEntriesRequest req;
      req.add_source_services("notify");
      req.set_page_size(100);
      uv::ListAuditEntriesResponse resp;
      if (!usage_stub_->ListAuditEntries(Ctx(Admin()).get(), req, &resp).ok()) return false;
      for (const auto& e : resp.entries()) ++types[e.event_type()];
      return resp.entries_size() == 9;
    })) << "audit entries of notify: " << types.size();
    EXPECT_EQ(types, (std::map<std::string, int>{{"labshare.notify.v1.NotificationSettingsChanged", 3},
                                                  {"labshare.notify.v1.MailDeadLettered", 4},
                                                  {"labshare.notify.v1.DeadLetterReplayed", 1},
                                                  {"labshare.notify.v1.WebhookDisabled", 1}}));
  }
  // Nothing was sent twice, and nothing more arrives once quiet.
  ASSERT_TRUE(WaitFor([&] { return Quiet(); }));
  EXPECT_EQ(ReadMails(mail_dir_).size(), mails.size());
}

// ------------------------------------------------------------ kinds of 2026-12-07

// notify.proto "Kinds and recipients": BOOKING_CANCELLED, LEASE_REJECTED,
// LEASE_CANCELLED, ORDER_RECEIVED, QUOTE_ACCEPTED, SERVICE_SCHEDULED and
// ORDER_CANCELLED, every event from the real booking service (bookings,
// leases and orders cancelled by staff, an administrator, a billing
// administrator, the person themself, an outage window and the sweep).
// Asserted, exactly: every person's mails by kind; who did it (role and
// organisation, as inventory has the actor: a consortium administrator of
// the owner's organisation is no "staff"), the reason (or that none was
// given) and the run's time, in English and Berlin time for one person and
// Chinese and Shanghai time for another; the console link and the
// unsubscribe link of the new kinds; nothing for one's own cancellation,
// an outage's booking cancellation only BOOKING_CANCELLED_BY_OUTAGE; two
// events published again mailed once; a kind turned off not mailed; a
// digest carrying a new kind. (On the code before, none of these mails
// was sent at all.)
TEST_F(NotifyMailE2eTest, CancellationsRejectionsAndOrderStepsReachWhomTheyConcernOnce) {
  auto org = [&](const std::string& id, const std::string& display) {
    iv::CreateOrganizationRequest r;
    r.set_organization_id(id);
    r.mutable_organization()->set_display_name(display);
    r.mutable_organization()->set_type(iv::UNIVERSITY);
    r.mutable_organization()->set_membership_state(iv::MEMBER);
    r.mutable_organization()->set_tier("CORE");
    iv::Organization out;
    grpc::Status s = cluster_->inventory().CreateOrganization(Ctx(Admin()).get(), r, &out);
    ASSERT_TRUE(s.ok()) << id << ": " << s.error_message();
  };
  org("owner", "Owner Institute");
  org("lab", "Lab University");
  ASSERT_TRUE(cluster_->CreateFacility("fac", "owner").ok());
  CreateInstrument("tem", false);
  // "svc": technical service (catalogue entry "imaging"); "svc-auto" the
  // same, its reports accepted automatically 2 h after delivery;
  // "svc-late" and "svc-late-free" the same, cancelled late within 24 h of
  // the run, for 25 % of the quote and for nothing; "afm": leases of 1 to
  // 30 days with 1 h handover and return buffers.
  auto instrument = [&](const std::string& id, tv::SharingMode mode,
                        absl::Duration report_acceptance = absl::ZeroDuration(), int32_t late_fee_bps = -1) {
    iv::CreateInstrumentRequest r;
    r.set_instrument_id(id);
    auto* in = r.mutable_instrument();
    in->set_display_name(absl::StrCat("Instrument ", id));
    in->set_owner_organization("organizations/owner");
    in->set_facility("facilities/fac");
    in->set_category("electron-microscopy");
    in->mutable_original_value()->set_currency_code("CNY");
    in->mutable_original_value()->set_amount_minor(100000000);
    in->set_daily_available_hours(24);
    auto* m = in->add_modes();
    m->set_mode(mode);
    if (mode == tv::LEASE) {
      m->set_approval_required(true);
      auto* lr = m->mutable_lease_rules();
      lr->set_min_term_days(1);
      lr->set_max_term_days(30);
      *lr->mutable_handover_buffer() = ToProto(absl::Hours(1));
      *lr->mutable_return_buffer() = ToProto(absl::Hours(1));
      lr->mutable_deposit()->set_currency_code("CNY");
      lr->mutable_deposit()->set_amount_minor(100000);
      lr->set_rate_basis(iv::PER_DAY);
      lr->set_counted_hours_per_day(8);
    } else {
      auto* sr = m->mutable_slot_rules();
      *sr->mutable_min_block() = ToProto(absl::Minutes(1));
      *sr->mutable_max_block() = ToProto(absl::Hours(24));
      *sr->mutable_member_horizon() = ToProto(absl::Hours(24 * 3650));
      *sr->mutable_non_member_horizon() = ToProto(absl::Hours(24 * 3650));
      *sr->mutable_min_notice() = ToProto(absl::ZeroDuration());
      *sr->mutable_buffer() = ToProto(absl::ZeroDuration());
      *sr->mutable_no_show_grace() = ToProto(absl::Minutes(10));
      sr->set_billing_basis(iv::ACTUAL_TIME);
      *sr->mutable_billing_unit() = ToProto(absl::Minutes(15));
      if (report_acceptance > absl::ZeroDuration()) {
        *sr->mutable_report_acceptance_period() = ToProto(report_acceptance);
      }
      if (late_fee_bps >= 0) {
        *sr->mutable_late_cancel_notice() = ToProto(absl::Hours(24));
        sr->set_late_cancel_fee_bps(late_fee_bps);
      }
      auto* entry = in->add_service_catalogue();
      entry->set_entry_id("imaging");
      entry->set_display_name("Imaging, per sample");
      entry->set_unit(iv::PER_SAMPLE);
    }
    iv::Instrument out;
    grpc::Status s = cluster_->inventory().CreateInstrument(Ctx(Admin()).get(), r, &out);
    ASSERT_TRUE(s.ok()) << id << ": " << s.error_message();
    if (mode == tv::LEASE) {
      iv::CreateRateRequest rate;
      rate.set_parent("instruments/" + id);
      rate.mutable_rate()->set_mode(tv::LEASE);
      rate.mutable_rate()->set_payer_class(tv::MEMBER);
      rate.mutable_rate()->set_unit(iv::RATE_PER_DAY);
      rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
      rate.mutable_rate()->mutable_price()->set_amount_minor(300000);
      iv::Rate rate_out;
      s = cluster_->inventory().CreateRate(Ctx(Admin()).get(), rate, &rate_out);
      ASSERT_TRUE(s.ok()) << s.error_message();
    }
  };
  instrument("svc", tv::TECHNICAL_SERVICE);
  instrument("svc-auto", tv::TECHNICAL_SERVICE, absl::Hours(2));
  instrument("svc-late", tv::TECHNICAL_SERVICE, absl::ZeroDuration(), 2500);
  instrument("svc-late-free", tv::TECHNICAL_SERVICE, absl::ZeroDuration(), 0);
  instrument("afm", tv::LEASE);
  for (const std::string u : {"ana", "cy", "dan", "bo"}) CreateUser(u, "lab", tv::LAB_USER, u + "@lab.test");
  CreateUser("staff1", "owner", tv::FACILITY_STAFF, "staff1@owner.test");
  CreateUser("staff2", "owner", tv::FACILITY_STAFF, "staff2@owner.test");
  CreateUser("staff3", "owner", tv::FACILITY_STAFF, "staff3@owner.test");
  CreateUser("billadm", "lab", tv::MEMBER_BILLING_ADMIN, "billadm@lab.test");
  // A consortium administrator of the owner's organisation: said as such,
  // not as the owner's staff.
  CreateUser("root", "owner", tv::CONSORTIUM_ADMIN, "root@owner.test");
  ASSERT_FALSE(HasFailure());

  // ana: English, Berlin; staff1: English; dan: BOOKING_CANCELLED off;
  // staff3: REPORT_AUTO_ACCEPTED off; bo: a daily digest. The others:
  // Chinese, the facility's zone (none: the service's Asia/Shanghai).
  auto settings = [&](const std::string& user, const std::function<void(nv::UpdateNotificationSettingsRequest*)>& f) {
    nv::UpdateNotificationSettingsRequest r;
    r.mutable_settings()->set_name("users/" + user + "/notificationSettings");
    f(&r);
    nv::NotificationSettings out;
    grpc::Status s = notify_stub_->UpdateNotificationSettings(Ctx(Admin()).get(), r, &out);
    ASSERT_TRUE(s.ok()) << user << ": " << s.error_message();
  };
  settings("ana", [](nv::UpdateNotificationSettingsRequest* r) {
    r->mutable_settings()->set_language("en");
    r->mutable_settings()->set_time_zone("Europe/Berlin");
    r->mutable_update_mask()->add_paths("language");
    r->mutable_update_mask()->add_paths("time_zone");
  });
  settings("staff1", [](nv::UpdateNotificationSettingsRequest* r) {
    r->mutable_settings()->set_language("en");
    r->mutable_update_mask()->add_paths("language");
  });
  settings("dan", [](nv::UpdateNotificationSettingsRequest* r) {
    r->mutable_settings()->add_disabled_kinds(nv::BOOKING_CANCELLED);
    r->mutable_update_mask()->add_paths("disabled_kinds");
  });
  settings("staff3", [](nv::UpdateNotificationSettingsRequest* r) {
    r->mutable_settings()->add_disabled_kinds(nv::REPORT_AUTO_ACCEPTED);
    r->mutable_update_mask()->add_paths("disabled_kinds");
  });
  settings("bo", [](nv::UpdateNotificationSettingsRequest* r) {
    r->mutable_settings()->set_delivery(nv::NotificationSettings::DAILY_DIGEST);
    r->mutable_update_mask()->add_paths("delivery");
  });
  ASSERT_FALSE(HasFailure());

  const std::string ana = cluster_->Mint("ana", "lab", {Role::kLabUser});
  const std::string cy = cluster_->Mint("cy", "lab", {Role::kLabUser});
  const std::string staff1 = cluster_->Mint("staff1", "owner", {Role::kFacilityStaff});
  const std::string staff2 = cluster_->Mint("staff2", "owner", {Role::kFacilityStaff});
  const std::string billadm = cluster_->Mint("billadm", "lab", {Role::kMemberBillingAdmin});
  const std::string root = cluster_->Mint("root", "owner", {Role::kConsortiumAdmin});
  bk::BookingService::Stub& booking = cluster_->booking(0);
  auto ok = [](const grpc::Status& s, const std::string& what) {
    EXPECT_TRUE(s.ok()) << what << ": " << GrpcErrorReason(s) << " " << s.error_message();
  };
  auto outage = [&](const std::string& instrument, absl::Time start, absl::Time end, const std::string& reason) {
    iv::CreateMaintenanceWindowRequest w;
    w.set_parent("instruments/" + instrument);
    w.set_request_id("outage-" + instrument);
    auto* mw = w.mutable_maintenance_window();
    *mw->mutable_interval()->mutable_start_time() = ToProto(start);
    *mw->mutable_interval()->mutable_end_time() = ToProto(end);
    mw->set_reason(reason);
    mw->set_outage(true);
    iv::MaintenanceWindow out;
    ok(cluster_->inventory().CreateMaintenanceWindow(Ctx(Admin()).get(), w, &out), "outage on " + instrument);
  };

  // ------------------------------------------------------------ bookings
  auto cancel_booking = [&](const bk::Booking& b, const std::string& token, const std::string& reason) {
    bk::CancelBookingRequest r;
    r.set_name(b.name());
    r.set_reason(reason);
    r.set_request_id("cancel-" + b.name());
    bk::Booking out;
    ok(booking.CancelBooking(Ctx(token).get(), r, &out), "cancel " + b.name());
    EXPECT_EQ(out.state(), bk::Booking::CANCELLED);
  };
  const bk::Booking by_staff = Book("ana", "tem", kT0 + absl::Hours(24), absl::Hours(1));  // 01:00 Berlin, Mar 2
  const bk::Booking by_admin = Book("ana", "tem", kT0 + absl::Hours(26), absl::Hours(1));
  const bk::Booking by_billadm = Book("ana", "tem", kT0 + absl::Hours(28), absl::Hours(1));
  const bk::Booking by_ana = Book("ana", "tem", kT0 + absl::Hours(30), absl::Hours(1));
  const bk::Booking by_outage = Book("ana", "tem", kT0 + absl::Hours(34), absl::Hours(1));
  const bk::Booking cy_booking = Book("cy", "tem", kT0 + absl::Hours(38), absl::Hours(1));  // 22:00 Shanghai
  const bk::Booking dan_booking = Book("dan", "tem", kT0 + absl::Hours(40), absl::Hours(1));
  const bk::Booking bo_booking = Book("bo", "tem", kT0 + absl::Hours(42), absl::Hours(1));
  ASSERT_FALSE(HasFailure());
  cancel_booking(by_staff, staff1, "magnet quench");
  cancel_booking(by_admin, root, "consortium audit");
  cancel_booking(by_billadm, billadm, "budget frozen");
  cancel_booking(by_ana, ana, "not needed");
  cancel_booking(cy_booking, staff2, "");
  cancel_booking(dan_booking, staff1, "magnet quench");
  cancel_booking(bo_booking, staff1, "magnet quench");
  outage("tem", kT0 + absl::Hours(33), kT0 + absl::Hours(36), "power cut");

  // ------------------------------------------------------------ leases
  auto request_lease = [&](const std::string& id, const std::string& token, absl::Time start) {
    bk::RequestLeaseRequest r;
    r.set_lease_id(id);
    r.set_request_id("request-" + id);
    r.mutable_lease()->set_instrument("instruments/afm");
    r.mutable_lease()->set_purpose("thin-film survey");
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(start);
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(start + absl::Hours(24));
    bk::Lease out;
    ok(booking.RequestLease(Ctx(token).get(), r, &out), "request " + id);
    return out;
  };
  auto cancel_lease = [&](const std::string& id, const std::string& token, const std::string& reason) {
    bk::CancelLeaseRequest r;
    r.set_name("leases/" + id);
    r.set_reason(reason);
    r.set_request_id("cancel-" + id);
    bk::Lease out;
    ok(booking.CancelLease(Ctx(token).get(), r, &out), "cancel " + id);
  };
  request_lease("lease-expires", ana, kT0 + absl::Hours(3));  // its block starts at +2 h
  request_lease("lease-rejected", cy, kT0 + absl::Hours(48));
  request_lease("lease-by-staff", ana, kT0 + absl::Hours(96));
  request_lease("lease-by-ana", ana, kT0 + absl::Hours(144));
  request_lease("lease-outage", ana, kT0 + absl::Hours(192));
  request_lease("lease-by-billadm", ana, kT0 + absl::Hours(240));
  ASSERT_FALSE(HasFailure());
  {
    bk::RejectLeaseRequest r;
    r.set_name("leases/lease-rejected");
    r.set_reason("afm booked for calibration");
    r.set_request_id("reject-lease");
    bk::Lease out;
    ok(booking.RejectLease(Ctx(staff1).get(), r, &out), "reject");
    bk::ApproveLeaseRequest a;
    a.set_name("leases/lease-outage");
    a.set_request_id("approve-lease");
    a.mutable_contract()->set_rate_basis(bk::LeaseContract::DAILY);
    a.mutable_contract()->mutable_rate()->set_currency_code("CNY");
    a.mutable_contract()->mutable_rate()->set_amount_minor(300000);
    ok(booking.ApproveLease(Ctx(staff1).get(), a, &out), "approve");
  }
  cancel_lease("lease-by-staff", staff2, "lent to another project");
  cancel_lease("lease-by-ana", ana, "plans changed");
  cancel_lease("lease-by-billadm", billadm, "budget frozen");
  outage("afm", kT0 + absl::Hours(200), kT0 + absl::Hours(202), "power cut");

  // ------------------------------------------------------------ orders
  auto order = [&](const std::string& id, const std::string& token, const std::string& instrument = "svc") {
    bk::CreateServiceOrderRequest r;
    r.set_service_order_id(id);
    r.set_request_id("order-" + id);
    r.mutable_service_order()->set_instrument("instruments/" + instrument);
    r.mutable_service_order()->set_service_entry_id("imaging");
    r.mutable_service_order()->set_sample_count(3);
    r.mutable_service_order()->set_sample_description("three thin films");
    bk::ServiceOrder out;
    ok(booking.CreateServiceOrder(Ctx(token).get(), r, &out), "order " + id);
    return out;
  };
  auto cancel_order = [&](const std::string& id, const std::string& token, const std::string& reason) {
    bk::CancelOrderRequest r;
    r.set_name("serviceOrders/" + id);
    r.set_reason(reason);
    r.set_request_id("cancel-" + id);
    bk::ServiceOrder out;
    ok(booking.CancelOrder(Ctx(token).get(), r, &out), "cancel " + id);
  };
  auto schedule = [&](const std::string& id, absl::Time start, const std::string& step) {
    bk::ScheduleServiceRequest r;
    r.set_name("serviceOrders/" + id);
    *r.mutable_interval()->mutable_start_time() = ToProto(start);
    *r.mutable_interval()->mutable_end_time() = ToProto(start + absl::Hours(2));
    r.set_request_id(step);
    bk::ServiceOrder out;
    ok(booking.ScheduleService(Ctx(staff1).get(), r, &out), step);
    return out;
  };
  // Quoted (3 samples at 296.00 CNY), the quote accepted by `client`, the
  // samples received.
  auto samples_in = [&](bk::ServiceOrder& o, const std::string& client) {
    const std::string id(absl::StripPrefix(o.name(), "serviceOrders/"));
    bk::IssueQuoteRequest q;
    q.set_name(o.name());
    q.mutable_quote()->mutable_per_sample_fee()->set_currency_code("CNY");
    q.mutable_quote()->mutable_per_sample_fee()->set_amount_minor(29600);
    *q.mutable_quote()->mutable_valid_until() = ToProto(kT0 + absl::Hours(24 * 14));
    q.set_request_id("quote-" + id);
    ok(booking.IssueQuote(Ctx(staff1).get(), q, &o), "quote " + id);
    bk::AcceptQuoteRequest a;
    a.set_name(o.name());
    a.set_quote_etag(o.quote().quote_etag());
    a.set_request_id("accept-" + id);
    ok(booking.AcceptQuote(Ctx(client).get(), a, &o), "accept " + id);
    bk::ReceiveSamplesRequest rs;
    rs.set_name(o.name());
    rs.set_received_sample_count(3);
    rs.set_request_id("receive-" + id);
    ok(booking.ReceiveSamples(Ctx(staff1).get(), rs, &o), "receive " + id);
  };
  bk::ServiceOrder run = order("order-run", ana);
  samples_in(run, ana);
  ASSERT_FALSE(HasFailure());
  schedule("order-run", kT0 + absl::Hours(50), "schedule-1");  // 03:00 Berlin, Mar 3
  run = schedule("order-run", kT0 + absl::Hours(54), "schedule-2");  // moved: 07:00 Berlin
  {
    bk::CancelBookingRequest r;  // staff unschedule the run
    r.set_name(run.booking());
    r.set_request_id("unschedule");
    bk::Booking out;
    ok(booking.CancelBooking(Ctx(staff2).get(), r, &out), "unschedule");
  }
  schedule("order-run", kT0 + absl::Hours(60), "schedule-3");
  outage("svc", kT0 + absl::Hours(59), kT0 + absl::Hours(63), "compressor failure");
  order("order-by-cy", cy);
  cancel_order("order-by-cy", cy, "samples degraded");
  order("order-by-staff", ana);
  cancel_order("order-by-staff", staff2, "no capacity this month");
  order("order-by-billadm", ana);
  cancel_order("order-by-billadm", billadm, "budget frozen");
  order("order-by-admin", ana);
  cancel_order("order-by-admin", root, "duplicate order");
  // Cancelled by ana's billing admin 12 h before the run, within the 24 h
  // notice: late, with the fee in force pinned on the order (25 %; 0).
  for (const auto& [id, instrument] : std::vector<std::pair<std::string, std::string>>{
           {"order-late-fee", "svc-late"}, {"order-late-free", "svc-late-free"}}) {
    bk::ServiceOrder o = order(id, ana, instrument);
    samples_in(o, ana);
    schedule(id, kT0 + absl::Hours(12), "schedule-" + id);
    cancel_order(id, billadm, "budget frozen");
  }
  ASSERT_FALSE(HasFailure());

  // ------------------------------------------------------------ reports
  // Run now (kT0), started and its report delivered at once: cy's on svc
  // (no acceptance period: the mail says nothing of a deadline), which cy
  // accepts herself (no further mail); ana's on svc-auto (2 h to dispute:
  // until kT0 + 2 h, 03:00 in Berlin), which the sweep accepts below.
  auto deliver = [&](const std::string& id, const std::string& client, const std::string& instrument) {
    bk::ServiceOrder o = order(id, client, instrument);
    samples_in(o, client);
    schedule(id, kT0, "schedule-" + id);
    bk::StartServiceRequest st;
    st.set_name(o.name());
    st.set_request_id("start-" + id);
    ok(booking.StartService(Ctx(staff1).get(), st, &o), "start " + id);
    bk::DeliverReportRequest d;
    d.set_name(o.name());
    d.mutable_report()->set_uri("dms://reports/" + id);
    d.mutable_report()->set_summary("12 images, grid 2 partly covered");
    d.set_request_id("deliver-" + id);
    ok(booking.DeliverReport(Ctx(staff1).get(), d, &o), "deliver " + id);
    return o;
  };
  const bk::ServiceOrder report_cy = deliver("report-cy", cy, "svc");
  EXPECT_FALSE(report_cy.has_report_accept_deadline());
  {
    bk::AcceptReportRequest a;
    a.set_name(report_cy.name());
    a.set_request_id("accept-report-cy");
    bk::ServiceOrder out;
    ok(booking.AcceptReport(Ctx(cy).get(), a, &out), "accept report-cy");
    EXPECT_EQ(out.state(), bk::ServiceOrder::COMPLETED);
  }
  const bk::ServiceOrder report_ana = deliver("report-ana", ana, "svc-auto");
  EXPECT_EQ(FromProto(report_ana.report_accept_deadline()), kT0 + absl::Hours(2));
  ASSERT_FALSE(HasFailure());

  // ------------------------------------------------------------ two events published again
  auto republish = [&](const std::string& instrument, const std::function<bool(const bk::BookingEvent&)>& which) {
    auto r = cluster_->redis().Command({"XRANGE", Partition(instrument), "-", "+"});
    ASSERT_TRUE(r.ok());
    int found = 0;
    for (const auto& entry : r->elements) {
      const auto& f = entry.elements[1].elements;
      for (size_t i = 0; i + 1 < f.size(); i += 2) {
        bk::BookingEvent e;
        if (f[i].str == "payload" && e.ParseFromString(f[i + 1].str) && which(e)) {
          Publish(Partition(instrument), "labshare.booking.v1.BookingEvent", f[i + 1].str);
          ++found;
        }
      }
    }
    EXPECT_EQ(found, 1) << instrument;
  };
  republish("tem", [&](const bk::BookingEvent& e) {
    return e.has_booking_cancelled() && e.booking_cancelled().booking().name() == by_staff.name();
  });
  republish("svc", [&](const bk::BookingEvent& e) {
    return e.has_service_order_cancelled() && e.service_order_cancelled().service_order().name() ==
                                                  "serviceOrders/order-by-billadm";
  });

  // ------------------------------------------------------------ the sweep expires a request and accepts ana's report; bo's digest (09:00)
  WriteClock(clock_file_, kT0 + absl::Hours(2) + absl::Minutes(30));
  ASSERT_TRUE(WaitFor([&] {
    bk::GetLeaseRequest g;
    g.set_name("leases/lease-expires");
    bk::Lease out;
    return booking.GetLease(Ctx(Admin()).get(), g, &out).ok() && out.state() == bk::Lease::CANCELLED;
  })) << "the sweep never expired the lease request";
  ASSERT_TRUE(WaitFor([&] {
    bk::GetServiceOrderRequest g;
    g.set_name(report_ana.name());
    bk::ServiceOrder out;
    return booking.GetServiceOrder(Ctx(Admin()).get(), g, &out).ok() && out.state() == bk::ServiceOrder::COMPLETED &&
           out.report_auto_accepted();
  })) << "the sweep never accepted ana's report";

  using V = std::vector<std::string>;
  // staff3 turned REPORT_AUTO_ACCEPTED off.
  const V staff3_mails = {"APPROVAL_REQUESTED", "APPROVAL_REQUESTED", "APPROVAL_REQUESTED", "APPROVAL_REQUESTED",
                          "APPROVAL_REQUESTED", "APPROVAL_REQUESTED", "ORDER_CANCELLED", "ORDER_CANCELLED",
                          "ORDER_CANCELLED", "ORDER_CANCELLED", "ORDER_RECEIVED", "ORDER_RECEIVED", "ORDER_RECEIVED",
                          "ORDER_RECEIVED", "ORDER_RECEIVED", "ORDER_RECEIVED", "ORDER_RECEIVED", "ORDER_RECEIVED",
                          "ORDER_RECEIVED", "QUOTE_ACCEPTED", "QUOTE_ACCEPTED", "QUOTE_ACCEPTED", "QUOTE_ACCEPTED",
                          "QUOTE_ACCEPTED"};
  V staff_mails = staff3_mails;
  staff_mails.push_back("REPORT_AUTO_ACCEPTED");
  std::map<std::string, V> want = {
      {"ana@lab.test",
       {"BOOKING_CANCELLED", "BOOKING_CANCELLED", "BOOKING_CANCELLED", "BOOKING_CANCELLED_BY_OUTAGE",
        "BOOKING_CONFIRMED", "BOOKING_CONFIRMED", "BOOKING_CONFIRMED", "BOOKING_CONFIRMED", "BOOKING_CONFIRMED",
        "LEASE_APPROVED", "LEASE_CANCELLED", "LEASE_CANCELLED", "LEASE_CANCELLED", "LEASE_CANCELLED",
        "ORDER_CANCELLED", "ORDER_CANCELLED", "ORDER_CANCELLED", "ORDER_CANCELLED", "ORDER_CANCELLED",
        "ORDER_CANCELLED", "ORDER_CANCELLED", "QUOTE_ISSUED", "QUOTE_ISSUED", "QUOTE_ISSUED", "QUOTE_ISSUED",
        "REPORT_AUTO_ACCEPTED", "REPORT_DELIVERED", "SERVICE_SCHEDULED", "SERVICE_SCHEDULED", "SERVICE_SCHEDULED",
        "SERVICE_SCHEDULED", "SERVICE_SCHEDULED", "SERVICE_SCHEDULED"}},
      {"cy@lab.test",
       {"BOOKING_CANCELLED", "BOOKING_CONFIRMED", "LEASE_REJECTED", "QUOTE_ISSUED", "REPORT_DELIVERED",
        "SERVICE_SCHEDULED"}},
      {"dan@lab.test", {"BOOKING_CONFIRMED"}},
      {"bo@lab.test", {"DIGEST"}},
      {"staff1@owner.test", staff_mails},
      {"staff2@owner.test", staff_mails},
      {"staff3@owner.test", staff3_mails},
  };
  size_t total = 0;
  for (const auto& [who, kinds] : want) total += kinds.size();
  ASSERT_TRUE(WaitFor([&] { return Quiet() && ReadMails(mail_dir_).size() >= total; }))
      << "the notifier did not settle; mails so far: " << ReadMails(mail_dir_).size() << " of " << total;
  ASSERT_TRUE(WaitFor([&] { return Quiet(); }));
  const std::vector<Mail> mails = ReadMails(mail_dir_);
  EXPECT_EQ(ByRecipient(mails), want);

  // ------------------------------------------------------------ what they say
  // The mails of `to` of `kind` whose text has `has`: exactly one, returned.
  auto one = [&](const std::string& to, const std::string& kind, const std::string& has) -> Mail {
    std::vector<Mail> found;
    for (const Mail& m : mails) {
      if (m.to == to && m.kind == kind && absl::StrContains(m.text, has)) found.push_back(m);
    }
    EXPECT_EQ(found.size(), 1u) << to << " " << kind << " with \"" << has << "\"";
    return found.empty() ? Mail() : found[0];
  };
  auto has = [](const Mail& m, const std::string& text) {
    EXPECT_TRUE(absl::StrContains(m.text, text)) << m.kind << " to " << m.to << " lacks \"" << text << "\":\n"
                                                 << m.text;
  };
  // The mail's unsubscribe link names its recipient and kind (validate_only).
  auto unsubscribes = [&](const Mail& m, const std::string& user, nv::NotificationKind kind) {
    ASSERT_TRUE(absl::StartsWith(m.unsubscribe, "https://console.test/unsubscribe?token=")) << m.unsubscribe;
    nv::UnsubscribeRequest u;
    u.set_token(m.unsubscribe.substr(m.unsubscribe.find("token=") + 6));
    u.set_validate_only(true);
    nv::UnsubscribeResponse out;
    grpc::Status s = notify_stub_->Unsubscribe(Ctx("").get(), u, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(out.user(), user);
    EXPECT_EQ(out.kind(), kind);
  };
  const std::string id_of_staff = std::string(absl::StripPrefix(by_staff.name(), "bookings/"));
  Mail m = one("ana@lab.test", "BOOKING_CANCELLED", id_of_staff);
  EXPECT_EQ(m.subject, "Booking cancelled: Instrument tem, 2027-03-02 01:00 (Europe/Berlin)");
  has(m, "Hello Dr. ana,");
  has(m, "was cancelled by staff of Owner Institute.\nReason: magnet quench\nYou will not be charged.");
  has(m, "Open in LabShare: https://console.test/#/lab/bookings");
  ASSERT_NO_FATAL_FAILURE(unsubscribes(m, "users/ana", nv::BOOKING_CANCELLED));
  has(one("ana@lab.test", "BOOKING_CANCELLED", std::string(absl::StripPrefix(by_admin.name(), "bookings/"))),
      "was cancelled by a consortium administrator.\nReason: consortium audit");
  has(one("ana@lab.test", "BOOKING_CANCELLED", std::string(absl::StripPrefix(by_billadm.name(), "bookings/"))),
      "was cancelled by a billing administrator of Lab University.\nReason: budget frozen");
  m = one("cy@lab.test", "BOOKING_CANCELLED", "");
  EXPECT_EQ(m.subject, "预约已被取消：Instrument tem，2027-03-02 22:00 (Asia/Shanghai)");
  has(m, "Dr. cy，您好：");
  has(m, "已被 Owner Institute 的工作人员 取消。\n原因：未说明\n不收取费用。");
  has(m, "退订此类邮件：https://console.test/unsubscribe?token=");
  // ana's own cancellation and the outage's: no BOOKING_CANCELLED (above);
  // the outage's is BOOKING_CANCELLED_BY_OUTAGE.
  has(one("ana@lab.test", "BOOKING_CANCELLED_BY_OUTAGE", ""), std::string(absl::StripPrefix(by_outage.name(), "bookings/")));

  m = one("cy@lab.test", "LEASE_REJECTED", "");
  EXPECT_EQ(m.subject, "租赁被拒绝：Instrument afm");
  has(m, "您对 Instrument afm 的租赁申请 lease-rejected 未获批准。");
  has(m, "原因：afm booked for calibration");
  has(m, "在 LabShare 中查看：https://console.test/#/lab/bookings");
  m = one("ana@lab.test", "LEASE_CANCELLED", "lease-by-staff");
  EXPECT_EQ(m.subject, "Lease cancelled: Instrument afm");
  has(m, "Your lease lease-by-staff of Instrument afm was cancelled by staff of Owner Institute.\nTerm: 2027-03-05 01:00 "
         "(Europe/Berlin) - 2027-03-06 01:00 (Europe/Berlin)\nReason: lent to another project\nNothing is charged.");
  EXPECT_FALSE(m.unsubscribe.empty());
  // The lessee's billing administrator, as inventory has them (the event
  // alone says only "of Lab University").
  has(one("ana@lab.test", "LEASE_CANCELLED", "lease-by-billadm"),
      "was cancelled by a billing administrator of Lab University.");
  m = one("ana@lab.test", "LEASE_CANCELLED", "lease-expires");
  EXPECT_EQ(m.subject, "Lease request expired: Instrument afm");
  has(m, "was not approved before its term (handover included) began, and was cancelled.");
  m = one("ana@lab.test", "LEASE_CANCELLED", "lease-outage");
  EXPECT_EQ(m.subject, "Lease cancelled by an outage: Instrument afm");
  has(m, "because the instrument is unavailable 2027-03-09 09:00 (Europe/Berlin) - 2027-03-09 11:00 (Europe/Berlin)."
         "\nReason: power cut");

  for (const std::string who : {"staff1@owner.test", "staff2@owner.test"}) {
    const bool en = who == "staff1@owner.test";
    m = one(who, "ORDER_RECEIVED", en ? "Order: order-run" : "订单：order-run");
    EXPECT_EQ(m.subject, en ? "New service order: order-run on Instrument svc" : "新技术服务订单：order-run（Instrument svc）");
    has(m, en ? "Service: Imaging, per sample\nClient: Lab University\nRequester: Dr. ana\nSamples: 3\n"
                "Description: three thin films"
              : "服务项目：Imaging, per sample\n客户：Lab University\n申请人：Dr. ana\n样品数：3\n说明：three thin films");
    has(m, "https://console.test/#/staff/orders");
    EXPECT_FALSE(m.unsubscribe.empty());
    m = one(who, "QUOTE_ACCEPTED", en ? "order order-run on" : "订单 order-run 的报价");
    EXPECT_EQ(m.subject, en ? "Quote accepted: order order-run" : "报价已接受：订单 order-run");
    has(m, en ? "The client Lab University accepted the quote for service order order-run on Instrument svc: 888.00 CNY."
              : "客户 Lab University 已接受 Instrument svc 上技术服务订单 order-run 的报价：888.00 CNY。");
    // The client's side cancelled: its requester cy, ana's billing admin (late: no).
    m = one(who, "ORDER_CANCELLED", "order-by-cy");
    EXPECT_EQ(m.subject, en ? "Service order cancelled by the client: order-by-cy" : "客户取消了技术服务订单：order-by-cy");
    has(m, en ? "Requester: Dr. cy\nCancelled by: a user of Lab University\nReason: samples degraded"
              : "申请人：Dr. cy\n取消人：Lab University 的用户\n原因：samples degraded");
    has(one(who, "ORDER_CANCELLED", "order-by-billadm"),
        en ? "Cancelled by: a billing administrator of Lab University" : "取消人：Lab University 的财务管理员");
    // Late: the fee booking pinned on the order, as billing charges it
    // (25 % of 888.00 CNY; 0: none). It used to say "The late-cancellation
    // fee applies" whatever the fee.
    m = one(who, "ORDER_CANCELLED", "order-late-fee");
    has(m, en ? "The client Lab University cancelled service order order-late-fee on Instrument svc-late, later than "
                "the cancellation notice before its run.\nRequester: Dr. ana\nCancelled by: a billing administrator "
                "of Lab University\nReason: budget frozen\nA late-cancellation fee of 222.00 CNY is charged."
              : "客户 Lab University 取消了 Instrument svc-late 上的技术服务订单 order-late-fee，晚于运行前的取消期限。\n"
                "申请人：Dr. ana\n取消人：Lab University 的财务管理员\n原因：budget frozen\n将收取逾期取消费 222.00 CNY。");
    has(one(who, "ORDER_CANCELLED", "order-late-free"),
        en ? "Reason: budget frozen\nNo late-cancellation fee is charged." : "原因：budget frozen\n不收取逾期取消费。");
  }
  m = one("ana@lab.test", "SERVICE_SCHEDULED", "is scheduled.\nTime: 2027-03-03 03:00 (Europe/Berlin)");
  EXPECT_EQ(m.subject, "Service run scheduled: order order-run, 2027-03-03 03:00 (Europe/Berlin)");
  has(m, "Open in LabShare: https://console.test/#/lab/orders/order-run");
  m = one("ana@lab.test", "SERVICE_SCHEDULED", "was moved");
  EXPECT_EQ(m.subject, "Service run moved: order order-run, 2027-03-03 07:00 (Europe/Berlin)");
  has(m, "New time: 2027-03-03 07:00 (Europe/Berlin) - 2027-03-03 09:00 (Europe/Berlin)");
  one("ana@lab.test", "SERVICE_SCHEDULED", "2027-03-03 13:00 (Europe/Berlin)");
  m = one("ana@lab.test", "ORDER_CANCELLED", "was cancelled by staff of Owner Institute. The order stays open");
  EXPECT_EQ(m.subject, "Service run cancelled: order order-run");
  m = one("ana@lab.test", "ORDER_CANCELLED", "because the instrument is out of service");
  EXPECT_EQ(m.subject, "Service run cancelled by an outage: order order-run");
  m = one("ana@lab.test", "ORDER_CANCELLED", "order-by-staff");
  EXPECT_EQ(m.subject, "Service order cancelled: order-by-staff");
  has(m, "was cancelled by staff of Owner Institute.\nReason: no capacity this month");
  has(m, "Open in LabShare: https://console.test/#/lab/orders/order-by-staff");
  has(one("ana@lab.test", "ORDER_CANCELLED", "order-by-billadm"),
      "was cancelled by a billing administrator of Lab University.\nReason: budget frozen");
  m = one("ana@lab.test", "ORDER_CANCELLED", "order-late-fee");
  has(m, "Your service order order-late-fee on Instrument svc-late was cancelled by a billing administrator of Lab "
         "University, later than the instrument's cancellation notice before its run.\nReason: budget frozen\n"
         "A late-cancellation fee of 222.00 CNY is charged.");
  has(one("ana@lab.test", "ORDER_CANCELLED", "order-late-free"),
      "Reason: budget frozen\nNo late-cancellation fee is charged.");
  // root belongs to the owner's organisation: the event alone would say
  // "staff of Owner Institute".
  has(one("ana@lab.test", "ORDER_CANCELLED", "order-by-admin"),
      "was cancelled by a consortium administrator.\nReason: duplicate order");

  // Reports: the deadline (in ana's zone) and what follows it; none
  // without a period; the sweep's acceptance to ana and the owner's staff
  // (staff3 turned it off), cy's own acceptance mailed to nobody.
  m = one("ana@lab.test", "REPORT_DELIVERED", "report-ana");
  EXPECT_EQ(m.subject, "Report delivered: order report-ana");
  has(m, "The report of your service order report-ana on Instrument svc-auto was delivered.\n"
         "12 images, grid 2 partly covered\nYou may dispute it in LabShare before 2027-03-01 03:00 (Europe/Berlin). "
         "From then on the report is accepted automatically and the quote of 888.00 CNY is charged.");
  has(m, "Open in LabShare: https://console.test/#/lab/orders/report-ana");
  m = one("cy@lab.test", "REPORT_DELIVERED", "report-cy");
  EXPECT_EQ(m.subject, "报告已交付：订单 report-cy");
  has(m, "您在 Instrument svc 上的技术服务订单 report-cy 的报告已交付。\n12 images, grid 2 partly covered\n\n"
         "在 LabShare 中查看：https://console.test/#/lab/orders/report-cy");
  EXPECT_FALSE(absl::StrContains(m.text, "异议")) << m.text;
  m = one("ana@lab.test", "REPORT_AUTO_ACCEPTED", "");
  EXPECT_EQ(m.subject, "Report accepted automatically: order report-ana");
  has(m, "The report of your service order report-ana on Instrument svc-auto was not disputed before its acceptance "
         "period ended and was accepted automatically on 2027-03-01 03:00 (Europe/Berlin).\nThe order is complete; "
         "the quote of 888.00 CNY is charged.");
  has(m, "Open in LabShare: https://console.test/#/lab/orders/report-ana");
  ASSERT_NO_FATAL_FAILURE(unsubscribes(m, "users/ana", nv::REPORT_AUTO_ACCEPTED));
  m = one("staff1@owner.test", "REPORT_AUTO_ACCEPTED", "");
  EXPECT_EQ(m.subject, "Report accepted automatically: order report-ana");
  has(m, "The report of service order report-ana on Instrument svc-auto was accepted automatically on 2027-03-01 "
         "10:00 (Asia/Shanghai): the client Lab University did not dispute it before its acceptance period ended.\n"
         "The order is complete.\nRequester: Dr. ana\nCharged: 888.00 CNY");
  has(m, "Open in LabShare: https://console.test/#/staff/orders");
  EXPECT_FALSE(m.unsubscribe.empty());
  m = one("staff2@owner.test", "REPORT_AUTO_ACCEPTED", "");
  EXPECT_EQ(m.subject, "报告已自动验收：订单 report-ana");
  has(m, "Instrument svc-auto 上技术服务订单 report-ana 的报告已于 2027-03-01 10:00 (Asia/Shanghai) 自动验收："
         "客户 Lab University 在验收期内未提出异议。\n订单已完成。\n申请人：Dr. ana\n收费：888.00 CNY");

  // bo's digest carries the new kind with its unsubscribe link.
  m = one("bo@lab.test", "DIGEST", "");
  has(m, "预约已被取消：Instrument tem");
  has(m, "已被 Owner Institute 的工作人员 取消。\n原因：magnet quench");
  has(m, "退订此类邮件：https://console.test/unsubscribe?token=");
  // Nothing more once quiet.
  ASSERT_TRUE(WaitFor([&] { return Quiet(); }));
  EXPECT_EQ(ReadMails(mail_dir_).size(), mails.size());
}

}  // namespace
}  // namespace labshare::testing
