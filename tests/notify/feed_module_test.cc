// The calendar-feed module end to end in one process: a real redis-server,
// booking events XADDed to the booking outboxes as the booking service
// writes them, the module's consumers (group notify-feeds), its gRPC
// service behind the real interceptor (Authorizer, strict error contract),
// a fake inventory over gRPC for instruments and facility zones, and every
// document parsed by python3-icalendar (tests/notify/feed_ical_check.py).
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/events.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "common/server.h"
#include "google/rpc/error_details.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "labshare/notify/v1/feeds.grpc.pb.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "services/notify/feed_module.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_tokens.h"

ABSL_DECLARE_FLAG(std::string, feed_default_time_zone);

namespace labshare::notify {
namespace {

namespace bk = labshare::booking::v1;
namespace inv = labshare::inventory::v1;
using labshare::testing::Mint;
using labshare::testing::RedisServer;

absl::Time Utc(int y, int mo, int d, int h, int mi = 0) {
  return absl::FromCivil(absl::CivilSecond(y, mo, d, h, mi, 0), absl::UTCTimeZone());
}

// GetInstrument / GetFacility of three instruments: a Shanghai microscope of
// lab-b, a Berlin NMR of lab-a and an XRD of lab-b whose facility's zone is
// "localtime".
class FakeInventory final : public inv::InventoryService::Service {
 public:
  FakeInventory() {
    AddInstrument("tem-1", "TEM Titan 冷冻电镜", "lab-b", "hq");
    AddInstrument("nmr-2", "NMR 600", "lab-a", "berlin");
    // A facility stored before inventory took IANA names only.
    AddInstrument("xrd-3", "XRD", "lab-b", "old");
    inv::Facility old;
    old.set_name("facilities/old");
    old.set_display_name("Old site");
    old.set_time_zone("localtime");
    facilities_[old.name()] = old;
    inv::Facility hq;
    hq.set_name("facilities/hq");
    hq.set_display_name("Zhangjiang Lab");
    hq.set_address("100 Haike Rd, Shanghai");
    hq.set_time_zone("Asia/Shanghai");
    facilities_[hq.name()] = hq;
    inv::Facility berlin;
    berlin.set_name("facilities/berlin");
    berlin.set_display_name("Adlershof");
    berlin.set_time_zone("Europe/Berlin");
    facilities_[berlin.name()] = berlin;
    SetUser("li-wei", "lab-a", false);
    SetUser("wang-fang", "lab-b", false);
  }
  grpc::Status GetInstrument(grpc::ServerContext*, const inv::GetInstrumentRequest* r, inv::Instrument* out) override {
    ++calls;
    if (down) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused");
    auto it = instruments_.find(r->name());
    if (it == instruments_.end()) {
      return ToGrpcStatus(MakeError(absl::StatusCode::kNotFound, "INSTRUMENT_NOT_FOUND", "no such instrument"),
                          "inventory.labshare");
    }
    *out = it->second;
    return grpc::Status::OK;
  }
  grpc::Status GetFacility(grpc::ServerContext*, const inv::GetFacilityRequest* r, inv::Facility* out) override {
    auto it = facilities_.find(r->name());
    if (it == facilities_.end()) {
      return ToGrpcStatus(MakeError(absl::StatusCode::kNotFound, "FACILITY_NOT_FOUND", "no such facility"),
                          "inventory.labshare");
    }
    *out = it->second;
    return grpc::Status::OK;
  }
  // The people the tests create feeds for, as inventory has them now.
  grpc::Status GetUser(grpc::ServerContext*, const inv::GetUserRequest* r, inv::User* out) override {
    ++user_calls;
    std::lock_guard<std::mutex> lock(users_mu);
    auto it = users.find(r->name());
    if (it == users.end()) {
      return ToGrpcStatus(MakeError(absl::StatusCode::kNotFound, "USER_NOT_FOUND", "no such user"),
                          "inventory.labshare");
    }
    *out = it->second;
    return grpc::Status::OK;
  }
  void SetUser(const std::string& id, const std::string& org, bool disabled) {
    std::lock_guard<std::mutex> lock(users_mu);
    inv::User& u = users["users/" + id];
    u.set_name("users/" + id);
    u.set_organization("organizations/" + org);
    u.set_disabled(disabled);
  }
  // An instrument owned and operated by organizations/{org}, at facilities/{facility}.
  void AddInstrument(const std::string& id, const std::string& display_name, const std::string& org,
                     const std::string& facility) {
    inv::Instrument in;
    in.set_name("instruments/" + id);
    in.set_display_name(display_name);
    in.set_owner_organization("organizations/" + org);
    in.set_operator_organization("organizations/" + org);
    in.set_facility("facilities/" + facility);
    instruments_[in.name()] = in;
  }
  std::atomic<int> calls{0};
  std::atomic<int> user_calls{0};
  std::atomic<bool> down{false};
  std::mutex users_mu;
  std::map<std::string, inv::User> users;

 private:
  std::map<std::string, inv::Instrument> instruments_;
  std::map<std::string, inv::Facility> facilities_;
};

struct BookingSpec {
  std::string id;
  std::string instrument = "instruments/tem-1";
  std::string owner = "organizations/lab-b";
  labshare::type::v1::SharingMode mode = labshare::type::v1::ON_SITE;
  std::string user = "users/li-wei";
  std::string payer = "organizations/lab-a";
  std::string operator_user;
  std::string lease;
  std::string service_order;
  absl::Time start, end;
  absl::Duration buffer_after = absl::Minutes(30);
  bk::Booking::State state = bk::Booking::CONFIRMED;
  absl::Time updated;
  std::string purpose;
};

bk::Booking MakeBooking(const BookingSpec& s) {
  bk::Booking b;
  b.set_name("bookings/" + s.id);
  b.set_instrument(s.instrument);
  b.set_instrument_owner(s.owner);
  b.set_mode(s.mode);
  b.set_user(s.user);
  b.set_payer_organization(s.payer);
  b.set_operator_user(s.operator_user);
  b.set_lease(s.lease);
  b.set_service_order(s.service_order);
  *b.mutable_reserved_interval()->mutable_start_time() = ToProto(s.start);
  *b.mutable_reserved_interval()->mutable_end_time() = ToProto(s.end);
  *b.mutable_blocked_interval()->mutable_start_time() = ToProto(s.start);
  *b.mutable_blocked_interval()->mutable_end_time() = ToProto(s.end + s.buffer_after);
  b.set_state(s.state);
  b.set_purpose(s.purpose);
  *b.mutable_create_time() = ToProto(s.updated);
  *b.mutable_update_time() = ToProto(s.updated);
  return b;
}

// The UID of a booking in an instrument feed.
std::string Busy(const std::string& booking_id) {
  return absl::StrCat("busy-", Sha256Hex("bookings/" + booking_id).substr(0, 32), "@labshare.example.org");
}

std::string RunCommand(const std::string& command) {
  std::string out;
  FILE* f = popen(command.c_str(), "r");
  if (f == nullptr) return "popen failed";
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const int rc = pclose(f);
  if (rc != 0) out += absl::StrCat("\n(exit ", rc, ")");
  return out;
}

class FeedModuleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto redis = RedisServer::Start();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_server_ = std::move(*redis);
    pool_ = std::make_unique<RedisPool>(redis_server_->options());

