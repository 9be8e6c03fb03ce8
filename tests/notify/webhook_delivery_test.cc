// Deliveries to a real HTTPS receiver process (webhook_receiver.py: python3
// http.server + ssl, a certificate of the test CA) that verifies every
// signature, timestamp and id: delivery of the organisation's own events
// only, retries with backoff, the dead letters, replay, secret rotation,
// automatic disabling with its WebhookDisabled event (itself delivered to
// another webhook of the organisation), and the module's own threads.
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/http_client.h"
#include "services/notify/webhook_rules.h"
#include "tests/notify/webhook_test_util.h"
#include "tests/support/process.h"
#include "tests/support/test_pki.h"

namespace labshare::notify::testing {
namespace {

namespace process = labshare::testing::process;
using S = v1::WebhookService::Stub;

constexpr char kCancelled[] = "labshare.booking.v1.BookingCancelled";
constexpr char kIssued[] = "labshare.billing.v1.InvoiceIssued";
constexpr char kDisabled[] = "labshare.notify.v1.WebhookDisabled";

struct Request {
  std::string path, id, timestamp;
  bool sig_ok = false, ts_ok = false, body_ok = false;
  int status = 0;
  std::string type, organization;
};

// The receiver process, started per test and stopped by its pid.
class Receiver {
 public:
  ~Receiver() {
    if (pid_ > 0) process::StopProcess(pid_);
  }
  void Start() {
    const auto& pki = labshare::testing::TestPki::Shared();
    const auto& cert = pki.Service("notify");
    dir_ = labshare::testing::TestTempDir();
    const std::string tag = std::to_string(++count_);
    port_file_ = dir_ + "/receiver" + tag + ".port";
    log_file_ = dir_ + "/receiver" + tag + ".log";
    ca_file_ = pki.ca_file();
    auto pid = process::Spawn({"/usr/bin/python3", std::string(LABSHARE_SOURCE_DIR) + "/tests/notify/webhook_receiver.py",
                               cert.cert_file, cert.key_file, port_file_, log_file_},
                              dir_ + "/receiver" + tag + ".out");
    ASSERT_TRUE(pid.ok()) << pid.status();
    pid_ = *pid;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (port_ == 0 && absl::Now() < deadline) {
      std::ifstream in(port_file_);
      if (!(in >> port_)) port_ = 0;
      if (port_ == 0) absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_NE(port_, 0) << "the receiver did not start: " << process::FileTail(dir_ + "/receiver" + tag + ".out", 2000);
  }
  std::string Url(const std::string& path) const { return "https://localhost:" + std::to_string(port_) + path; }
  const std::string& ca_file() const { return ca_file_; }
  void Control(const std::string& path, const std::string& secret, int fail) {
    HttpOptions o;
    o.ca_file = ca_file_;
    std::vector<std::pair<std::string, std::string>> fields = {{"path", path}, {"fail", std::to_string(fail)}};
    if (!secret.empty()) fields.push_back({"secret", secret});
    auto r = HttpPostForm(Url("/_control"), fields, o);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, 200);
  }
  std::vector<Request> Requests(const std::string& path = "") const {
    std::vector<Request> out;
    std::ifstream in(log_file_);
    std::string line;
    while (std::getline(in, line)) {
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      if (f.size() != 9) continue;
      Request r{f[0], f[1], f[2], f[3] == "1", f[4] == "1", f[5] == "1", std::stoi(f[6]), f[7], f[8]};
      if (path.empty() || r.path == path) out.push_back(r);
    }
    return out;
  }

 private:
  static inline int count_ = 0;
  pid_t pid_ = 0;
  int port_ = 0;
  std::string dir_, port_file_, log_file_, ca_file_;
};

class WebhookDeliveryTest : public WebhookFixture {
 protected:
  void SetUp() override {
    receiver_.Start();
    if (HasFatalFailure()) return;
    WebhookOptions o;
    o.limits.max_attempts = 3;
    o.limits.disable_after = 4;
    o.limits.backoff_initial = backoff_initial_;
    o.limits.backoff_max = std::max(backoff_initial_, absl::Milliseconds(80));
    o.limits.dead_on_disable_batch = dead_on_disable_batch_;
    o.limits.claim_lease = absl::Seconds(30);
    o.timeout = absl::Seconds(10);
    o.ca_file = receiver_.ca_file();
    o.allow_private_addresses = true;  // the receiver is on loopback
    o.poll_interval = absl::Milliseconds(10);
    o.claim_batch = 10;
    o.before_attempt = [this](const ClaimedDelivery& c) {
      if (before_attempt_) before_attempt_(c);
    };
    o.secret_box = secret_box_;
    o.seal_existing = seal_existing_;
    SetUpModule(o);
  }

  // A webhook at receiver path `path`, its secret registered there.
  std::string Hook(const std::string& org, const std::string& id, const std::string& path,
                   std::vector<std::string> types) {
    auto created = Create(Admin(org), org, id, receiver_.Url(path), std::move(types));
    EXPECT_TRUE(created.ok()) << created.status();
    if (!created.ok()) return "";
    receiver_.Control(path, created->secret(), 0);
    return created->webhook().name();
  }

  int64_t Due() {
    auto v = pool_->Command({"ZCARD", "{notify}:wh:due"});
    return v.ok() ? v->integer : -1;
  }
  // Runs delivery rounds until `done` (bounded: 30 s of wall time).
  bool DeliverUntil(const std::function<bool()>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      auto n = module_->DeliverDueOnce();
      EXPECT_TRUE(n.ok()) << n.status();
      if (done()) return true;
      if (n.ok() && *n == 0) absl::SleepFor(absl::Milliseconds(5));
    }
    return done();
  }
  absl::StatusOr<v1::ListWebhookDeliveriesResponse> Deliveries(const std::string& webhook,
                                                               std::vector<v1::WebhookDelivery::State> states = {}) {
    v1::ListWebhookDeliveriesRequest r;
    r.set_parent(webhook);
    for (auto s : states) r.add_states(s);
    return Call(Root(), &S::ListWebhookDeliveries, r);
  }
  // UpdateWebhook of the state alone, by the organisation's billing admin.
  absl::StatusOr<v1::Webhook> SetState(const std::string& name, v1::Webhook::State state,
                                       const std::string& request_id = "") {
    v1::UpdateWebhookRequest u;
    u.mutable_webhook()->set_name(name);
    u.mutable_webhook()->set_state(state);
    u.mutable_update_mask()->add_paths("state");
    u.set_request_id(request_id);
    const size_t at = sizeof("organizations/") - 1;
    const std::string org = name.substr(at, name.find("/webhooks/") - at);
    return Call(Admin(org), &S::UpdateWebhook, u);
  }
  v1::Webhook GetHook(const std::string& name) {
    v1::GetWebhookRequest r;
    r.set_name(name);
    auto w = Call(Root(), &S::GetWebhook, r);
    EXPECT_TRUE(w.ok()) << w.status();
    return w.ok() ? *w : v1::Webhook();
  }
  template <typename T, typename Pred>
  static int CountIf(const std::vector<T>& v, Pred p) {
    return static_cast<int>(std::count_if(v.begin(), v.end(), p));
  }