    grpc::ServerBuilder builder;
    int& inventory_port = inventory_port_;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &inventory_port);
    builder.RegisterService(&inventory_);
    inventory_server_ = builder.BuildAndStart();
    ASSERT_NE(inventory_server_, nullptr);

    NotifyContext ctx;
    ctx.redis = pool_.get();
    ctx.clock = &clock_;
    ctx.wall = &wall_;
    ctx.inventory =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", inventory_port), grpc::InsecureChannelCredentials());
    ctx.console_url = "https://labshare.example.org";
    ctx.consumer = "feeds-test";
    // Failed entries retried in the next round: the loop runs on a fake
    // clock, the retry delays on Redis's (common/events.h).
    options_.retry_initial = absl::ZeroDuration();
    ctx.streams = {"{bk:3}:outbox", "{bk:7}:outbox", "{booking}:outbox", "{notify}:outbox", "{inventory}:outbox"};
    streams_ = ctx.streams;
    module_ = std::make_unique<FeedModule>(ctx, options_);
    MethodPolicy policy;
    module_->AddPolicy(&policy);
    auth_ = std::make_unique<Authorizer>(labshare::testing::TestVerifier(), policy, &wall_);
    ServerConfig config;
    config.service_name = "notify";
    config.redis = pool_.get();
    config.authorizer = auth_.get();
    auto server = Server::Start(config, module_->Services(auth_.get()));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    stub_ = v1::CalendarFeedService::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));

    ConsumerLoopOptions loop_options;
    loop_options.name = "feeds test";
    loop_options.clock = &loop_clock_;
    loop_options.sleep = [this](absl::Duration d) { loop_clock_.Advance(d); };
    loop_ = std::make_unique<ConsumerLoop>(loop_options);
    module_->AddConsumers(loop_.get());
  }

  void TearDown() override {
    if (server_) server_->Shutdown(absl::ZeroDuration());
    if (inventory_server_) inventory_server_->Shutdown();
  }

  // XADD as the booking service does: fields "type" and "payload".
  std::string Publish(const std::string& stream, const bk::BookingEvent& e) {
    auto v = pool_->Command({"XADD", stream, "*", "type", "labshare.booking.v1.BookingEvent", "payload",
                             e.SerializeAsString()});
    EXPECT_TRUE(v.ok() && !v->is_error());
    return v.ok() ? v->str : "";
  }
  bk::BookingEvent Event(const std::string& id, absl::Time at) {
    bk::BookingEvent e;
    e.mutable_header()->set_event_id(id);
    *e.mutable_header()->mutable_event_time() = ToProto(at);
    return e;
  }
  void Created(const std::string& stream, const std::string& event_id, const BookingSpec& s) {
    auto e = Event(event_id, s.updated);
    *e.mutable_booking_created()->mutable_booking() = MakeBooking(s);
    Publish(stream, e);
  }
  // Inventory's InstrumentChanged: tem-1, at `etag`, now run by `org`.
  void Operated(const std::string& org, const std::string& etag) {
    labshare::inventory::v1::InventoryEvent e;
    e.mutable_header()->set_event_id("inv-" + org + "-" + etag);
    auto* changed = e.mutable_instrument_changed();
    changed->set_kind(labshare::inventory::v1::UPDATED);
    changed->mutable_instrument()->set_name("instruments/tem-1");
    changed->mutable_instrument()->set_owner_organization("organizations/lab-b");
    changed->mutable_instrument()->set_operator_organization("organizations/" + org);
    changed->mutable_instrument()->set_etag(etag);
    auto v = pool_->Command({"XADD", "{inventory}:outbox", "*", "type", "labshare.inventory.v1.InventoryEvent",
                             "payload", e.SerializeAsString()});
    EXPECT_TRUE(v.ok() && !v->is_error());
  }
  void Cancelled(const std::string& stream, const std::string& event_id, BookingSpec s, absl::Time at) {
    s.state = bk::Booking::CANCELLED;
    s.updated = at;
    auto e = Event(event_id, at);
    *e.mutable_booking_cancelled()->mutable_booking() = MakeBooking(s);
    Publish(stream, e);
  }

  // Rounds of the consumer loop until every stream's group notify-feeds
  // has read and acknowledged everything (bounded; no sleeping).
  void Drain() {
    for (int round = 0; round < 50; ++round) {
      loop_->RunOnce();
      loop_clock_.Advance(absl::Seconds(1));
      bool done = true;
      for (const auto& stream : streams_) {
        auto info = pool_->Command({"XINFO", "GROUPS", stream});
        ASSERT_TRUE(info.ok());
        if (!info->is_array() || info->elements.empty()) {
          done = false;
          continue;
        }
        const auto& g = info->elements[0].elements;
        for (size_t i = 0; i + 1 < g.size(); i += 2) {
          if (g[i].str == "pending" && g[i + 1].integer != 0) done = false;
          if (g[i].str == "lag" && !(g[i + 1].type == RedisValue::Type::kInteger && g[i + 1].integer == 0)) {
            done = false;
          }
        }
      }
      if (done) return;
    }
    FAIL() << "the consumers did not catch up";
  }

  std::unique_ptr<grpc::ClientContext> As(const std::string& user, const std::string& org, Role role) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", "Bearer " + Mint(user, org, {role}));
    return ctx;
  }

  v1::CalendarFeed CreateFeed(const std::string& user, const std::string& org, Role role,
                              v1::CalendarFeed::Kind kind, const std::string& instrument = "",
                              const std::string& request_id = "") {
    v1::CreateCalendarFeedRequest req;
    req.set_parent("users/" + user);
    req.mutable_calendar_feed()->set_kind(kind);
    req.mutable_calendar_feed()->set_instrument(instrument);
    req.set_request_id(request_id);
    v1::CalendarFeed feed;
    auto ctx = As(user, org, role);
    grpc::Status s = stub_->CreateCalendarFeed(ctx.get(), req, &feed);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return feed;
  }

  static std::string TokenOf(const std::string& url) {
    std::string t(absl::StripPrefix(url, "https://labshare.example.org/feeds/"));
    return std::string(absl::StripSuffix(t, ".ics"));
  }

  // GetCalendarFeedContent without any credentials.
  grpc::Status Content(const std::string& token, v1::CalendarFeedContent* out) {
    grpc::ClientContext ctx;
    v1::GetCalendarFeedContentRequest req;
    req.set_token(token);
    return stub_->GetCalendarFeedContent(&ctx, req, out);
  }

  // The document as python3-icalendar reads it.
  std::vector<std::string> Parsed(const std::string& body) {
    const std::string path = absl::StrCat(labshare::testing::TestTempDir(), "/feed-", ++files_, ".ics");
    std::ofstream(path, std::ios::binary) << body;
    const std::string out =
        RunCommand(absl::StrCat("/usr/bin/python3 " LABSHARE_SOURCE_DIR "/tests/notify/feed_ical_check.py ", path, " 2>&1"));
    std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
    return lines;
  }

  static std::string ReasonOf(const grpc::Status& s) { return ErrorReason(FromGrpcStatus(s)); }
  // The field of the first violation in the answer's google.rpc.BadRequest
  // ("" without one).
  static std::string ViolatedField(const grpc::Status& s) {
    const google::rpc::Status details = ToRpcStatus(s);
    for (const auto& detail : details.details()) {
      google::rpc::BadRequest bad;
      if (detail.UnpackTo(&bad) && bad.field_violations_size() > 0) return bad.field_violations(0).field();
    }
    return "";
  }

  FeedOptions options_;
  FakeClock clock_{Utc(2026, 12, 1, 0)};
  FakeClock loop_clock_;
  SystemClock wall_;
  FakeInventory inventory_;
  int inventory_port_ = 0;
  std::unique_ptr<grpc::Server> inventory_server_;
  std::unique_ptr<RedisServer> redis_server_;
  std::unique_ptr<RedisPool> pool_;
  std::vector<std::string> streams_;
  std::unique_ptr<FeedModule> module_;
  std::unique_ptr<Authorizer> auth_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::CalendarFeedService::Stub> stub_;
  std::unique_ptr<ConsumerLoop> loop_;
  int files_ = 0;
};

// The purpose has every character TEXT escapes, Chinese text and a line
// break; the summary of the Shanghai booking is long enough to be folded.
const char kPurpose[] = "冷冻电镜样品检测; batch 2, grids A\\B\nsecond line";

BookingSpec Onsite() {
  BookingSpec s;
  s.id = "b1";
  s.start = Utc(2026, 12, 10, 1);  // 09:00 in Shanghai
  s.end = Utc(2026, 12, 10, 3);
  s.updated = Utc(2026, 11, 20, 0);
  s.purpose = kPurpose;
  return s;
}

BookingSpec Lease() {
  BookingSpec s;
  s.id = "b2";
  s.instrument = "instruments/nmr-2";
  s.owner = "organizations/lab-a";
  s.mode = labshare::type::v1::LEASE;
  s.lease = "leases/b2";
  s.start = Utc(2026, 10, 20, 8);  // 10:00 CEST; ends 09:00 CET after the change
  s.end = Utc(2026, 11, 5, 8);
  s.state = bk::Booking::PENDING_APPROVAL;
  s.updated = Utc(2026, 10, 1, 0);
  s.purpose = "field campaign";
  return s;
}

BookingSpec ServiceRun() {
  BookingSpec s;
  s.id = "r3";
  s.mode = labshare::type::v1::TECHNICAL_SERVICE;
  s.user = "users/zhang-san";
  s.payer = "organizations/lab-c";
  s.operator_user = "users/wang-fang";
  s.service_order = "serviceOrders/o3";
  s.start = Utc(2026, 12, 11, 6);
  s.end = Utc(2026, 12, 11, 8);
  s.updated = Utc(2026, 11, 21, 0);
  s.purpose = "XRD of 4 samples";
  return s;
}

TEST_F(FeedModuleTest, UserFeedParsedByIcalendar) {
  Created("{bk:3}:outbox", "ev-b1-created", Onsite());
  Created("{bk:7}:outbox", "ev-b2-created", Lease());
  Created("{bk:3}:outbox", "ev-r3-created", ServiceRun());
  Cancelled("{bk:3}:outbox", "ev-b1-cancelled", Onsite(), Utc(2026, 11, 25, 0));
  Drain();

  const v1::CalendarFeed feed = CreateFeed("li-wei", "lab-a", Role::kLabUser, v1::CalendarFeed::USER);
  ASSERT_TRUE(absl::StartsWith(feed.secret_url(), "https://labshare.example.org/feeds/")) << feed.secret_url();
  const std::string token = TokenOf(feed.secret_url());
  EXPECT_EQ(token.size(), 43u);  // 256 bits
  v1::CalendarFeedContent content;
  ASSERT_TRUE(Content(token, &content).ok());
  EXPECT_EQ(content.content_type(), "text/calendar; charset=utf-8");
  EXPECT_EQ(content.etag().size(), 64u);
  const std::string loc = "TEM Titan 冷冻电镜, Zhangjiang Lab, 100 Haike Rd, Shanghai";
  EXPECT_EQ(Parsed(content.body()),
            (std::vector<std::string>{
                R"j(["CAL", "LabShare: li-wei", "PUBLISH", "2.0", "GREGORIAN", "-//LabShare//Calendar feeds 1.0//EN"])j",
                R"j(["TZ", "Europe/Berlin"])j",
                R"j(["TZ", "Asia/Shanghai"])j",
                R"j(["EV", "lease-b2@labshare.example.org", "TENTATIVE", "Europe/Berlin", "2026-10-20T08:00:00Z", "2026-11-05T08:00:00Z", 0, "NMR 600: lease (pending approval)", "NMR 600, Adlershof"])j",
                R"j(["DESC", "lease-b2@labshare.example.org", "Booking: bookings/b2\nState: PENDING_APPROVAL\nInstrument: NMR 600 (instruments/nmr-2)\nUser: users/li-wei\nPaid by: organizations/lab-a\nLease: leases/b2\nPurpose: field campaign"])j",
                absl::StrCat(R"j(["EV", "booking-b1@labshare.example.org", "CANCELLED", "Asia/Shanghai", "2026-12-10T01:00:00Z", "2026-12-10T03:00:00Z", 1, "TEM Titan 冷冻电镜: booking (cancelled)", ")j",
                             loc, R"j("])j"),
                R"j(["DESC", "booking-b1@labshare.example.org", "Booking: bookings/b1\nState: CANCELLED\nInstrument: TEM Titan 冷冻电镜 (instruments/tem-1)\nUser: users/li-wei\nPaid by: organizations/lab-a\nPurpose: 冷冻电镜样品检测; batch 2, grids A\\B\nsecond line"])j",
            }));
  // The local times as written, with their zones.
  EXPECT_TRUE(absl::StrContains(content.body(), "DTSTART;TZID=Asia/Shanghai:20261210T090000\r\n"));
  EXPECT_TRUE(absl::StrContains(content.body(), "DTSTART;TZID=Europe/Berlin:20261020T100000\r\n"));
  EXPECT_TRUE(absl::StrContains(content.body(), "DTEND;TZID=Europe/Berlin:20261105T090000\r\n"));
}