  Receiver receiver_;
  bool seal_existing_ = false;  // set before SetUp
  absl::Duration backoff_initial_ = absl::Milliseconds(20);  // set before SetUp
  int dead_on_disable_batch_ = 50;                           // set before SetUp
  std::function<void(const ClaimedDelivery&)> before_attempt_;
  std::shared_ptr<const SecretBox> secret_box_;  // set before SetUp
};

void ExpectAllVerified(const std::vector<Request>& requests) {
  for (const auto& r : requests) {
    EXPECT_TRUE(r.sig_ok) << r.path << " " << r.id << ": bad signature";
    EXPECT_TRUE(r.ts_ok) << r.path << " " << r.id << ": timestamp off";
    EXPECT_TRUE(r.body_ok) << r.path << " " << r.id << ": body id differs from the header";
  }
}

TEST_F(WebhookDeliveryTest, DeliversSignedEventsOfItsOwnOrganisationOnly) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled, kIssued});
  const std::string beta = Hook("beta", "erp", "/beta", {kCancelled, kIssued});
  Publish(kBookingStream, BookingCancelled("ev-acme-cancel", "organizations/acme"));
  Publish(kBookingStream, BookingCancelled("ev-beta-cancel", "organizations/beta"));
  Publish(kBillingStream, InvoiceIssued("ev-other-invoice", "organizations/gamma", "organizations/owner"));
  Publish(kBillingStream, InvoiceIssued("ev-beta-invoice", "organizations/beta", "organizations/owner"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const auto at_acme = receiver_.Requests("/acme");
  const auto at_beta = receiver_.Requests("/beta");
  ASSERT_EQ(at_acme.size(), 1u);
  EXPECT_EQ(at_acme[0].id, "ev-acme-cancel");
  EXPECT_EQ(at_acme[0].type, kCancelled);
  EXPECT_EQ(at_acme[0].organization, "organizations/acme");
  EXPECT_EQ(at_acme[0].status, 204);
  ASSERT_EQ(at_beta.size(), 2u);
  std::set<std::string> beta_ids = {at_beta[0].id, at_beta[1].id};
  EXPECT_EQ(beta_ids, (std::set<std::string>{"ev-beta-cancel", "ev-beta-invoice"}));
  for (const auto& r : at_beta) EXPECT_EQ(r.organization, "organizations/beta");
  ExpectAllVerified(receiver_.Requests());
  EXPECT_EQ(receiver_.Requests().size(), 3u);  // gamma's invoice: nobody
  auto listed = Deliveries(acme);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->deliveries_size(), 1);
  const auto& d = listed->deliveries(0);
  EXPECT_EQ(d.state(), v1::WebhookDelivery::DELIVERED);
  EXPECT_EQ(d.attempts(), 1);
  EXPECT_EQ(d.last_status_code(), 204);
  EXPECT_EQ(FromProto(d.delivered_time()), clock_.Now());  // the domain clock
  EXPECT_EQ(GetHook(acme).consecutive_failures(), 0);
  EXPECT_EQ(FromProto(GetHook(acme).last_success_time()), clock_.Now());
  // One WebhookDelivered per delivery, in the step that recorded it.
  std::vector<std::string> delivered;
  for (const auto& e : NotifyEvents()) {
    if (!e.has_webhook_delivered()) continue;
    delivered.push_back(e.webhook_delivered().delivery());
    EXPECT_EQ(e.webhook_delivered().attempts(), 1);
    EXPECT_EQ(e.webhook_delivered().status_code(), 204);
    EXPECT_EQ(e.header().actor(), "services/notify");
  }
  std::sort(delivered.begin(), delivered.end());
  EXPECT_EQ(delivered, (std::vector<std::string>{acme + "/deliveries/ev-acme-cancel",
                                                 beta + "/deliveries/ev-beta-cancel",
                                                 beta + "/deliveries/ev-beta-invoice"}));

  // After a rotation, attempts are signed with the new secret only.
  v1::RotateWebhookSecretRequest rot;
  rot.set_name(acme);
  auto rotated = Call(Admin("acme"), &S::RotateWebhookSecret, rot);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  receiver_.Control("/acme", rotated->secret(), 0);
  Publish(kBookingStream, BookingCancelled("ev-acme-cancel-2", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const auto after = receiver_.Requests("/acme");
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[1].id, "ev-acme-cancel-2");
  EXPECT_EQ(after[1].status, 204);
  ExpectAllVerified(after);
}

TEST_F(WebhookDeliveryTest, RetriesWithBackoffThenDeadLettersThenReplays) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  // Two failures, then the receiver takes it: delivered at the third attempt.
  receiver_.Control("/acme", "", 2);
  Publish(kBookingStream, BookingCancelled("ev-1", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  auto first = receiver_.Requests("/acme");
  ASSERT_EQ(first.size(), 3u);
  EXPECT_EQ(first[0].status, 500);
  EXPECT_EQ(first[1].status, 500);
  EXPECT_EQ(first[2].status, 204);
  for (const auto& r : first) EXPECT_EQ(r.id, "ev-1");  // the same id on every attempt
  ExpectAllVerified(first);
  auto d1 = Deliveries(acme);
  ASSERT_TRUE(d1.ok());
  EXPECT_EQ(d1->deliveries(0).state(), v1::WebhookDelivery::DELIVERED);
  EXPECT_EQ(d1->deliveries(0).attempts(), 3);

  // Every attempt fails: DEAD after 3, in the dead letters, with its event.
  receiver_.Control("/acme", "", -1);
  Publish(kBookingStream, BookingCancelled("ev-2", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  EXPECT_EQ(receiver_.Requests("/acme").size(), 6u);
  auto dead = Deliveries(acme, {v1::WebhookDelivery::DEAD});
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->deliveries_size(), 1);
  EXPECT_EQ(dead->deliveries(0).event_id(), "ev-2");
  EXPECT_EQ(dead->deliveries(0).attempts(), 3);
  EXPECT_EQ(dead->deliveries(0).last_status_code(), 500);
  EXPECT_EQ(dead->deliveries(0).last_error(), "HTTP 500");
  EXPECT_EQ(GetHook(acme).consecutive_failures(), 3);
  EXPECT_EQ(GetHook(acme).state(), v1::Webhook::ENABLED);  // 3 < 4
  // On /metrics: 1 delivered, 2 + 2 retried, 1 dead; one dead letter.
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_deliveries_total{outcome=\"delivered\"} 1"));
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_deliveries_total{outcome=\"retry\"} 4"));
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_deliveries_total{outcome=\"dead\"} 1"));
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_dead_letters 1"));
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_queue_depth 0"));
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_endpoints_disabled_total 0"));
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_dead_letters_truncated 0"));
  auto events = NotifyEvents();
  ASSERT_EQ(CountIf(events, [](const v1::NotifyEvent& e) { return e.has_webhook_delivery_dead(); }), 1);
  for (const auto& e : events) {
    if (!e.has_webhook_delivery_dead()) continue;
    EXPECT_EQ(e.webhook_delivery_dead().delivery(), acme + "/deliveries/ev-2");
    EXPECT_EQ(e.webhook_delivery_dead().attempts(), 3);
    EXPECT_EQ(e.header().actor(), "services/notify");
  }

  // Replayed once the receiver is back: same id, signature valid, delivered.
  receiver_.Control("/acme", "", 0);
  v1::ReplayWebhookDeliveryRequest replay;
  replay.set_name(acme + "/deliveries/ev-2");
  replay.set_request_id("replay-1");
  auto replayed = Call(Admin("acme"), &S::ReplayWebhookDelivery, replay);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ(replayed->state(), v1::WebhookDelivery::PENDING);
  EXPECT_EQ(replayed->replays(), 1);
  EXPECT_EQ(replayed->attempts(), 0);
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  auto all = receiver_.Requests("/acme");
  ASSERT_EQ(all.size(), 7u);
  EXPECT_EQ(all[6].id, "ev-2");
  EXPECT_EQ(all[6].status, 204);
  ExpectAllVerified(all);
  auto dead_after = Deliveries(acme, {v1::WebhookDelivery::DEAD});
  ASSERT_TRUE(dead_after.ok());
  EXPECT_EQ(dead_after->deliveries_size(), 0);
  EXPECT_EQ(GetHook(acme).consecutive_failures(), 0);
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_deliveries_total{outcome=\"delivered\"} 2"));
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_dead_letters 0"));
  // The same replay request again: answered from the record, not queued again.
  auto again = Call(Admin("acme"), &S::ReplayWebhookDelivery, replay);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->SerializeAsString(), replayed->SerializeAsString());
  EXPECT_EQ(Due(), 0);
  EXPECT_EQ(CountIf(NotifyEvents(), [](const v1::NotifyEvent& e) { return e.has_webhook_delivery_replayed(); }), 1);
}

// webhooks.proto ReplayWebhookDelivery: a replayed delivery is PENDING
// with its attempts counted afresh; it neither claims to be dead nor
// delivered, nor reports the attempts before the replay (dead_time,
// delivered_time, last_error, last_status_code and last_attempt_time
// cleared), in the answer and as listed; it keeps its id, event, body and
// create_time, and its next attempts fill them in again.
TEST_F(WebhookDeliveryTest, AReplayedDeliveryIsNeitherDeadNorDelivered) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  receiver_.Control("/acme", "", -1);
  Publish(kBookingStream, BookingCancelled("ev-r", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const std::string name = acme + "/deliveries/ev-r";
  auto listed_one = [&]() -> v1::WebhookDelivery {
    auto all = Deliveries(acme);
    EXPECT_TRUE(all.ok()) << all.status();
    if (!all.ok() || all->deliveries_size() != 1) {
      ADD_FAILURE() << "expected one delivery";
      return v1::WebhookDelivery();
    }
    return all->deliveries(0);
  };
  const v1::WebhookDelivery dead = listed_one();
  ASSERT_EQ(dead.state(), v1::WebhookDelivery::DEAD);
  EXPECT_EQ(dead.last_status_code(), 500);
  EXPECT_EQ(dead.last_error(), "HTTP 500");
  EXPECT_TRUE(dead.has_dead_time());
  EXPECT_TRUE(dead.has_last_attempt_time());

  auto expect_fresh = [&](const v1::WebhookDelivery& d, int replays) {
    EXPECT_EQ(d.name(), name);
    EXPECT_EQ(d.state(), v1::WebhookDelivery::PENDING);
    EXPECT_EQ(d.attempts(), 0);
    EXPECT_EQ(d.replays(), replays);
    EXPECT_EQ(d.last_status_code(), 0);
    EXPECT_EQ(d.last_error(), "");
    EXPECT_FALSE(d.has_last_attempt_time());
    EXPECT_FALSE(d.has_dead_time());
    EXPECT_FALSE(d.has_delivered_time());
    ASSERT_TRUE(d.has_next_attempt_time());
    EXPECT_EQ(FromProto(d.next_attempt_time()), clock_.Now());
    EXPECT_EQ(d.event_id(), "ev-r");
    EXPECT_EQ(d.body(), dead.body());
    EXPECT_EQ(FromProto(d.create_time()), FromProto(dead.create_time()));
  };
  // The dead letter replayed: PENDING, nothing of its death or last attempt.
  clock_.Advance(absl::Minutes(5));
  v1::ReplayWebhookDeliveryRequest replay;
  replay.set_name(name);
  auto from_dead = Call(Admin("acme"), &S::ReplayWebhookDelivery, replay);
  ASSERT_TRUE(from_dead.ok()) << from_dead.status();
  expect_fresh(*from_dead, 1);
  const v1::WebhookDelivery listed_after_dead = listed_one();
  expect_fresh(listed_after_dead, 1);

  // Its next attempt fills them in again: delivered.
  receiver_.Control("/acme", "", 0);
  clock_.Advance(absl::Minutes(5));
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const v1::WebhookDelivery delivered = listed_one();
  ASSERT_EQ(delivered.state(), v1::WebhookDelivery::DELIVERED);
  EXPECT_EQ(delivered.attempts(), 1);
  EXPECT_EQ(delivered.last_status_code(), 204);
  EXPECT_EQ(delivered.last_error(), "");
  EXPECT_EQ(FromProto(delivered.delivered_time()), clock_.Now());
  EXPECT_EQ(FromProto(delivered.last_attempt_time()), clock_.Now());
  EXPECT_FALSE(delivered.has_dead_time());

  // The delivered one replayed: PENDING, nothing of its delivery.
  clock_.Advance(absl::Minutes(5));
  replay.set_request_id("replay-delivered");
  auto from_delivered = Call(Admin("acme"), &S::ReplayWebhookDelivery, replay);
  ASSERT_TRUE(from_delivered.ok()) << from_delivered.status();
  expect_fresh(*from_delivered, 2);
  expect_fresh(listed_one(), 2);
  // Its retry answers the same.
  auto again = Call(Admin("acme"), &S::ReplayWebhookDelivery, replay);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), from_delivered->SerializeAsString());
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  EXPECT_EQ(listed_one().state(), v1::WebhookDelivery::DELIVERED);
  EXPECT_EQ(receiver_.Requests("/acme").back().id, "ev-r");
}

// A delivery's own events carry the trace id of the event it delivers, so
// one id follows a request from its service's log to its webhooks' outcome:
// delivered, dead, and the disabling its failure caused.
TEST_F(WebhookDeliveryTest, DeliveryEventsCarryTheTraceIdOfTheEventTheyDeliver) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  auto traced = [&](const std::string& event_id) {
    bk::BookingEvent e = BookingCancelled(event_id, "organizations/acme");
    e.mutable_header()->set_trace_id("trace-" + event_id);
    Publish(kBookingStream, e);
    Consume();
    return DeliverUntil([&] { return Due() == 0; });
  };
  ASSERT_TRUE(traced("ev-1"));  // delivered
  receiver_.Control("/acme", "", -1);
  ASSERT_TRUE(traced("ev-2"));  // 3 failed attempts: dead (3 failures in a row)
  ASSERT_TRUE(traced("ev-3"));  // the 4th failure in a row disables the webhook
  ASSERT_EQ(GetHook(acme).state(), v1::Webhook::DISABLED);
  std::map<std::string, std::string> trace_of;  // what happened -> trace id
  for (const auto& e : NotifyEvents()) {
    if (e.has_webhook_delivered()) trace_of["delivered " + e.webhook_delivered().event_id()] = e.header().trace_id();
    if (e.has_webhook_delivery_dead()) {
      trace_of["dead " + e.webhook_delivery_dead().event_id()] = e.header().trace_id();
    }
    if (e.has_webhook_disabled()) trace_of["disabled"] = e.header().trace_id();
  }
  EXPECT_EQ(trace_of, (std::map<std::string, std::string>{
                          {"delivered ev-1", "trace-ev-1"}, {"dead ev-2", "trace-ev-2"}, {"disabled", "trace-ev-3"}}));
}