TEST_F(FeedModuleTest, OperatorSeesTheRunsTheyOperate) {
  Created("{bk:3}:outbox", "ev-r3-created", ServiceRun());
  Drain();
  const v1::CalendarFeed feed = CreateFeed("wang-fang", "lab-b", Role::kFacilityStaff, v1::CalendarFeed::USER);
  v1::CalendarFeedContent content;
  ASSERT_TRUE(Content(TokenOf(feed.secret_url()), &content).ok());
  const auto parsed = Parsed(content.body());
  ASSERT_EQ(parsed.size(), 4u) << absl::StrJoin(parsed, "\n");
  EXPECT_EQ(parsed[2],
            R"j(["EV", "run-r3@labshare.example.org", "CONFIRMED", "Asia/Shanghai", "2026-12-11T06:00:00Z", "2026-12-11T08:00:00Z", 0, "TEM Titan 冷冻电镜: service run you operate", "TEM Titan 冷冻电镜, Zhangjiang Lab, 100 Haike Rd, Shanghai"])j");
}

TEST_F(FeedModuleTest, InstrumentFeedShowsBusyTimeOnlyOutsideTheOwner) {
  Created("{bk:3}:outbox", "ev-b1-created", Onsite());
  Created("{bk:3}:outbox", "ev-r3-created", ServiceRun());
  Drain();
  // li-wei (lab-a) does not belong to the owner lab-b: busy time only.
  const v1::CalendarFeed outside =
      CreateFeed("li-wei", "lab-a", Role::kLabUser, v1::CalendarFeed::INSTRUMENT, "instruments/tem-1");
  EXPECT_EQ(outside.owner_organization(), "organizations/lab-a");
  EXPECT_FALSE(outside.shows_details());
  v1::CalendarFeedContent busy;
  ASSERT_TRUE(Content(TokenOf(outside.secret_url()), &busy).ok());
  EXPECT_EQ(Parsed(busy.body()),
            (std::vector<std::string>{
                R"j(["CAL", "LabShare: TEM Titan 冷冻电镜", "PUBLISH", "2.0", "GREGORIAN", "-//LabShare//Calendar feeds 1.0//EN"])j",
                R"j(["TZ", "Asia/Shanghai"])j",
                // Blocked intervals: the 30-minute buffer after each slot is busy too.
                absl::StrCat(R"j(["EV", ")j", Busy("b1"), R"j(", "CONFIRMED", "Asia/Shanghai", "2026-12-10T01:00:00Z", "2026-12-10T03:30:00Z", 0, "Busy", "Zhangjiang Lab, 100 Haike Rd, Shanghai"])j"),
                absl::StrCat(R"j(["EV", ")j", Busy("r3"), R"j(", "CONFIRMED", "Asia/Shanghai", "2026-12-11T06:00:00Z", "2026-12-11T08:30:00Z", 0, "Busy", "Zhangjiang Lab, 100 Haike Rd, Shanghai"])j"),
            }));
  for (const char* personal : {"li-wei", "zhang-san", "lab-a", "lab-c", "冷冻电镜样品", "XRD", "wang-fang"}) {
    EXPECT_FALSE(absl::StrContains(busy.body(), personal)) << personal;
  }
  // Staff of the owner see who, for whom and why.
  const v1::CalendarFeed inside =
      CreateFeed("wang-fang", "lab-b", Role::kFacilityStaff, v1::CalendarFeed::INSTRUMENT, "instruments/tem-1");
  EXPECT_TRUE(inside.shows_details());
  v1::CalendarFeedContent detailed;
  ASSERT_TRUE(Content(TokenOf(inside.secret_url()), &detailed).ok());
  const auto parsed = Parsed(detailed.body());
  ASSERT_EQ(parsed.size(), 6u) << absl::StrJoin(parsed, "\n");
  EXPECT_EQ(parsed[2],
            absl::StrCat(R"j(["EV", ")j", Busy("b1"), R"j(", "CONFIRMED", "Asia/Shanghai", "2026-12-10T01:00:00Z", "2026-12-10T03:30:00Z", 0, "booking: li-wei for lab-a", "Zhangjiang Lab, 100 Haike Rd, Shanghai"])j"));
  EXPECT_EQ(parsed[4],
            absl::StrCat(R"j(["EV", ")j", Busy("r3"), R"j(", "CONFIRMED", "Asia/Shanghai", "2026-12-11T06:00:00Z", "2026-12-11T08:30:00Z", 0, "service run: zhang-san for lab-c", "Zhangjiang Lab, 100 Haike Rd, Shanghai"])j"));
  EXPECT_TRUE(absl::StrContains(parsed[5], "Purpose: XRD of 4 samples")) << parsed[5];
}

// feeds.proto: details only for a feed owner that owns or operates the
// instrument. After an operator change the new operator's feeds show them
// for the entries projected before it, the old operator's no longer; an
// older or repeated change event moves nothing back.
TEST_F(FeedModuleTest, AnOperatorChangeShowsEarlierEntriesToTheNewOperatorOnly) {
  Created("{bk:3}:outbox", "ev-b1-created", Onsite());
  Drain();
  inventory_.SetUser("chen-jie", "lab-c", false);
  inventory_.SetUser("zhou-min", "lab-d", false);
  const v1::CalendarFeed c =
      CreateFeed("chen-jie", "lab-c", Role::kFacilityStaff, v1::CalendarFeed::INSTRUMENT, "instruments/tem-1");
  const v1::CalendarFeed d =
      CreateFeed("zhou-min", "lab-d", Role::kFacilityStaff, v1::CalendarFeed::INSTRUMENT, "instruments/tem-1");
  auto detailed = [&](const v1::CalendarFeed& feed) {
    v1::CalendarFeedContent content;
    EXPECT_TRUE(Content(TokenOf(feed.secret_url()), &content).ok());
    const bool people = absl::StrContains(content.body(), "li-wei");
    EXPECT_NE(people, absl::StrContains(content.body(), "SUMMARY:Busy")) << content.body();
    return people;
  };
  // What ListCalendarFeeds says of the user's one feed.
  auto shows = [&](const std::string& user, const std::string& org) {
    v1::ListCalendarFeedsRequest req;
    req.set_parent("users/" + user);
    v1::ListCalendarFeedsResponse resp;
    auto ctx = As(user, org, Role::kFacilityStaff);
    EXPECT_TRUE(stub_->ListCalendarFeeds(ctx.get(), req, &resp).ok());
    EXPECT_EQ(resp.calendar_feeds_size(), 1);
    return resp.calendar_feeds_size() == 1 && resp.calendar_feeds(0).shows_details();
  };
  // Whether lab-c's and lab-d's feeds show details, in their content and
  // in shows_details.
  auto expect = [&](bool to_c, bool to_d) {
    EXPECT_EQ(detailed(c), to_c);
    EXPECT_EQ(shows("chen-jie", "lab-c"), to_c);
    EXPECT_EQ(detailed(d), to_d);
    EXPECT_EQ(shows("zhou-min", "lab-d"), to_d);
  };
  expect(false, false);

  Operated("lab-c", "2");
  Drain();
  expect(true, false);
  // A late event of an earlier state, and the same event again: no change.
  Operated("lab-b", "1");
  Operated("lab-c", "2");
  Drain();
  expect(true, false);

  Operated("lab-d", "3");
  Drain();
  expect(false, true);
}

TEST_F(FeedModuleTest, AFeedLivesAsLongAsItsUserAndShowsPeopleOnlyWhileTheyStayInTheOwner) {
  Created("{bk:3}:outbox", "ev-b1-created", Onsite());
  Drain();
  const v1::CalendarFeed inside =
      CreateFeed("wang-fang", "lab-b", Role::kFacilityStaff, v1::CalendarFeed::INSTRUMENT, "instruments/tem-1");
  ASSERT_TRUE(inside.shows_details());
  // wang-fang moved to lab-a: the owner's instrument feed keeps its URL but
  // shows busy time only.
  inventory_.SetUser("wang-fang", "lab-a", false);
  v1::CalendarFeedContent moved;
  ASSERT_TRUE(Content(TokenOf(inside.secret_url()), &moved).ok());
  EXPECT_TRUE(absl::StrContains(moved.body(), "SUMMARY:Busy")) << moved.body();
  for (const char* personal : {"li-wei", "lab-a"}) EXPECT_FALSE(absl::StrContains(moved.body(), personal)) << personal;
  // A disabled user's feed is gone.
  const v1::CalendarFeed mine = CreateFeed("li-wei", "lab-a", Role::kLabUser, v1::CalendarFeed::USER);
  inventory_.SetUser("li-wei", "lab-a", true);
  v1::CalendarFeedContent none;
  grpc::Status s = Content(TokenOf(mine.secret_url()), &none);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ReasonOf(s), "FEED_NOT_FOUND");
  // So is a removed user's (one not asked about yet: answers are kept a
  // minute).
  inventory_.SetUser("zhao-lei", "lab-b", false);
  const v1::CalendarFeed theirs = CreateFeed("zhao-lei", "lab-b", Role::kLabUser, v1::CalendarFeed::USER);
  {
    std::lock_guard<std::mutex> lock(inventory_.users_mu);
    inventory_.users.erase("users/zhao-lei");
  }
  s = Content(TokenOf(theirs.secret_url()), &none);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ReasonOf(s), "FEED_NOT_FOUND");
}

// feeds.proto: "inventory is asked at most once a minute per user", also
// about a user it no longer has (a removed user's URL polled by calendar
// applications does not reach inventory on every fetch); one added back is
// served again once that minute is over.
TEST_F(FeedModuleTest, ARemovedUserIsAskedAboutAtMostOnceAMinuteAndServedAgainWhenBack) {
  FakeClock wall(Utc(2026, 12, 1, 0));
  auto directory = NewInventoryDirectory(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", inventory_port_), grpc::InsecureChannelCredentials()), &wall,
      options_);
  auto expect_gone = [&] {
    auto gone = directory->LookupUser("users/nobody");
    EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(ErrorReason(gone.status()), "USER_NOT_FOUND");
  };
  expect_gone();  // 0 s: asked
  wall.Advance(absl::Seconds(30));
  expect_gone();  // kept
  wall.Advance(absl::Seconds(29));
  expect_gone();  // 59 s: kept
  EXPECT_EQ(inventory_.user_calls, 1);
  inventory_.SetUser("nobody", "lab-a", false);
  expect_gone();  // added back, the answer is kept to the end of its minute
  EXPECT_EQ(inventory_.user_calls, 1);
  wall.Advance(absl::Seconds(1));  // 60 s
  auto back = directory->LookupUser("users/nobody");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->organization, "organizations/lab-a");
  EXPECT_FALSE(back->disabled);
  EXPECT_EQ(inventory_.user_calls, 2);
}

TEST_F(FeedModuleTest, EachEventAppliesOnceAndSequenceFollowsChanges) {
  BookingSpec s = Onsite();
  Created("{bk:3}:outbox", "ev-1", s);
  Created("{bk:3}:outbox", "ev-1", s);  // the same event delivered twice
  Drain();
  const v1::CalendarFeed feed = CreateFeed("li-wei", "lab-a", Role::kLabUser, v1::CalendarFeed::USER);
  const std::string token = TokenOf(feed.secret_url());
  auto seq = [&]() -> std::string {
    v1::CalendarFeedContent c;
    EXPECT_TRUE(Content(token, &c).ok());
    for (absl::string_view line : absl::StrSplit(c.body(), "\r\n")) {
      if (absl::StartsWith(line, "SEQUENCE:")) return std::string(line.substr(9));
    }
    return "none";
  };
  EXPECT_EQ(seq(), "0");
  // The event's marker, set in the same step as its change.
  auto ttl = pool_->Command({"TTL", "{notify}:feed:done:ev-1"});
  ASSERT_TRUE(ttl.ok());
  EXPECT_GT(ttl->integer, 29 * 24 * 3600);
  // A new interval: SEQUENCE 1.
  s.start += absl::Hours(1);
  s.end += absl::Hours(1);
  s.updated = Utc(2026, 11, 21, 0);
  auto moved = Event("ev-2", s.updated);
  *moved.mutable_booking_interval_changed()->mutable_booking() = MakeBooking(s);
  Publish("{bk:3}:outbox", moved);
  // An older snapshot arriving late changes nothing.
  BookingSpec stale = Onsite();
  stale.updated = Utc(2026, 11, 20, 12);
  auto late = Event("ev-3", stale.updated);
  *late.mutable_booking_checked_in()->mutable_booking() = MakeBooking(stale);
  Publish("{bk:3}:outbox", late);
  Drain();
  EXPECT_EQ(seq(), "1");
  v1::CalendarFeedContent c;
  ASSERT_TRUE(Content(token, &c).ok());
  EXPECT_TRUE(absl::StrContains(c.body(), "DTSTART;TZID=Asia/Shanghai:20261210T100000\r\n"));
  // Inventory was asked once for the instrument (cached).
  EXPECT_EQ(inventory_.calls.load(), 1);
}

TEST_F(FeedModuleTest, AnEventWaitsWhileInventoryIsDown) {
  inventory_.down = true;
  Created("{bk:3}:outbox", "ev-b1-created", Onsite());
  for (int round = 0; round < 5; ++round) {
    loop_->RunOnce();
    loop_clock_.Advance(absl::Seconds(1));
  }
  auto pending = pool_->Command({"XPENDING", "{bk:3}:outbox", "notify-feeds"});
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(pending->elements[0].integer, 1);  // read, not acknowledged
  auto before = pool_->Command({"EXISTS", "{notify}:feed:e:b1"});
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->integer, 0);
  inventory_.down = false;
  Drain();
  auto after = pool_->Command({"EXISTS", "{notify}:feed:e:b1"});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->integer, 1);
}