TEST_F(WebhookDeliveryTest, DisablesAfterRepeatedFailuresAndTellsTheOrganisation) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  // Another endpoint of acme listens for the disabling.
  const std::string watch = Hook("acme", "watch", "/watch", {kDisabled});
  receiver_.Control("/acme", "", -1);
  Publish(kBookingStream, BookingCancelled("ev-1", "organizations/acme"));
  Publish(kBookingStream, BookingCancelled("ev-2", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  // 4 failed attempts in a row, then nothing more.
  EXPECT_EQ(receiver_.Requests("/acme").size(), 4u);
  ExpectAllVerified(receiver_.Requests("/acme"));
  const v1::Webhook off = GetHook(acme);
  EXPECT_EQ(off.state(), v1::Webhook::DISABLED);
  EXPECT_EQ(off.disabled_reason(), v1::Webhook::REPEATED_FAILURES);
  EXPECT_EQ(off.consecutive_failures(), 4);
  EXPECT_EQ(off.last_error(), "HTTP 500");
  auto dead = Deliveries(acme, {v1::WebhookDelivery::DEAD});
  ASSERT_TRUE(dead.ok());
  EXPECT_EQ(dead->deliveries_size(), 2);
  // On /metrics: 4 failed attempts (which of them retried and which gave
  // up depends on the order of the two deliveries' retries; a delivery
  // still pending at the disabling dies without an attempt), one disabling,
  // two dead letters.
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_endpoints_disabled_total 1"));
  const std::string page = metrics_->Render();
  auto count = [&](const std::string& outcome) {
    const std::string series = "labshare_notify_webhook_deliveries_total{outcome=\"" + outcome + "\"} ";
    const size_t at = page.find(series);
    return at == std::string::npos ? 0 : std::stoi(page.substr(at + series.size()));
  };
  EXPECT_EQ(count("retry") + count("dead"), 4) << page;
  EXPECT_GE(count("dead"), 1) << page;
  EXPECT_EQ(count("delivered"), 0) << page;
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_dead_letters 2"));
  auto events = NotifyEvents();
  ASSERT_EQ(CountIf(events, [](const v1::NotifyEvent& e) { return e.has_webhook_disabled(); }), 1);
  for (const auto& e : events) {
    if (!e.has_webhook_disabled()) continue;
    EXPECT_EQ(e.webhook_disabled().webhook(), acme);
    EXPECT_EQ(e.webhook_disabled().organization(), "organizations/acme");
    EXPECT_EQ(e.webhook_disabled().url(), receiver_.Url("/acme"));
    EXPECT_EQ(e.webhook_disabled().consecutive_failures(), 4);
    EXPECT_EQ(e.webhook_disabled().last_error(), "HTTP 500");
  }
  // WebhookDisabled travels through {notify}:outbox like every event: the
  // organisation's other webhook hears it.
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const auto heard = receiver_.Requests("/watch");
  ASSERT_EQ(heard.size(), 1u);
  EXPECT_EQ(heard[0].type, kDisabled);
  EXPECT_EQ(heard[0].status, 204);
  ExpectAllVerified(heard);
  // While disabled nothing is queued for it.
  Publish(kBookingStream, BookingCancelled("ev-3", "organizations/acme"));
  Consume();
  EXPECT_EQ(Due(), 0);
  // Replaying needs it enabled again.
  v1::ReplayWebhookDeliveryRequest replay;
  replay.set_name(acme + "/deliveries/ev-2");
  EXPECT_ERROR(Call(Admin("acme"), &S::ReplayWebhookDelivery, replay), kFailedPrecondition, "WEBHOOK_DISABLED");
  v1::UpdateWebhookRequest enable;
  *enable.mutable_webhook() = off;
  enable.mutable_webhook()->set_state(v1::Webhook::ENABLED);
  enable.mutable_update_mask()->add_paths("state");
  auto on = Call(Admin("acme"), &S::UpdateWebhook, enable);
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_EQ(on->state(), v1::Webhook::ENABLED);
  EXPECT_EQ(on->disabled_reason(), v1::Webhook::DISABLED_REASON_UNSPECIFIED);
  EXPECT_EQ(on->consecutive_failures(), 0);
  EXPECT_EQ(GetHook(acme).consecutive_failures(), 0);
  receiver_.Control("/acme", "", 0);
  ASSERT_TRUE(Call(Admin("acme"), &S::ReplayWebhookDelivery, replay).ok());
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const auto at_acme = receiver_.Requests("/acme");
  ASSERT_EQ(at_acme.size(), 5u);
  EXPECT_EQ(at_acme[4].id, "ev-2");
  EXPECT_EQ(at_acme[4].status, 204);
  ExpectAllVerified(at_acme);
}

TEST_F(WebhookDeliveryTest, WhatWasQueuedBeforeADisablingIsNeverSentAfterItIsEnabledAgain) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  Publish(kBookingStream, BookingCancelled("ev-before", "organizations/acme"));
  Consume();
  ASSERT_EQ(Due(), 1);
  // Disabled and enabled again before the delivery step came to it.
  for (auto state : {v1::Webhook::DISABLED, v1::Webhook::ENABLED}) {
    auto updated = SetState(acme, state);
    ASSERT_TRUE(updated.ok()) << updated.status();
    EXPECT_EQ(updated->state(), state);
  }
  // Queued after the enabling: sent.
  Publish(kBookingStream, BookingCancelled("ev-after", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const auto got = receiver_.Requests("/acme");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, "ev-after");
  EXPECT_EQ(got[0].status, 204);
  auto dead = Deliveries(acme, {v1::WebhookDelivery::DEAD});
  ASSERT_TRUE(dead.ok()) << dead.status();
  ASSERT_EQ(dead->deliveries_size(), 1);
  EXPECT_EQ(dead->deliveries(0).event_id(), "ev-before");
  EXPECT_EQ(dead->deliveries(0).attempts(), 0);
  EXPECT_EQ(dead->deliveries(0).last_error(), "the webhook was disabled");
  std::vector<std::string> dead_events;
  for (const auto& e : NotifyEvents()) {
    if (e.has_webhook_delivery_dead()) dead_events.push_back(e.webhook_delivery_dead().delivery());
  }
  EXPECT_EQ(dead_events, (std::vector<std::string>{acme + "/deliveries/ev-before"}));
  // Replayed by hand, it is sent.
  v1::ReplayWebhookDeliveryRequest replay;
  replay.set_name(acme + "/deliveries/ev-before");
  ASSERT_TRUE(Call(Admin("acme"), &S::ReplayWebhookDelivery, replay).ok());
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const auto all = receiver_.Requests("/acme");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].id, "ev-before");
  EXPECT_EQ(all[1].status, 204);
  ExpectAllVerified(all);
}

// Five deliveries queued, none due for an attempt yet, two per step: the
// disabling itself makes the first two DEAD, the steps after it the rest,
// before UpdateWebhook answers.
class WebhookDisablingTest : public WebhookDeliveryTest {
 protected:
  void SetUp() override {
    backoff_initial_ = absl::Hours(1);  // a failed delivery waits long
    dead_on_disable_batch_ = 2;
    WebhookDeliveryTest::SetUp();
  }
  std::vector<std::string> EventIds(const absl::StatusOr<v1::ListWebhookDeliveriesResponse>& list) {
    std::vector<std::string> ids;
    EXPECT_TRUE(list.ok()) << list.status();
    if (list.ok()) {
      for (const auto& d : list->deliveries()) ids.push_back(d.event_id());
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }
};

TEST_F(WebhookDisablingTest, DisablingByAnAdminMakesTheQueuedDeliveriesDeadLettersAtOnce) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  const std::vector<std::string> queued = {"ev-1", "ev-2", "ev-3", "ev-4", "ev-5"};
  for (const auto& id : queued) Publish(kBookingStream, BookingCancelled(id, "organizations/acme"));
  Consume();
  ASSERT_EQ(EventIds(Deliveries(acme, {v1::WebhookDelivery::PENDING})), queued);
  clock_.Advance(absl::Minutes(1));
  auto disabled = SetState(acme, v1::Webhook::DISABLED, "off-1");
  ASSERT_TRUE(disabled.ok()) << disabled.status();
  EXPECT_EQ(disabled->state(), v1::Webhook::DISABLED);
  // No delivery step ran: the dead-letter list has them all already.
  EXPECT_EQ(EventIds(Deliveries(acme, {v1::WebhookDelivery::PENDING})), std::vector<std::string>{});
  auto dead = Deliveries(acme, {v1::WebhookDelivery::DEAD});
  EXPECT_EQ(EventIds(dead), queued);
  for (const auto& d : dead->deliveries()) {
    EXPECT_EQ(d.attempts(), 0);
    EXPECT_EQ(d.last_error(), "the webhook was disabled");
    EXPECT_EQ(FromProto(d.dead_time()), clock_.Now());
    EXPECT_FALSE(d.has_next_attempt_time());
  }
  EXPECT_EQ(Due(), 0);
  // Each with its WebhookDeliveryDead, after the WebhookUpdated.
  std::vector<std::string> told;
  bool updated_first = false;
  for (const auto& e : NotifyEvents()) {
    if (e.has_webhook_updated()) updated_first = told.empty();
    if (e.has_webhook_delivery_dead()) told.push_back(e.webhook_delivery_dead().delivery());
  }
  EXPECT_TRUE(updated_first);
  std::sort(told.begin(), told.end());
  std::vector<std::string> want;
  for (const auto& id : queued) want.push_back(acme + "/deliveries/" + id);
  EXPECT_EQ(told, want);
  // A retry of the disabling answers the same and changes nothing more.
  auto again = SetState(acme, v1::Webhook::DISABLED, "off-1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), disabled->SerializeAsString());
  EXPECT_EQ(CountIf(NotifyEvents(), [](const v1::NotifyEvent& e) { return e.has_webhook_delivery_dead(); }), 5);
  // The delivery loop finds nothing left to settle.
  ASSERT_TRUE(module_->DeliverDueOnce().ok());
  EXPECT_EQ(CountIf(NotifyEvents(), [](const v1::NotifyEvent& e) { return e.has_webhook_delivery_dead(); }), 5);
  // Enabled again, a dead letter is replayed and sent.
  ASSERT_TRUE(SetState(acme, v1::Webhook::ENABLED).ok());
  v1::ReplayWebhookDeliveryRequest replay;
  replay.set_name(acme + "/deliveries/ev-3");
  ASSERT_TRUE(Call(Admin("acme"), &S::ReplayWebhookDelivery, replay).ok());
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const auto got = receiver_.Requests("/acme");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, "ev-3");
  EXPECT_EQ(got[0].status, 204);
  EXPECT_EQ(EventIds(Deliveries(acme, {v1::WebhookDelivery::DEAD})),
            (std::vector<std::string>{"ev-1", "ev-2", "ev-4", "ev-5"}));
}