// Entries another replica left pending are reclaimed at once.
class FeedModuleReclaimTest : public FeedModuleTest {
 protected:
  FeedModuleReclaimTest() { options_.reclaim_idle = absl::ZeroDuration(); }
};

TEST_F(FeedModuleReclaimTest, AnEventOfAReplicaKilledBeforeItsAckIsAppliedOnce) {
  Created("{bk:3}:outbox", "ev-b1-created", Onsite());
  // A replica read the entry, applied it and died before XACK (kill -9).
  ASSERT_TRUE(pool_->Command({"XGROUP", "CREATE", "{bk:3}:outbox", "notify-feeds", "0", "MKSTREAM"}).ok());
  auto taken = pool_->Command({"XREADGROUP", "GROUP", "notify-feeds", "dead-replica", "COUNT", "10", "STREAMS",
                               "{bk:3}:outbox", ">"});
  ASSERT_TRUE(taken.ok() && taken->is_array());
  const auto& entry = taken->elements[0].elements[1].elements[0];
  StreamEvent event;
  event.stream_id = entry.elements[0].str;
  event.type = entry.elements[1].elements[1].str;
  event.payload = entry.elements[1].elements[3].str;
  ASSERT_TRUE(module_->projection().Apply(event).ok());
  Cancelled("{bk:3}:outbox", "ev-b1-cancelled", Onsite(), Utc(2026, 11, 25, 0));
  Drain();  // this replica reclaims the dead one's entry and acknowledges it
  auto pending = pool_->Command({"XPENDING", "{bk:3}:outbox", "notify-feeds"});
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(pending->elements[0].integer, 0);
  auto seq = pool_->Command({"HMGET", "{notify}:feed:e:b1", "seq"});
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(seq->elements[0].str, "1");  // created, then cancelled: one change
  const v1::CalendarFeed feed = CreateFeed("li-wei", "lab-a", Role::kLabUser, v1::CalendarFeed::USER);
  v1::CalendarFeedContent c;
  ASSERT_TRUE(Content(TokenOf(feed.secret_url()), &c).ok());
  EXPECT_TRUE(absl::StrContains(c.body(), "STATUS:CANCELLED\r\n"));
}

TEST_F(FeedModuleTest, EntriesOlderThanTheWindowAreDropped) {
  BookingSpec old = Onsite();
  old.id = "old";
  old.start = Utc(2026, 8, 1, 1);  // ended 122 days before "now" (1 Dec)
  old.end = Utc(2026, 8, 1, 3);
  Created("{bk:3}:outbox", "ev-old", old);
  Created("{bk:3}:outbox", "ev-new", Onsite());
  Drain();
  auto exists = pool_->Command({"EXISTS", "{notify}:feed:e:old"});
  ASSERT_TRUE(exists.ok());
  EXPECT_EQ(exists->integer, 0);
  auto count = pool_->Command({"ZCARD", "{notify}:feed:u:li-wei"});
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(count->integer, 1);
}

TEST_F(FeedModuleTest, RotateAndDeleteRevokeTheOldUrl) {
  const v1::CalendarFeed feed = CreateFeed("li-wei", "lab-a", Role::kLabUser, v1::CalendarFeed::USER);
  const std::string first = TokenOf(feed.secret_url());
  v1::CalendarFeedContent c;
  ASSERT_TRUE(Content(first, &c).ok());

  v1::RotateCalendarFeedRequest rotate;
  rotate.set_name(feed.name());
  rotate.set_request_id("rotate-1");
  v1::CalendarFeed rotated;
  {
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    ASSERT_TRUE(stub_->RotateCalendarFeed(ctx.get(), rotate, &rotated).ok());
  }
  const std::string second = TokenOf(rotated.secret_url());
  ASSERT_EQ(second.size(), 43u);
  EXPECT_NE(first, second);
  grpc::Status old = Content(first, &c);
  EXPECT_EQ(old.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ReasonOf(old), "FEED_NOT_FOUND");
  ASSERT_TRUE(Content(second, &c).ok());
  // A retry of the rotation returns the feed without a URL and rotates nothing.
  v1::CalendarFeed again;
  {
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    ASSERT_TRUE(stub_->RotateCalendarFeed(ctx.get(), rotate, &again).ok());
  }
  EXPECT_EQ(again.secret_url(), "");
  EXPECT_EQ(again.name(), feed.name());
  ASSERT_TRUE(Content(second, &c).ok());

  v1::DeleteCalendarFeedRequest del;
  del.set_name(feed.name());
  v1::CalendarFeed deleted;
  {
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    ASSERT_TRUE(stub_->DeleteCalendarFeed(ctx.get(), del, &deleted).ok());
  }
  EXPECT_TRUE(deleted.has_delete_time());
  grpc::Status gone = Content(second, &c);
  EXPECT_EQ(gone.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ReasonOf(gone), "FEED_NOT_FOUND");
  {
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    grpc::Status twice = stub_->DeleteCalendarFeed(ctx.get(), del, &deleted);
    EXPECT_EQ(twice.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(ReasonOf(twice), "FEED_NOT_FOUND");
  }
  {
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    grpc::Status s = stub_->RotateCalendarFeed(ctx.get(), rotate, &again);  // replay still answers
    EXPECT_TRUE(s.ok());
  }
  // Events: created, rotated, deleted, in order, on {notify}:outbox.
  auto entries = pool_->Command({"XRANGE", "{notify}:outbox", "-", "+"});
  ASSERT_TRUE(entries.ok());
  std::vector<std::string> kinds;
  for (const auto& entry : entries->elements) {
    const auto& fields = entry.elements[1].elements;
    v1::NotifyEvent e;
    ASSERT_EQ(fields[0].str, "type");
    EXPECT_EQ(fields[1].str, "labshare.notify.v1.NotifyEvent");
    ASSERT_TRUE(e.ParseFromString(fields[3].str));
    kinds.push_back(absl::StrCat(e.payload_case(), ":", e.header().actor(), ":",
                                 e.has_calendar_feed_rotated() ? e.calendar_feed_rotated().calendar_feed().secret_url()
                                                               : ""));
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"40:users/li-wei:", "41:users/li-wei:", "42:users/li-wei:"}));
  // Unknown and empty tokens.
  grpc::Status unknown = Content("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &c);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ReasonOf(unknown), "FEED_NOT_FOUND");
  grpc::Status empty = Content("", &c);
  EXPECT_EQ(empty.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ReasonOf(empty), "INVALID_FIELD");
}