// A mask naming "state" twice disables (and re-enables) as one naming it
// once: the second path judged the state the first had just set, so the
// queued deliveries were left PENDING under a DISABLED webhook, and a
// re-enabled one kept its failure count.
TEST_F(WebhookDisablingTest, AMaskNamingStateTwiceDisablesAndReenablesAsOnce) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  for (const char* id : {"ev-1", "ev-2"}) Publish(kBookingStream, BookingCancelled(id, "organizations/acme"));
  Consume();
  auto twice = [&](v1::Webhook::State state) {
    v1::UpdateWebhookRequest u;
    u.mutable_webhook()->set_name(acme);
    u.mutable_webhook()->set_state(state);
    u.mutable_update_mask()->add_paths("state");
    u.mutable_update_mask()->add_paths("state");
    return Call(Admin("acme"), &S::UpdateWebhook, u);
  };
  auto off = twice(v1::Webhook::DISABLED);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->state(), v1::Webhook::DISABLED);
  EXPECT_EQ(EventIds(Deliveries(acme, {v1::WebhookDelivery::PENDING})), std::vector<std::string>{});
  EXPECT_EQ(EventIds(Deliveries(acme, {v1::WebhookDelivery::DEAD})), (std::vector<std::string>{"ev-1", "ev-2"}));
  EXPECT_EQ(Due(), 0);
  // Failures counted while enabled start afresh when it is enabled again.
  ASSERT_TRUE(SetState(acme, v1::Webhook::ENABLED).ok());
  receiver_.Control("/acme", "", -1);
  Publish(kBookingStream, BookingCancelled("ev-3", "organizations/acme"));
  Consume();
  ASSERT_TRUE(module_->DeliverDueOnce().ok());
  ASSERT_EQ(GetHook(acme).consecutive_failures(), 1);
  ASSERT_TRUE(twice(v1::Webhook::DISABLED).ok());
  auto on = twice(v1::Webhook::ENABLED);
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_EQ(on->consecutive_failures(), 0);
  EXPECT_EQ(GetHook(acme).consecutive_failures(), 0);
}

TEST_F(WebhookDisablingTest, TheAutomaticDisablingMakesTheOthersQueuedDeadLettersAtOnce) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  receiver_.Control("/acme", "", -1);
  // Four failed attempts (disable_after 4): the first three wait an hour
  // for their next one; the fourth disables the webhook. Two more are
  // queued behind them, never attempted.
  for (const char* id : {"ev-1", "ev-2", "ev-3", "ev-4"}) {
    Publish(kBookingStream, BookingCancelled(id, "organizations/acme"));
  }
  Consume();
  before_attempt_ = [&](const ClaimedDelivery& c) {
    if (c.delivery.event_id() != "ev-4") return;
    Publish(kBookingStream, BookingCancelled("ev-5", "organizations/acme"));
    Publish(kBookingStream, BookingCancelled("ev-6", "organizations/acme"));
    Consume();
  };
  ASSERT_TRUE(DeliverUntil([&] { return GetHook(acme).state() == v1::Webhook::DISABLED; }));
  EXPECT_EQ(receiver_.Requests("/acme").size(), 4u);
  EXPECT_EQ(GetHook(acme).disabled_reason(), v1::Webhook::REPEATED_FAILURES);
  EXPECT_EQ(EventIds(Deliveries(acme, {v1::WebhookDelivery::PENDING})), std::vector<std::string>{});
  auto dead = Deliveries(acme, {v1::WebhookDelivery::DEAD});
  EXPECT_EQ(EventIds(dead), (std::vector<std::string>{"ev-1", "ev-2", "ev-3", "ev-4", "ev-5", "ev-6"}));
  std::map<std::string, int> attempts;
  for (const auto& d : dead->deliveries()) attempts[d.event_id()] = d.attempts();
  EXPECT_EQ(attempts, (std::map<std::string, int>{
                          {"ev-1", 1}, {"ev-2", 1}, {"ev-3", 1}, {"ev-4", 1}, {"ev-5", 0}, {"ev-6", 0}}));
  EXPECT_EQ(Due(), 0);
  // Told by WebhookDisabled alone.
  auto events = NotifyEvents();
  EXPECT_EQ(CountIf(events, [](const v1::NotifyEvent& e) { return e.has_webhook_disabled(); }), 1);
  EXPECT_EQ(CountIf(events, [](const v1::NotifyEvent& e) { return e.has_webhook_delivery_dead(); }), 0);
}

TEST_F(WebhookDisablingTest, WhatADisablingLeftIsSettledByTheMaintenancePass) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  for (const char* id : {"ev-1", "ev-2", "ev-3"}) Publish(kBookingStream, BookingCancelled(id, "organizations/acme"));
  Consume();
  // As if the disabling process died after its own step: the webhook is
  // disabled with its record, the deliveries still queued.
  auto hook = pool_->Command({"HGET", "{notify}:wh:hook:acme:erp", "v"});
  ASSERT_TRUE(hook.ok());
  auto pend = pool_->Command({"ZRANGE", "{notify}:wh:pend:acme:erp", "0", "-1"});
  ASSERT_TRUE(pend.ok());
  ASSERT_EQ(pend->elements.size(), 3u);
  v1::Webhook w = GetHook(acme);
  w.set_state(v1::Webhook::DISABLED);
  w.set_disabled_reason(v1::Webhook::BY_ADMIN);
  w.clear_etag();
  const int64_t version = std::stoll(hook->str);
  ASSERT_TRUE(pool_->Command({"HSET", "{notify}:wh:hook:acme:erp", "v", std::to_string(version + 1), "d",
                              w.SerializeAsString()})
                  .ok());
  ASSERT_TRUE(pool_->Command({"HSET", "{notify}:wh:off:acme:erp", "v", "1", "d",
                              absl::StrCat(version + 1, "|", static_cast<int>(v1::Webhook::BY_ADMIN))})
                  .ok());
  ASSERT_EQ(EventIds(Deliveries(acme, {v1::WebhookDelivery::PENDING})).size(), 3u);
  auto settled = module_->manager().SettleDisabled(1000);
  ASSERT_TRUE(settled.ok()) << settled.status();
  EXPECT_EQ(*settled, 3);
  EXPECT_EQ(EventIds(Deliveries(acme, {v1::WebhookDelivery::DEAD})),
            (std::vector<std::string>{"ev-1", "ev-2", "ev-3"}));
  EXPECT_EQ(Due(), 0);
  EXPECT_EQ(CountIf(NotifyEvents(), [](const v1::NotifyEvent& e) { return e.has_webhook_delivery_dead(); }), 3);
  auto none = module_->manager().SettleDisabled(1000);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0);
}

TEST_F(WebhookDeliveryTest, UnreachableEndpointsCountAsFailures) {
  // Nothing listens on port 1.
  auto created = Create(Admin("acme"), "acme", "down", "https://localhost:1/hook", {kCancelled});
  ASSERT_TRUE(created.ok()) << created.status();
  Publish(kBookingStream, BookingCancelled("ev-1", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  auto dead = Deliveries(created->webhook().name(), {v1::WebhookDelivery::DEAD});
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->deliveries_size(), 1);
  EXPECT_EQ(dead->deliveries(0).attempts(), 3);
  EXPECT_EQ(dead->deliveries(0).last_status_code(), 0);
  EXPECT_TRUE(absl::StartsWith(dead->deliveries(0).last_error(), "no answer: ")) << dead->deliveries(0).last_error();
}

TEST_F(WebhookDeliveryTest, AnAttemptCutShortByACrashIsMadeAgainWithTheSameId) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  Publish(kBookingStream, BookingCancelled("ev-crash", "organizations/acme"));
  Consume();
  // Another notifier claims the delivery and dies before its POST finishes
  // (its claim is never recorded as an attempt).
  WebhookLimits limits = module_->manager().limits();
  limits.claim_lease = absl::Milliseconds(50);
  WebhookManager dead_replica(pool_.get(), &clock_, &wall_, limits);
  auto claimed = dead_replica.ClaimDue(10);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_EQ(claimed->size(), 1u);
  // After the claim's lease this notifier attempts it: same id, same body.
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const auto got = receiver_.Requests("/acme");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, "ev-crash");
  EXPECT_EQ(got[0].status, 204);
  ExpectAllVerified(got);
  // The dead replica's late outcome is ignored (the delivery moved on).
  AttemptResult late;
  late.error = "HTTP 502";
  late.status_code = 502;
  ASSERT_TRUE(dead_replica.RecordAttempt((*claimed)[0], late, 0.5).ok());
  auto listed = Deliveries(acme);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->deliveries(0).state(), v1::WebhookDelivery::DELIVERED);
  EXPECT_EQ(listed->deliveries(0).attempts(), 1);
  EXPECT_EQ(GetHook(acme).consecutive_failures(), 0);
}

TEST_F(WebhookDeliveryTest, EachDeliveryIsClaimedRightBeforeItsAttemptAndOneFailureStopsNoOther) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  Publish(kBookingStream, BookingCancelled("ev-a", "organizations/acme"));
  Publish(kBookingStream, BookingCancelled("ev-b", "organizations/acme"));
  Publish(kBookingStream, BookingCancelled("ev-c", "organizations/acme"));
  Consume();
  ASSERT_EQ(Due(), 3);
  // At each POST: how many deliveries are under a claim (due after their
  // 30 s lease); the first one's document is damaged under the attempt, so
  // its outcome cannot be recorded.
  std::vector<int> claimed_at_post;
  std::string damaged;
  before_attempt_ = [&](const ClaimedDelivery& c) {
    auto due = pool_->Command({"ZRANGE", "{notify}:wh:due", "0", "-1"});
    ASSERT_TRUE(due.ok());
    const int64_t soon = absl::ToUnixMillis(absl::Now() + absl::Seconds(5));
    int leased = 0;
    for (const auto& m : due->elements) {
      if (std::stoll(m.str.substr(0, 13)) > soon) ++leased;
    }
    claimed_at_post.push_back(leased);
    if (damaged.empty()) {
      damaged = c.delivery.event_id();
      ASSERT_TRUE(pool_->Command({"HSET", c.key, "d", "damaged"}).ok());
    }
  };
  auto n = module_->DeliverDueOnce();
  EXPECT_ERROR(n, kInternal, "CORRUPT_DOCUMENT");
  // The delivery at hand only (and the damaged one, whose claim stays).
  EXPECT_EQ(claimed_at_post, (std::vector<int>{1, 2, 2}));
  const auto got = receiver_.Requests("/acme");
  ASSERT_EQ(got.size(), 3u);
  std::set<std::string> ids;
  for (const auto& r : got) {
    ids.insert(r.id);
    EXPECT_EQ(r.status, 204);
  }
  EXPECT_EQ(ids, (std::set<std::string>{"ev-a", "ev-b", "ev-c"}));
  ExpectAllVerified(got);
  // The two others are recorded; the damaged one keeps its claim only.
  EXPECT_EQ(Due(), 1);
  std::vector<std::string> delivered;
  for (const auto& e : NotifyEvents()) {
    if (e.has_webhook_delivered()) delivered.push_back(e.webhook_delivered().event_id());
  }
  std::sort(delivered.begin(), delivered.end());
  std::vector<std::string> expected;
  for (const char* id : {"ev-a", "ev-b", "ev-c"}) {
    if (id != damaged) expected.push_back(id);
  }
  EXPECT_EQ(delivered, expected);
}

TEST_F(WebhookDeliveryTest, ASuccessAfterTheClaimRanOutIsStillRecorded) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  Publish(kBookingStream, BookingCancelled("ev-slow", "organizations/acme"));
  Consume();
  // Replica A claims; its lease runs out (none here) before its POST ends;
  // replica B claims the same delivery and fails; then A's 2xx comes.
  WebhookLimits limits = module_->manager().limits();
  limits.claim_lease = absl::ZeroDuration();
  WebhookManager a(pool_.get(), &clock_, &wall_, limits);
  WebhookManager b(pool_.get(), &clock_, &wall_, limits);
  auto by_a = a.ClaimDue(10);
  ASSERT_TRUE(by_a.ok()) << by_a.status();
  ASSERT_EQ(by_a->size(), 1u);
  auto by_b = b.ClaimDue(10);
  ASSERT_TRUE(by_b.ok()) << by_b.status();
  ASSERT_EQ(by_b->size(), 1u);
  AttemptResult failed;
  failed.status_code = 503;
  failed.error = "HTTP 503";
  ASSERT_TRUE(b.RecordAttempt((*by_b)[0], failed, 0.5).ok());
  AttemptResult ok;
  ok.ok = true;
  ok.status_code = 200;
  ASSERT_TRUE(a.RecordAttempt((*by_a)[0], ok, 0.5).ok());
  auto listed = Deliveries(acme);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->deliveries_size(), 1);
  EXPECT_EQ(listed->deliveries(0).state(), v1::WebhookDelivery::DELIVERED);
  EXPECT_EQ(listed->deliveries(0).attempts(), 2);
  EXPECT_EQ(listed->deliveries(0).last_status_code(), 200);
  EXPECT_EQ(Due(), 0);  // B's retry is off the schedule
  EXPECT_EQ(GetHook(acme).consecutive_failures(), 0);
  EXPECT_EQ(CountIf(NotifyEvents(), [](const v1::NotifyEvent& e) { return e.has_webhook_delivered(); }), 1);
  // A late failure of B's claim changes nothing.
  ASSERT_TRUE(b.RecordAttempt((*by_b)[0], failed, 0.5).ok());
  auto again = Deliveries(acme);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->deliveries(0).state(), v1::WebhookDelivery::DELIVERED);
  EXPECT_EQ(again->deliveries(0).attempts(), 2);
}