TEST_F(FeedModuleTest, CreateIsIdempotentAndShowsTheSecretOnce) {
  const v1::CalendarFeed first =
      CreateFeed("li-wei", "lab-a", Role::kLabUser, v1::CalendarFeed::USER, "", "req-1");
  EXPECT_FALSE(first.secret_url().empty());
  const v1::CalendarFeed retry =
      CreateFeed("li-wei", "lab-a", Role::kLabUser, v1::CalendarFeed::USER, "", "req-1");
  EXPECT_EQ(retry.name(), first.name());
  EXPECT_EQ(retry.secret_url(), "");
  // The same request_id with other content.
  v1::CreateCalendarFeedRequest other;
  other.set_parent("users/li-wei");
  other.mutable_calendar_feed()->set_kind(v1::CalendarFeed::INSTRUMENT);
  other.mutable_calendar_feed()->set_instrument("instruments/tem-1");
  other.set_request_id("req-1");
  v1::CalendarFeed out;
  auto ctx = As("li-wei", "lab-a", Role::kLabUser);
  grpc::Status s = stub_->CreateCalendarFeed(ctx.get(), other, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ReasonOf(s), "REQUEST_ID_REUSED");
  // Only the token's hash is stored: the token itself appears in no key or value.
  const std::string token = TokenOf(first.secret_url());
  auto keys = pool_->Command({"KEYS", "*"});
  ASSERT_TRUE(keys.ok());
  for (const auto& k : keys->elements) {
    EXPECT_FALSE(absl::StrContains(k.str, token));
    auto type = pool_->Command({"TYPE", k.str});
    if (type.ok() && type->str == "hash") {
      auto all = pool_->Command({"HGETALL", k.str});
      ASSERT_TRUE(all.ok());
      for (const auto& v : all->elements) EXPECT_FALSE(absl::StrContains(v.str, token)) << k.str;
    }
  }
  // One list entry.
  v1::ListCalendarFeedsRequest list;
  list.set_parent("users/li-wei");
  v1::ListCalendarFeedsResponse listed;
  auto lctx = As("li-wei", "lab-a", Role::kLabUser);
  ASSERT_TRUE(stub_->ListCalendarFeeds(lctx.get(), list, &listed).ok());
  ASSERT_EQ(listed.calendar_feeds_size(), 1);
  EXPECT_EQ(listed.calendar_feeds(0).name(), first.name());
  EXPECT_EQ(listed.calendar_feeds(0).secret_url(), "");
}

TEST_F(FeedModuleTest, ExactErrorsOfManagement) {
  v1::CalendarFeed out;
  // Another user's feeds: USER_SCOPE.
  {
    v1::CreateCalendarFeedRequest req;
    req.set_parent("users/zhang-san");
    req.mutable_calendar_feed()->set_kind(v1::CalendarFeed::USER);
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    grpc::Status s = stub_->CreateCalendarFeed(ctx.get(), req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(ReasonOf(s), "USER_SCOPE");
  }
  // A consortium admin may, and records no organisation.
  {
    v1::CreateCalendarFeedRequest req;
    req.set_parent("users/zhang-san");
    req.mutable_calendar_feed()->set_kind(v1::CalendarFeed::INSTRUMENT);
    req.mutable_calendar_feed()->set_instrument("instruments/tem-1");
    auto ctx = As("admin", "consortium", Role::kConsortiumAdmin);
    ASSERT_TRUE(stub_->CreateCalendarFeed(ctx.get(), req, &out).ok());
    EXPECT_EQ(out.owner_organization(), "");
    EXPECT_FALSE(out.shows_details());
  }
  // Unknown instrument.
  {
    v1::CreateCalendarFeedRequest req;
    req.set_parent("users/li-wei");
    req.mutable_calendar_feed()->set_kind(v1::CalendarFeed::INSTRUMENT);
    req.mutable_calendar_feed()->set_instrument("instruments/nope");
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    grpc::Status s = stub_->CreateCalendarFeed(ctx.get(), req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(ReasonOf(s), "INSTRUMENT_NOT_FOUND");
  }
  // Kind missing; instrument on a USER feed.
  for (auto kind : {v1::CalendarFeed::KIND_UNSPECIFIED, v1::CalendarFeed::USER}) {
    v1::CreateCalendarFeedRequest req;
    req.set_parent("users/li-wei");
    req.mutable_calendar_feed()->set_kind(kind);
    req.mutable_calendar_feed()->set_instrument("instruments/tem-1");
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    grpc::Status s = stub_->CreateCalendarFeed(ctx.get(), req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(ReasonOf(s), "INVALID_FIELD");
  }
  // A bad feed name (with the google.rpc.BadRequest every bad field carries,
  // types.proto); a feed that does not exist.
  {
    v1::RotateCalendarFeedRequest req;
    req.set_name("users/li-wei/feeds/x");
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    grpc::Status s = stub_->RotateCalendarFeed(ctx.get(), req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(ReasonOf(s), "INVALID_NAME");
    EXPECT_EQ(ViolatedField(s), "name");
  }
  {
    v1::DeleteCalendarFeedRequest req;
    req.set_name("users/li-wei/calendarFeeds/");
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    grpc::Status s = stub_->DeleteCalendarFeed(ctx.get(), req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(ReasonOf(s), "INVALID_NAME");
    EXPECT_EQ(ViolatedField(s), "name");
  }
  {
    v1::RotateCalendarFeedRequest req;
    req.set_name("users/li-wei/calendarFeeds/0000000000000000");
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    grpc::Status s = stub_->RotateCalendarFeed(ctx.get(), req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(ReasonOf(s), "FEED_NOT_FOUND");
  }
  // No token at all for management.
  {
    v1::ListCalendarFeedsRequest req;
    req.set_parent("users/li-wei");
    v1::ListCalendarFeedsResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->ListCalendarFeeds(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(ReasonOf(s), "MISSING_CREDENTIALS");
  }
  // The feed limit.
  for (int i = 0; i < 20; ++i) CreateFeed("li-wei", "lab-a", Role::kLabUser, v1::CalendarFeed::USER);
  {
    v1::CreateCalendarFeedRequest req;
    req.set_parent("users/li-wei");
    req.mutable_calendar_feed()->set_kind(v1::CalendarFeed::USER);
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    grpc::Status s = stub_->CreateCalendarFeed(ctx.get(), req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(ReasonOf(s), "FEED_LIMIT_REACHED");
  }
  // Paging through the 20.
  v1::ListCalendarFeedsRequest list;
  list.set_parent("users/li-wei");
  list.set_page_size(15);
  v1::ListCalendarFeedsResponse page;
  {
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    ASSERT_TRUE(stub_->ListCalendarFeeds(ctx.get(), list, &page).ok());
  }
  EXPECT_EQ(page.calendar_feeds_size(), 15);
  ASSERT_FALSE(page.next_page_token().empty());
  list.set_page_token(page.next_page_token());
  {
    auto ctx = As("li-wei", "lab-a", Role::kLabUser);
    ASSERT_TRUE(stub_->ListCalendarFeeds(ctx.get(), list, &page).ok());
  }
  EXPECT_EQ(page.calendar_feeds_size(), 5);
  EXPECT_EQ(page.next_page_token(), "");
}

TEST_F(FeedModuleTest, FeedTextIsInTheOwnersLanguage) {
  Created("{bk:3}:outbox", "ev-b1-created", Onsite());
  Created("{bk:7}:outbox", "ev-b2-created", Lease());
  Cancelled("{bk:3}:outbox", "ev-b1-cancelled", Onsite(), Utc(2026, 11, 25, 0));
  Drain();
  // li-wei reads Chinese (their notification settings, as mail does).
  ASSERT_TRUE(pool_->Command({"HSET", "{notify}:settings:li-wei", "language", "zh-CN"}).ok());
  const v1::CalendarFeed feed = CreateFeed("li-wei", "lab-a", Role::kLabUser, v1::CalendarFeed::USER);
  v1::CalendarFeedContent content;
  ASSERT_TRUE(Content(TokenOf(feed.secret_url()), &content).ok());
  const auto parsed = Parsed(content.body());
  ASSERT_EQ(parsed.size(), 7u) << absl::StrJoin(parsed, "\n");
  EXPECT_EQ(parsed[3],
            R"j(["EV", "lease-b2@labshare.example.org", "TENTATIVE", "Europe/Berlin", "2026-10-20T08:00:00Z", "2026-11-05T08:00:00Z", 0, "NMR 600：租赁（待审批）", "NMR 600, Adlershof"])j");
  EXPECT_EQ(parsed[4],
            R"j(["DESC", "lease-b2@labshare.example.org", "预约：bookings/b2\n状态：PENDING_APPROVAL\n仪器：NMR 600 (instruments/nmr-2)\n用户：users/li-wei\n付款方：organizations/lab-a\n租赁：leases/b2\n用途：field campaign"])j");
  EXPECT_TRUE(absl::StrContains(parsed[5], R"j("TEM Titan 冷冻电镜：预约（已取消）")j")) << parsed[5];
  // Busy time of an instrument outside their organisation, in Chinese.
  const v1::CalendarFeed outside =
      CreateFeed("li-wei", "lab-a", Role::kLabUser, v1::CalendarFeed::INSTRUMENT, "instruments/tem-1");
  ASSERT_TRUE(Content(TokenOf(outside.secret_url()), &content).ok());
  const auto busy = Parsed(content.body());
  ASSERT_EQ(busy.size(), 3u) << absl::StrJoin(busy, "\n");
  EXPECT_TRUE(absl::StrContains(busy[2], R"j(1, "占用（已取消）", ")j")) << busy[2];
  // Back to English: the next fetch says so.
  ASSERT_TRUE(pool_->Command({"HSET", "{notify}:settings:li-wei", "language", "en"}).ok());
  ASSERT_TRUE(Content(TokenOf(outside.secret_url()), &content).ok());
  EXPECT_TRUE(absl::StrContains(Parsed(content.body())[2], R"j(1, "Busy (cancelled)", ")j"));
}

class FeedModuleChineseDefaultTest : public FeedModuleTest {
 protected:
  void SetUp() override {
    options_.default_language = "zh-CN";
    FeedModuleTest::SetUp();
  }
};

TEST_F(FeedModuleChineseDefaultTest, OwnersWithoutALanguageReadTheServiceDefault) {
  Created("{bk:3}:outbox", "ev-b1-created", Onsite());
  Created("{bk:3}:outbox", "ev-r3-created", ServiceRun());
  Drain();
  const v1::CalendarFeed inside =
      CreateFeed("wang-fang", "lab-b", Role::kFacilityStaff, v1::CalendarFeed::INSTRUMENT, "instruments/tem-1");
  v1::CalendarFeedContent content;
  ASSERT_TRUE(Content(TokenOf(inside.secret_url()), &content).ok());
  auto parsed = Parsed(content.body());
  ASSERT_EQ(parsed.size(), 6u) << absl::StrJoin(parsed, "\n");
  EXPECT_TRUE(absl::StrContains(parsed[2], R"j(0, "预约：li-wei（付款方 lab-a）", ")j")) << parsed[2];
  EXPECT_TRUE(absl::StrContains(parsed[4], R"j(0, "技术服务：zhang-san（付款方 lab-c）", ")j")) << parsed[4];
  EXPECT_TRUE(absl::StrContains(parsed[5], "用途：XRD of 4 samples")) << parsed[5];
  // Someone who chose English reads English.
  ASSERT_TRUE(pool_->Command({"HSET", "{notify}:settings:wang-fang", "language", "en"}).ok());
  ASSERT_TRUE(Content(TokenOf(inside.secret_url()), &content).ok());
  parsed = Parsed(content.body());
  ASSERT_EQ(parsed.size(), 6u);
  EXPECT_TRUE(absl::StrContains(parsed[2], R"j(0, "booking: li-wei for lab-a", ")j")) << parsed[2];
}

// feeds.proto: times are in the facility's zone, an IANA name; a facility
// whose stored zone is none ("localtime", from before inventory checked)
// is in --feed_default_time_zone, never the notifier host's zone.
TEST_F(FeedModuleTest, AFacilityZoneThatIsNoIanaNameIsTheDefaultZone) {
  BookingSpec s = Onsite();
  s.id = "x1";
  s.instrument = "instruments/xrd-3";
  s.purpose = "powder";
  Created("{bk:3}:outbox", "ev-x1-created", s);
  Drain();
  const v1::CalendarFeed feed = CreateFeed("li-wei", "lab-a", Role::kLabUser, v1::CalendarFeed::USER);
  v1::CalendarFeedContent content;
  ASSERT_TRUE(Content(TokenOf(feed.secret_url()), &content).ok());
  EXPECT_TRUE(absl::StrContains(content.body(), "DTSTART;TZID=Asia/Shanghai:20261210T090000\r\n")) << content.body();
  EXPECT_FALSE(absl::StrContains(content.body(), "localtime")) << content.body();
}

// --feed_default_time_zone is an IANA name: anything else stops the
// notifier at start.
TEST(FeedFlags, DefaultTimeZoneIsAnIanaName) {
  const std::string saved = absl::GetFlag(FLAGS_feed_default_time_zone);
  for (const char* zone : {"localtime", "Fixed/UTC+08:00:00", "Mars/Olympus"}) {
    absl::SetFlag(&FLAGS_feed_default_time_zone, zone);
    auto options = FeedOptionsFromFlags();
    EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument) << zone;
    EXPECT_TRUE(absl::StrContains(options.status().message(), "--feed_default_time_zone")) << options.status();
  }
  absl::SetFlag(&FLAGS_feed_default_time_zone, "Europe/Berlin");
  auto options = FeedOptionsFromFlags();
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->default_time_zone, "Europe/Berlin");
  absl::SetFlag(&FLAGS_feed_default_time_zone, saved);
}

}  // namespace
}  // namespace labshare::notify