TEST_F(WebhookDeliveryTest, PrivateAddressesAreRefusedUnlessAllowed) {
  receiver_.Control("/p", "whsec_x", 0);
  WebhookPost post;
  post.url = receiver_.Url("/p");
  post.id = "d1";
  post.timestamp = std::to_string(absl::ToUnixSeconds(absl::Now()));
  post.body = "{\"id\":\"d1\",\"event\":{\"header\":{}}}";
  post.signature = WebhookSignature("whsec_x", post.id, post.timestamp, post.body);
  WebhookHttpOptions http;
  http.ca_file = receiver_.ca_file();
  const AttemptResult refused = PostWebhook(post, http);
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.status_code, 0);
  EXPECT_EQ(refused.error, "no answer: the endpoint's address is loopback, private or reserved (refused)");
  EXPECT_TRUE(receiver_.Requests("/p").empty());
  http.allow_private_addresses = true;
  const AttemptResult allowed = PostWebhook(post, http);
  EXPECT_TRUE(allowed.ok) << allowed.error;
  EXPECT_EQ(allowed.status_code, 204);
  ASSERT_EQ(receiver_.Requests("/p").size(), 1u);
  ExpectAllVerified(receiver_.Requests("/p"));
}

TEST_F(WebhookDeliveryTest, DeliveredOnesGoAfterTheRetentionDeadLettersStay) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  Publish(kBookingStream, BookingCancelled("ev-old", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  receiver_.Control("/acme", "", -1);
  Publish(kBookingStream, BookingCancelled("ev-dead", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  receiver_.Control("/acme", "", 0);
  clock_.Advance(absl::Hours(24 * 10));
  Publish(kBookingStream, BookingCancelled("ev-new", "organizations/acme"));
  Consume();
  // Not yet past the 30 days: nothing goes.
  auto none = module_->manager().TrimDeliveries(100);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0);
  clock_.Advance(absl::Hours(24 * 25));
  // ev-old: delivered 35 days ago, removed; ev-dead: a dead letter, kept;
  // ev-new: 25 days and still pending, kept.
  auto trimmed = module_->manager().TrimDeliveries(100);
  ASSERT_TRUE(trimmed.ok()) << trimmed.status();
  EXPECT_EQ(*trimmed, 1);
  auto left = Deliveries(acme);
  ASSERT_TRUE(left.ok());
  std::vector<std::string> ids;
  for (const auto& d : left->deliveries()) ids.push_back(d.event_id());
  EXPECT_EQ(ids, (std::vector<std::string>{"ev-dead", "ev-new"}));
  auto exists = pool_->Command({"EXISTS", "{notify}:wh:dlv:acme:erp:ev-old"});
  ASSERT_TRUE(exists.ok());
  EXPECT_EQ(exists->integer, 0);
  // The pending one is still delivered.
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  EXPECT_EQ(receiver_.Requests("/acme").back().id, "ev-new");
}

TEST_F(WebhookDeliveryTest, DeadLettersOlderThanTheRetentionDoNotHoldUpTheDeliveredOnes) {
  const std::string acme = Hook("acme", "erp", "/acme", {kCancelled});
  // Three dead letters (queued, then the webhook was disabled), then one
  // delivered, all queued at the same instant: the dead ones sort first.
  for (const char* id : {"ev-a1", "ev-a2", "ev-a3"}) Publish(kBookingStream, BookingCancelled(id, "organizations/acme"));
  Consume();
  for (auto state : {v1::Webhook::DISABLED, v1::Webhook::ENABLED}) ASSERT_TRUE(SetState(acme, state).ok());
  Publish(kBookingStream, BookingCancelled("ev-z", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  ASSERT_EQ(receiver_.Requests("/acme").size(), 1u);
  clock_.Advance(absl::Hours(24 * 31));
  // Two at most per webhook and call: the delivered one still goes.
  auto trimmed = module_->manager().TrimDeliveries(2);
  ASSERT_TRUE(trimmed.ok()) << trimmed.status();
  EXPECT_EQ(*trimmed, 1);
  auto left = Deliveries(acme);
  ASSERT_TRUE(left.ok());
  std::vector<std::string> ids;
  for (const auto& d : left->deliveries()) ids.push_back(d.event_id());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"ev-a1", "ev-a2", "ev-a3"}));
  auto again = module_->manager().TrimDeliveries(2);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, 0);
}

TEST_F(WebhookDeliveryTest, TheModulesOwnThreadsDeliver) {
  Hook("acme", "erp", "/acme", {kCancelled});
  module_->Start();
  Publish(kBookingStream, BookingCancelled("ev-threads", "organizations/acme"));
  Consume();
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (receiver_.Requests("/acme").empty() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  module_->Stop();
  const auto got = receiver_.Requests("/acme");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, "ev-threads");
  EXPECT_EQ(got[0].status, 204);
  ExpectAllVerified(got);
}

// ------------------------------------------------------------ secrets at rest

class WebhookSealedSecretsTest : public WebhookDeliveryTest {
 protected:
  WebhookSealedSecretsTest() {
    secret_box_ = std::make_shared<const SecretBox>(*SecretBox::FromKey(std::string(32, '\x5a')));
  }
  // Every value Redis holds (hashes, strings, streams, sets), one string.
  std::string EverythingInRedis() {
    std::string all;
    auto keys = pool_->Command({"KEYS", "*"});
    EXPECT_TRUE(keys.ok());
    for (const auto& k : keys->elements) {
      auto type = pool_->Command({"TYPE", k.str});
      std::vector<std::string> argv;
      if (type->str == "hash") argv = {"HGETALL", k.str};
      if (type->str == "string") argv = {"GET", k.str};
      if (type->str == "stream") argv = {"XRANGE", k.str, "-", "+"};
      if (type->str == "zset") argv = {"ZRANGE", k.str, "0", "-1"};
      if (type->str == "list") argv = {"LRANGE", k.str, "0", "-1"};
      if (argv.empty()) continue;
      auto v = pool_->Command(argv);
      all += v->DebugString();
      all += "\n";
      for (const auto& e : v->elements) {
        all += e.str + "\n";
        for (const auto& f : e.elements) {
          all += f.str + "\n";
          for (const auto& g : f.elements) all += g.str + "\n";
        }
      }
    }
    return all;
  }
  std::string StoredSecret(const std::string& org, const std::string& id) {
    auto v = pool_->Command({"HGET", absl::StrCat("{notify}:wh:secret:", org, ":", id), "d"});
    return v.ok() ? v->str : "";
  }
};

TEST_F(WebhookSealedSecretsTest, RedisHoldsNoClearSecretAndDeliveriesStillVerify) {
  auto created = Create(Admin("acme"), "acme", "erp", receiver_.Url("/acme"), {kCancelled});
  ASSERT_TRUE(created.ok()) << created.status();
  const std::string secret = created->secret();
  ASSERT_GE(secret.size(), 32u);
  receiver_.Control("/acme", secret, 0);
  EXPECT_TRUE(absl::StartsWith(StoredSecret("acme", "erp"), "aesgcm1:")) << StoredSecret("acme", "erp");
  Publish(kBookingStream, BookingCancelled("ev-1", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  // Rotated: the new one sealed too, and signing with it.
  v1::RotateWebhookSecretRequest rotate;
  rotate.set_name(created->webhook().name());
  auto rotated = Call(Admin("acme"), &S::RotateWebhookSecret, rotate);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  receiver_.Control("/acme", rotated->secret(), 0);
  Publish(kBookingStream, BookingCancelled("ev-2", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const auto got = receiver_.Requests("/acme");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].status, 204);
  EXPECT_EQ(got[1].status, 204);
  ExpectAllVerified(got);
  const std::string redis = EverythingInRedis();
  EXPECT_FALSE(absl::StrContains(redis, secret));
  EXPECT_FALSE(absl::StrContains(redis, rotated->secret()));
  EXPECT_TRUE(absl::StrContains(redis, "aesgcm1:"));
}

// The idempotency records of CreateWebhook and RotateWebhookSecret hold the
// answer, secret included (a retry answers the same secret): sealed too.
TEST_F(WebhookSealedSecretsTest, RetryRecordsHoldNoClearSecret) {
  auto created = Create(Admin("acme"), "acme", "erp", receiver_.Url("/acme"), {kCancelled}, "create-1");
  ASSERT_TRUE(created.ok()) << created.status();
  v1::RotateWebhookSecretRequest rotate;
  rotate.set_name(created->webhook().name());
  rotate.set_request_id("rotate-1");
  auto rotated = Call(Admin("acme"), &S::RotateWebhookSecret, rotate);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  const std::string redis = EverythingInRedis();
  EXPECT_FALSE(absl::StrContains(redis, created->secret()));
  EXPECT_FALSE(absl::StrContains(redis, rotated->secret()));
  // Retries still answer the secrets of the first answers.
  auto created_again = Create(Admin("acme"), "acme", "erp", receiver_.Url("/acme"), {kCancelled}, "create-1");
  ASSERT_TRUE(created_again.ok()) << created_again.status();
  EXPECT_EQ(created_again->secret(), created->secret());
  auto rotated_again = Call(Admin("acme"), &S::RotateWebhookSecret, rotate);
  ASSERT_TRUE(rotated_again.ok()) << rotated_again.status();
  EXPECT_EQ(rotated_again->secret(), rotated->secret());
}

TEST_F(WebhookSealedSecretsTest, SecretsStoredInClearAreUsedThenSealed) {
  auto created = Create(Admin("acme"), "acme", "erp", receiver_.Url("/acme"), {kCancelled});
  ASSERT_TRUE(created.ok()) << created.status();
  // As the previous version stored it: in clear, the same document version.
  const std::string clear = "whsec_written_before_sealing_0123456789abcdef";
  ASSERT_TRUE(pool_->Command({"HSET", "{notify}:wh:secret:acme:erp", "d", clear}).ok());
  receiver_.Control("/acme", clear, 0);
  Publish(kBookingStream, BookingCancelled("ev-1", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  // Not sealed by the periodic pass unless asked (an older notifier may still
  // sign with what it reads).
  module_->MaintainOnce();
  EXPECT_EQ(StoredSecret("acme", "erp"), clear);
  // Sealed in place, once; deliveries still verify with the same secret.
  EXPECT_EQ(*module_->manager().SealClearSecrets(), 1);
  EXPECT_EQ(*module_->manager().SealClearSecrets(), 0);
  EXPECT_TRUE(absl::StartsWith(StoredSecret("acme", "erp"), "aesgcm1:"));
  EXPECT_FALSE(absl::StrContains(EverythingInRedis(), clear));
  Publish(kBookingStream, BookingCancelled("ev-2", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const auto got = receiver_.Requests("/acme");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].id, "ev-2");
  EXPECT_EQ(got[1].status, 204);
  ExpectAllVerified(got);
}

TEST_F(WebhookSealedSecretsTest, AnotherKeyOrNoKeyIsRefusedAtStart) {
  ASSERT_TRUE(module_->CheckSecretKey().ok());
  ASSERT_TRUE(module_->CheckSecretKey().ok());  // the same key again
  const SecretBox other_box = *SecretBox::FromKey(std::string(32, '\x21'));
  WebhookManager other(pool_.get(), &clock_, &wall_, WebhookLimits{});
  other.set_secret_box(&other_box);
  absl::Status s = other.CheckSecretKey();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(ErrorReason(s), "WEBHOOK_SECRET_KEY_MISMATCH");
  WebhookManager keyless(pool_.get(), &clock_, &wall_, WebhookLimits{});
  s = keyless.CheckSecretKey();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(ErrorReason(s), "WEBHOOK_SECRET_SEALED");
  // Sealed secrets without the check value (sealed before it existed): refused too.
  auto created = Create(Admin("acme"), "acme", "erp", receiver_.Url("/acme"), {kCancelled});
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_TRUE(pool_->Command({"DEL", "{notify}:wh:keycheck"}).ok());
  s = keyless.CheckSecretKey();
  EXPECT_EQ(ErrorReason(s), "WEBHOOK_SECRET_SEALED") << s;
}

TEST_F(WebhookDeliveryTest, WithoutSealedSecretsAKeylessNotifierStarts) {
  Hook("acme", "erp", "/acme", {kCancelled});
  EXPECT_TRUE(module_->CheckSecretKey().ok());
  EXPECT_EQ(pool_->Command({"EXISTS", "{notify}:wh:keycheck"})->integer, 0);
}

TEST_F(WebhookSealedSecretsTest, ADeliveryWhoseSecretDoesNotOpenIsNotClaimedAndIsCounted) {
  auto created = Create(Admin("acme"), "acme", "erp", receiver_.Url("/acme"), {kCancelled});
  ASSERT_TRUE(created.ok()) << created.status();
  receiver_.Control("/acme", created->secret(), 0);
  Publish(kBookingStream, BookingCancelled("ev-1", "organizations/acme"));
  Consume();
  auto before = pool_->Command({"ZRANGE", "{notify}:wh:due", "0", "-1", "WITHSCORES"});
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(before->elements.size(), 2u);
  const SecretBox other_box = *SecretBox::FromKey(std::string(32, '\x21'));
  WebhookManager other(pool_.get(), &clock_, &wall_, WebhookLimits{});
  other.set_secret_box(&other_box);
  other.set_metrics(metrics_.get());
  WebhookManager keyless(pool_.get(), &clock_, &wall_, WebhookLimits{});
  keyless.set_metrics(metrics_.get());
  auto claimed = other.ClaimDue(5);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_TRUE(claimed->empty());
  claimed = keyless.ClaimDue(5);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_TRUE(claimed->empty());
  // Not leased: the entry is as it was, still due now.
  auto after = pool_->Command({"ZRANGE", "{notify}:wh:due", "0", "-1", "WITHSCORES"});
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->elements.size(), 2u);
  EXPECT_EQ(after->elements[0].str, before->elements[0].str);
  EXPECT_EQ(after->elements[1].str, before->elements[1].str);
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_secret_unreadable_total 2"));
  // The notifier with the key delivers it.
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const auto got = receiver_.Requests("/acme");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].status, 204);
  ExpectAllVerified(got);
}

TEST_F(WebhookDeliveryTest, TheDeadLetterGaugeReadsAtMostAThousandWebhooksAndSaysSo) {
  std::vector<std::string> argv = {"ZADD", "{notify}:wh:hooks"};
  for (int i = 0; i < 1001; ++i) {
    argv.push_back("0");
    argv.push_back(absl::StrCat("org", i, "|hook"));
  }
  ASSERT_TRUE(pool_->Command(argv).ok());
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_dead_letters_truncated 1"));
  EXPECT_TRUE(HasMetric("labshare_notify_scrape_errors 0"));
  ASSERT_TRUE(pool_->Command({"ZREM", "{notify}:wh:hooks", "org999|hook"}).ok());
  EXPECT_TRUE(HasMetric("labshare_notify_webhook_dead_letters_truncated 0"));
}

class WebhookSealExistingTest : public WebhookSealedSecretsTest {
 protected:
  WebhookSealExistingTest() { seal_existing_ = true; }
};

TEST_F(WebhookSealExistingTest, ThePeriodicPassSealsClearSecretsWhenAsked) {
  auto created = Create(Admin("acme"), "acme", "erp", receiver_.Url("/acme"), {kCancelled});
  ASSERT_TRUE(created.ok()) << created.status();
  const std::string clear = "whsec_written_before_sealing_0123456789abcdef";
  ASSERT_TRUE(pool_->Command({"HSET", "{notify}:wh:secret:acme:erp", "d", clear}).ok());
  module_->MaintainOnce();
  EXPECT_TRUE(absl::StartsWith(StoredSecret("acme", "erp"), "aesgcm1:")) << StoredSecret("acme", "erp");
  receiver_.Control("/acme", clear, 0);
  Publish(kBookingStream, BookingCancelled("ev-1", "organizations/acme"));
  Consume();
  ASSERT_TRUE(DeliverUntil([&] { return Due() == 0; }));
  const auto got = receiver_.Requests("/acme");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].status, 204);
  ExpectAllVerified(got);
}

}  // namespace
}  // namespace labshare::notify::testing
