// The labshare client as people use it, black box: the real `labshare`
// binary against a real redis-server, labshare-inventory and
// labshare-booking (processes on free loopback ports, in demo time from a
// clock file so that create times are fixed), checking its exact output:
// tables with Chinese names aligned by display width, times in the caller's
// zone ($TZ) and, in tables of bookings, in the facility's zone; boolean
// flags without a value; errors under --json as one JSON object.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/token.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "tests/booking/booking_test_cluster.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_pki.h"
#include "tests/support/test_tokens.h"

namespace labshare {
namespace {

using testing::ChildProcess;

// Demo time of every process (and so of every create_time).
constexpr char kNow[] = "2027-03-01T09:00:00+08:00";

// The one place this test makes tokens: the test issuer, whose JWKS the
// child services are given (ChildProcess::Start adds the flags).
struct TestTokens {
  std::string Mint(const std::string& user, const std::string& org, std::vector<Role> roles) const {
    return testing::Mint(user, org, roles, absl::Minutes(55), absl::Now() - absl::Seconds(5));
  }
};

struct CliRun {
  int exit_code = -1;
  std::string out, err;
};

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/labshare-cli-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = new std::string(tmpl);
    tokens_ = new TestTokens();
    std::ofstream(*dir_ + "/clock") << kNow << "\n";
    auto redis = testing::RedisServer::Start();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = redis->release();
    const std::string bin = testing::LabshareBinDir();
    const std::string clock = "--clock_file=" + *dir_ + "/clock";
    auto inventory = ChildProcess::Start("inventory", bin + "/labshare-inventory",
                                         testing::WithTls({"--listen=127.0.0.1:0", "--redis=" + redis_->address(), clock},
                                                          "inventory"),
                                         *dir_);
    ASSERT_TRUE(inventory.ok()) << inventory.status();
    inventory_ = inventory->release();
    auto booking = ChildProcess::Start(
        "booking", bin + "/labshare-booking",
        testing::WithTls({"--listen=127.0.0.1:0", "--redis=" + redis_->address(),
                          "--inventory=" + inventory_->address(), clock},
                         "booking"),
        *dir_);
    ASSERT_TRUE(booking.ok()) << booking.status();
    booking_ = booking->release();
    admin_ = new std::string(tokens_->Mint("admin", "", {Role::kConsortiumAdmin}));
    Seed();
  }

  static void TearDownTestSuite() {
    delete booking_;
    delete inventory_;
    delete redis_;
    if (dir_ != nullptr) std::filesystem::remove_all(*dir_);
    delete dir_;
    delete tokens_;
    delete admin_;
  }

  // `labshare args...` with the given environment additions (e.g. TZ).
  static CliRun Labshare(const std::vector<std::string>& args, const std::string& tz = "UTC") {
    return LabshareEnv(args, {"TZ=" + tz, "LABSHARE_CONFIG=/dev/null",
                              "LABSHARE_TLS_CA=" + testing::TestPki::Shared().ca_file()});
  }

  // `labshare args...` with exactly these LABSHARE_ settings (NAME=value)
  // besides the two addresses; no token, TLS or config file from outside.
  static CliRun LabshareEnv(const std::vector<std::string>& args, const std::vector<std::string>& env) {
    std::vector<std::string> cmd = {"env", "-u", "LABSHARE_TOKEN", "-u", "LABSHARE_TOKEN_FILE", "-u", "LABSHARE_TLS_CA",
                                    "-u", "LABSHARE_TLS_CERT", "-u", "LABSHARE_TLS_KEY", "-u", "XDG_CONFIG_HOME",
                                    "LABSHARE_CONFIG=/dev/null", "TZ=UTC",
                                    "LABSHARE_INVENTORY=" + inventory_->address(),
                                    "LABSHARE_BOOKING=" + booking_->address()};
    cmd.insert(cmd.end(), env.begin(), env.end());
    cmd.push_back(testing::LabshareBinDir() + "/labshare");
    cmd.insert(cmd.end(), args.begin(), args.end());
    std::vector<std::string> quoted;
    for (const auto& a : cmd) quoted.push_back(ShellQuote(a));
    const std::string out = *dir_ + "/cli.out", err = *dir_ + "/cli.err";
    const int status = std::system((absl::StrJoin(quoted, " ") + " >" + out + " 2>" + err).c_str());
    CliRun run;
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    run.out = ReadAll(out);
    run.err = ReadAll(err);
    return run;
  }

  static CliRun Admin(std::vector<std::string> args, const std::string& tz = "UTC") {
    args.insert(args.begin(), "--token=" + *admin_);
    return Labshare(args, tz);
  }

  // Through the client itself, as an administrator would.
  static void Seed() {
    const std::vector<std::vector<std::string>> steps = {
        {"inventory", "CreateOrganization", "--organization_id=zju", "--organization.display_name=浙江大学",
         "--organization.type=UNIVERSITY", "--organization.membership_state=MEMBER", "--organization.tier=CORE"},
        {"inventory", "CreateOrganization", "--organization_id=nanocraft", "--organization.display_name=纳米工艺",
         "--organization.type=UNIVERSITY", "--organization.membership_state=MEMBER", "--organization.tier=CORE"},
        {"inventory", "CreateFacility", "--facility_id=zju-em", "--facility.display_name=浙大电镜中心",
         "--facility.owner_organization=organizations/zju", "--facility.access_policy.allow_members",
         "--facility.time_zone=Asia/Shanghai"},
        {"inventory", "CreateFacility", "--facility_id=berlin", "--facility.display_name=Berlin lab",
         "--facility.owner_organization=organizations/zju", "--facility.access_policy.allow_members",
         "--facility.time_zone=Europe/Berlin"},
        {"inventory", "CreateUser", "--user_id=li-wei", "--user.display_name=李伟",
         "--user.organization=organizations/nanocraft", "--user.roles=LAB_USER"},
        {"inventory", "CreateUser", "--user_id=zoe", "--user.display_name=Zoe\xCC\x88 Smith",  // e + U+0308
         "--user.organization=organizations/nanocraft", "--user.roles=LAB_USER"},
        {"inventory", "CreateUser", "--user_id=chen-jing", "--user.display_name=陈静 (ＢｉｏＴｅｋ)",
         "--user.organization=organizations/nanocraft", "--user.roles=LAB_USER"},
    };
    for (const auto& step : steps) {
      const CliRun r = Admin(step);
      ASSERT_EQ(r.exit_code, 0) << absl::StrJoin(step, " ") << "\n" << r.out << r.err;
    }
    for (const auto& [id, facility] : std::vector<std::pair<std::string, std::string>>{{"sem-1", "zju-em"},
                                                                                       {"afm-1", "berlin"}}) {
      const std::string mode = R"({"mode":"ON_SITE","slot_rules":{"min_block":"60s","max_block":"86400s",)"
                               R"("member_horizon":"315360000s","non_member_horizon":"315360000s",)"
                               R"("min_notice":"0s","buffer":"0s","billing_basis":"ACTUAL_TIME",)"
                               R"("billing_unit":"900s"}})";
      CliRun r = Admin({"inventory", "CreateInstrument", "--instrument_id=" + id, "--instrument.display_name=" + id,
                     "--instrument.owner_organization=organizations/zju", "--instrument.facility=facilities/" + facility,
                     "--instrument.category=electron-microscopy", "--instrument.original_value=1000000.00 CNY",
                     "--instrument.daily_available_hours=24", "--instrument.modes=" + mode});
      ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
      r = Admin({"inventory", "CreateRate", "--parent=instruments/" + id, "--rate.mode=ON_SITE",
                 "--rate.payer_class=MEMBER", "--rate.unit=PER_HOUR", "--rate.price=500.00 CNY"});
      ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    }
    const std::string liwei = tokens_->Mint("li-wei", "nanocraft", {Role::kLabUser});
    for (const auto& [id, instrument, start, end] :
         std::vector<std::tuple<std::string, std::string, std::string, std::string>>{
             {"bk01", "sem-1", "2027-03-02T09:00:00+08:00", "2027-03-02T11:00:00+08:00"},
             {"bk02", "afm-1", "2027-03-03T10:00:00+01:00", "2027-03-03T12:30:00+01:00"}}) {
      const CliRun r = Labshare({"--token=" + liwei, "booking", "CreateBooking", "--booking_id=" + id,
                              "--request_id=" + id, "--booking.instrument=instruments/" + instrument,
                              "--booking.mode=ON_SITE",
                              R"(--booking.reserved_interval={"start_time":")" + start + R"(","end_time":")" + end +
                                  R"("})"});
      ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    }
  }

  static std::string* dir_;
  static TestTokens* tokens_;
  static std::string* admin_;
  static testing::RedisServer* redis_;
  static ChildProcess* inventory_;
  static ChildProcess* booking_;
};

std::string* CliTest::dir_ = nullptr;
TestTokens* CliTest::tokens_ = nullptr;
std::string* CliTest::admin_ = nullptr;
testing::RedisServer* CliTest::redis_ = nullptr;
ChildProcess* CliTest::inventory_ = nullptr;
ChildProcess* CliTest::booking_ = nullptr;

// A table of people: Chinese and fullwidth names take two columns a
// character, a combining mark none; times in the caller's zone, named in
// the header.
TEST_F(CliTest, UsersTableAlignsWideTextAndShowsTimesInTheCallersZone) {
  const CliRun r = Admin({"inventory", "ListUsers", "--organization=organizations/nanocraft"}, "America/New_York");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "NAME             DISPLAY_NAME         ORGANIZATION             CREATE_TIME (America/New_York)  "
            "UPDATE_TIME (America/New_York)  ETAG\n"
            "users/chen-jing  陈静 (ＢｉｏＴｅｋ)  organizations/nanocraft  2027-02-28T20:00:00-05:00       "
            "2027-02-28T20:00:00-05:00       1\n"
            "users/li-wei     李伟                 organizations/nanocraft  2027-02-28T20:00:00-05:00       "
            "2027-02-28T20:00:00-05:00       1\n"
            "users/zoe        Zoe\xCC\x88 Smith            organizations/nanocraft  2027-02-28T20:00:00-05:00       "
            "2027-02-28T20:00:00-05:00       1\n"
            "(3 rows)\n");
  EXPECT_EQ(r.err, "");
}

// Bookings: each row in its instrument's facility's zone, whatever $TZ says.
TEST_F(CliTest, BookingsTableShowsTimesInTheFacilitysZone) {
  CliRun r = Admin({"booking", "ListBookings", "--instrument=instruments/sem-1"}, "America/New_York");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "NAME           INSTRUMENT         INSTRUMENT_OWNER   MODE     USER          PAYER_ORGANIZATION       "
            "RESERVED_INTERVAL (Asia/Shanghai)                       BLOCKED_INTERVAL (Asia/Shanghai)                        "
            "STATE      PAYER_CLASS\n"
            "bookings/bk01  instruments/sem-1  organizations/zju  ON_SITE  users/li-wei  organizations/nanocraft  "
            "2027-03-02T09:00:00+08:00 .. 2027-03-02T11:00:00+08:00  2027-03-02T09:00:00+08:00 .. 2027-03-02T11:00:00+08:00  "
            "CONFIRMED  MEMBER\n"
            "(1 row)\n");
  // Two facilities in two zones: a ZONE column names each row's.
  r = Admin({"booking", "ListBookings", "--user=users/li-wei"}, "America/New_York");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> lines = absl::StrSplit(r.out, '\n');
  ASSERT_GE(lines.size(), 3u) << r.out;
  EXPECT_TRUE(absl::EndsWith(lines[0], "STATE      PAYER_CLASS  ZONE")) << lines[0];
  EXPECT_NE(lines[1].find("2027-03-02T09:00:00+08:00 .. 2027-03-02T11:00:00+08:00"), std::string::npos) << lines[1];
  EXPECT_TRUE(absl::EndsWith(lines[1], "Asia/Shanghai")) << lines[1];
  EXPECT_NE(lines[2].find("2027-03-03T10:00:00+01:00 .. 2027-03-03T12:30:00+01:00"), std::string::npos) << lines[2];
  EXPECT_TRUE(absl::EndsWith(lines[2], "Europe/Berlin")) << lines[2];
}

// One resource as "field: value" lines: the caller's zone.
TEST_F(CliTest, SingleAnswerShowsTimesInTheCallersZone) {
  CliRun r = Admin({"booking", "GetBooking", "bookings/bk01"}, "Europe/Berlin");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\nreserved_interval: 2027-03-02T02:00:00+01:00 .. 2027-03-02T04:00:00+01:00\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("\ncreate_time: 2027-03-01T02:00:00+01:00\n"), std::string::npos) << r.out;
  r = Admin({"inventory", "GetFacility", "facilities/berlin"}, "Asia/Tokyo");
  EXPECT_NE(r.out.find("\ntime_zone: Europe/Berlin\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\ncreate_time: 2027-03-01T10:00:00+09:00\n"), std::string::npos) << r.out;
}

// Facility.time_zone: the consortium's zone by default, updatable by mask.
TEST_F(CliTest, FacilityTimeZoneDefaultsToTheConsortiumsAndCanBeUpdated) {
  CliRun r = Admin({"inventory", "CreateFacility", "--facility_id=hz", "--facility.display_name=杭州",
                    "--facility.owner_organization=organizations/zju"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\ntime_zone: Asia/Shanghai\n"), std::string::npos) << r.out;
  r = Admin({"inventory", "UpdateFacility", "--facility.name=facilities/hz", "--facility.time_zone=Europe/Paris",
             "--update_mask=time_zone"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\ntime_zone: Europe/Paris\n"), std::string::npos) << r.out;
  r = Admin({"inventory", "UpdateFacility", "--facility.name=facilities/hz", "--facility.time_zone=Paris",
             "--update_mask=time_zone"});
  EXPECT_EQ(r.exit_code, 13);
  EXPECT_EQ(r.err, "error: INVALID_ARGUMENT INVALID_FIELD: facility.time_zone: unknown time zone \"Paris\"; use an "
                   "IANA name such as Asia/Shanghai\n");
}

// "--validate_only" alone is "--validate_only=true": checked, nothing made.
TEST_F(CliTest, BooleanFlagsNeedNoValue) {
  const std::string interval = R"(--booking.reserved_interval={"start_time":"2027-03-05T09:00:00+08:00",)"
                               R"("end_time":"2027-03-05T10:00:00+08:00"})";
  CliRun r = Admin({"booking", "CreateBooking", "--validate_only", "--booking_id=dry-run", "--request_id=dry",
                 "--booking.instrument=instruments/sem-1", "--booking.mode=ON_SITE", "--booking.user=users/li-wei",
                 interval});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = Admin({"booking", "GetBooking", "bookings/dry-run"});
  EXPECT_EQ(r.exit_code, 15) << r.out << r.err;  // NOT_FOUND: validate only
  // A boolean flag last, and the client's own --json anywhere.
  r = Admin({"--json", "booking", "CreateBooking", "--booking_id=dry-run", "--request_id=dry",
             "--booking.instrument=instruments/sem-1", "--booking.mode=ON_SITE", "--booking.user=users/li-wei",
             interval, "--validate_only"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.rfind("{", 0), 0u) << r.out;
  r = Admin({"booking", "GetBooking", "bookings/dry-run", "--json=false"});
  EXPECT_EQ(r.exit_code, 15) << r.out << r.err;
  EXPECT_EQ(r.err.rfind("error: NOT_FOUND BOOKING_NOT_FOUND: ", 0), 0u) << r.err;
  // A field that is not boolean still needs its value.
  r = Admin({"booking", "GetBooking", "--name"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "error: --name needs a value\n");
}

google::protobuf::Struct ParseJson(const std::string& text) {
  google::protobuf::Struct s;
  auto status = google::protobuf::util::JsonStringToMessage(text, &s);
  EXPECT_TRUE(status.ok()) << status << ": " << text;
  return s;
}

TEST_F(CliTest, ErrorsUnderJsonAreOneJsonObject) {
  CliRun r = Admin({"--json", "booking", "GetBooking", "bookings/nope"});
  EXPECT_EQ(r.exit_code, 15);  // 10 + NOT_FOUND, as without --json
  EXPECT_EQ(r.out, "");
  ASSERT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  google::protobuf::Struct e = ParseJson(r.err);
  EXPECT_EQ(e.fields().at("code").string_value(), "NOT_FOUND");
  EXPECT_EQ(e.fields().at("code_number").number_value(), 5);
  EXPECT_EQ(e.fields().at("reason").string_value(), "BOOKING_NOT_FOUND");
  EXPECT_EQ(e.fields().at("domain").string_value(), "booking.labshare");
  EXPECT_EQ(e.fields().at("exit_code").number_value(), 15);
  EXPECT_TRUE(e.fields().at("metadata").has_struct_value());
  EXPECT_EQ(e.fields().at("field_violations").list_value().values_size(), 0);
  EXPECT_FALSE(e.fields().at("message").string_value().empty());

  // Field violations: an unknown facility time zone.
  r = Admin({"inventory", "CreateFacility", "--facility_id=mars", "--facility.display_name=Mars",
             "--facility.owner_organization=organizations/zju", "--facility.time_zone=Mars/Olympus", "--json"});
  EXPECT_EQ(r.exit_code, 13);
  EXPECT_EQ(r.out, "");
  e = ParseJson(r.err);
  EXPECT_EQ(e.fields().at("code").string_value(), "INVALID_ARGUMENT");
  EXPECT_EQ(e.fields().at("reason").string_value(), "INVALID_FIELD");
  const auto& violations = e.fields().at("field_violations").list_value();
  ASSERT_EQ(violations.values_size(), 1) << r.err;
  EXPECT_EQ(violations.values(0).struct_value().fields().at("field").string_value(), "facility.time_zone");

  // The client's own errors too.
  r = Admin({"--json", "booking", "NoSuchMethod"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.out, "");
  e = ParseJson(r.err);
  EXPECT_EQ(e.fields().at("code").string_value(), "USAGE");
  EXPECT_EQ(e.fields().at("exit_code").number_value(), 2);
}

// `labshare health` is readiness: SERVING only while the server's Redis
// answers. `labshare health --liveness` asks whether the process answers at
// all: a Redis outage fails the first and not the second (a liveness probe
// must not restart pods for it); only a process that does not answer fails
// it. Its own Redis and inventory, so the suite's keep running.
TEST_F(CliTest, HealthLivenessFollowsTheProcessAndReadinessFollowsRedis) {
  auto redis = testing::RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  auto inventory = ChildProcess::Start(
      "inventory-health", testing::LabshareBinDir() + "/labshare-inventory",
      testing::WithTls({"--listen=127.0.0.1:0", "--redis=" + (*redis)->address()}, "inventory"), *dir_);
  ASSERT_TRUE(inventory.ok()) << inventory.status();
  const std::string address = (*inventory)->address();
  // Readiness starts NOT_SERVING until the first Redis check: wait for it.
  CliRun ready;
  for (int i = 0; i < 300; ++i) {
    ready = Labshare({"health", address});
    if (ready.exit_code == 0) break;
    usleep(100 * 1000);
  }
  EXPECT_EQ(ready.exit_code, 0) << ready.out << ready.err;
  EXPECT_EQ(ready.out, "SERVING\n");
  CliRun live = Labshare({"health", "--liveness", address});
  EXPECT_EQ(live.exit_code, 0) << live.err;
  EXPECT_EQ(live.out, "ALIVE (SERVING)\n");

  // Redis goes away: not ready, still alive.
  redis->reset();
  for (int i = 0; i < 300; ++i) {
    ready = Labshare({"health", address});
    if (ready.exit_code != 0) break;
    usleep(100 * 1000);
  }
  EXPECT_EQ(ready.exit_code, 1);
  EXPECT_EQ(ready.out, "NOT_SERVING\n");
  live = Labshare({"--liveness", "health", address});  // the flag before the command works too
  EXPECT_EQ(live.exit_code, 0) << live.err;
  EXPECT_EQ(live.out, "ALIVE (SERVING)\n");

  // The process is gone: dead.
  inventory->reset();
  live = Labshare({"health", "--liveness", address});
  EXPECT_EQ(live.exit_code, 1);
  EXPECT_TRUE(absl::StartsWith(live.out, "UNREACHABLE: ")) << live.out;
  ready = Labshare({"health", address});
  EXPECT_EQ(ready.exit_code, 1);
  EXPECT_TRUE(absl::StartsWith(ready.out, "UNREACHABLE: ")) << ready.out;

  // --liveness belongs to health only.
  const CliRun misuse = Admin({"--liveness", "inventory", "ListInstruments"});
  EXPECT_EQ(misuse.exit_code, 2);
  EXPECT_EQ(misuse.err, "error: --liveness goes with labshare health\n");
}

// The token, source by source (README): the flags (--token, then
// --token_file), then LABSHARE_TOKEN (or LABSHARE_TOKEN_FILE), then the
// config file (token, then token_file). A token file of an earlier source
// wins over a token of a later one.
TEST_F(CliTest, TokenSourcesAreTriedInTurnEachWithItsFile) {
  const std::string good = *dir_ + "/good.token", bad = *dir_ + "/bad.token";
  std::ofstream(good) << *admin_ << "\n";
  std::ofstream(bad) << "not-a-token\n";
  const std::string config = *dir_ + "/token.config";
  std::ofstream(config) << "token = not-a-token\n";
  const std::string ca = "LABSHARE_TLS_CA=" + testing::TestPki::Shared().ca_file();
  const std::vector<std::string> get = {"booking", "GetBooking", "bookings/bk01"};
  // The environment's token file before the config file's token.
  CliRun r = LabshareEnv(get, {ca, "LABSHARE_CONFIG=" + config, "LABSHARE_TOKEN_FILE=" + good});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // The flag's token file before the environment's token.
  std::vector<std::string> args = {"--token_file=" + good};
  args.insert(args.end(), get.begin(), get.end());
  r = LabshareEnv(args, {ca, "LABSHARE_TOKEN=not-a-token"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // Within a source the token before its file.
  args = {"--token=" + *admin_, "--token_file=" + bad};
  args.insert(args.end(), get.begin(), get.end());
  r = LabshareEnv(args, {ca});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  r = LabshareEnv(get, {ca, "LABSHARE_TOKEN=" + *admin_, "LABSHARE_TOKEN_FILE=" + bad});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // And the config file's own pair.
  std::ofstream(config) << "token_file = " << bad << "\ntoken = " << *admin_ << "\n";
  r = LabshareEnv(get, {ca, "LABSHARE_CONFIG=" + config});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // A later source is used when the earlier ones have nothing.
  std::ofstream(config) << "token_file = " << good << "\n";
  r = LabshareEnv(get, {ca, "LABSHARE_CONFIG=" + config});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  std::ofstream(config) << "token_file = " << bad << "\n";
  r = LabshareEnv(get, {ca, "LABSHARE_CONFIG=" + config});
  EXPECT_EQ(r.exit_code, 26) << r.out << r.err;
}

// Money typed in major units: "500 CNY" is 500.00 CNY (it was 5.00: a bare
// number was minor units), three decimals of CNY refused.
TEST_F(CliTest, MoneyIsTypedInMajorUnits) {
  CliRun r = Admin({"inventory", "CreateRate", "--parent=instruments/sem-1", "--rate.mode=ON_SITE",
                    "--rate.payer_class=NON_MEMBER", "--rate.unit=PER_HOUR", "--rate.price=500 CNY", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const google::protobuf::Struct rate = ParseJson(r.out);
  EXPECT_EQ(rate.fields().at("price").struct_value().fields().at("amount_minor").string_value(), "50000") << r.out;
  r = Admin({"inventory", "GetRate", rate.fields().at("name").string_value()});
  EXPECT_NE(r.out.find("\nprice: 500.00 CNY\n"), std::string::npos) << r.out << r.err;
  r = Admin({"inventory", "CreateRate", "--parent=instruments/sem-1", "--rate.mode=ON_SITE",
             "--rate.payer_class=NON_MEMBER", "--rate.unit=PER_HOUR", "--rate.price=500.001 CNY"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "error: --price: CNY has 2 decimals, not 3\n");
}

// A signed-in person whose access token is due for renewal, at the suite's
// inventory (TLS): credentials.json as `labshare login` writes it.
void WriteDueCredentials(const std::string& xdg, const std::string& inventory) {
  std::filesystem::create_directories(xdg + "/labshare");
  std::filesystem::permissions(xdg + "/labshare", std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace);
  std::ofstream(xdg + "/labshare/credentials.json")
      << R"({"inventory":")" << inventory << R"(","issuer":"https://idp.example","access_token":"old",)"
      << R"("expire_time":1000,"refresh_token":"not-a-refresh-token","refresh_expire_time":4102444800,)"
      << R"("user":"users/li-wei","display_name":"","organization":"","roles":["LAB_USER"]})";
}

// login, logout, whoami and token take the TLS flags like every other
// command (README: `labshare --tls_ca=ca.crt ...`), and the automatic
// renewal of the stored token and the revocation at logout go over TLS with
// them: it was "unknown flag --tls_ca" (exit 2), and a renewal with the CA
// only on the command line went out in plaintext (UNAVAILABLE, exit 24).
TEST_F(CliTest, AccountCommandsTakeTheTlsFlags) {
  const std::string ca = testing::TestPki::Shared().ca_file();
  const std::string xdg = *dir_ + "/xdg-tls";
  const std::string home = "XDG_CONFIG_HOME=" + xdg;
  CliRun r = LabshareEnv({"--tls_ca=" + ca, "whoami"}, {home});
  EXPECT_EQ(r.exit_code, 26) << r.err;  // nobody signed in: no longer a usage error
  EXPECT_EQ(r.err, "error: not signed in; run labshare login\n");
  r = LabshareEnv({"--tls_ca=" + ca, "--tls_cert=" + ca, "--tls_key=" + ca, "logout"}, {home});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Not signed in.\n");
  r = LabshareEnv({"--token=x", "whoami"}, {home});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "error: labshare whoami: --token does not apply: the account commands use the sign-in stored by "
                   "labshare login\n");

  // The renewal reaches inventory over TLS, which answers (this one has no
  // sign-in configured: FAILED_PRECONDITION SIGN_IN_NOT_CONFIGURED), where
  // plaintext to its TLS port got no answer (UNAVAILABLE, exit 24).
  auto refused_by_inventory = [](const CliRun& run) {
    return run.exit_code == 19 && absl::StartsWith(run.err, "error: FAILED_PRECONDITION SIGN_IN_NOT_CONFIGURED: ");
  };
  WriteDueCredentials(xdg, inventory_->address());
  r = LabshareEnv({"--tls_ca=" + ca, "whoami"}, {home});
  EXPECT_TRUE(refused_by_inventory(r)) << r.exit_code << " " << r.err;
  WriteDueCredentials(xdg, inventory_->address());
  r = LabshareEnv({"--tls_ca=" + ca, "token"}, {home});
  EXPECT_TRUE(refused_by_inventory(r)) << r.exit_code << " " << r.err;
  // A service call without a token renews the stored one with the call's TLS flags.
  WriteDueCredentials(xdg, inventory_->address());
  r = LabshareEnv({"--tls_ca=" + ca, "booking", "GetBooking", "bookings/bk01"}, {home});
  EXPECT_TRUE(refused_by_inventory(r)) << r.exit_code << " " << r.err;
  // The config file's tls_ca as well.
  const std::string config = *dir_ + "/tls.config";
  std::ofstream(config) << "tls_ca = " << ca << "\n";
  WriteDueCredentials(xdg, inventory_->address());
  r = LabshareEnv({"whoami"}, {home, "LABSHARE_CONFIG=" + config});
  EXPECT_TRUE(refused_by_inventory(r)) << r.exit_code << " " << r.err;
  // logout revokes over TLS: the refresh token is unknown there, and the
  // stored tokens are gone either way.
  WriteDueCredentials(xdg, inventory_->address());
  r = LabshareEnv({"--tls_ca=" + ca, "logout"}, {home});
  EXPECT_NE(r.exit_code, 24) << r.out << r.err;
  EXPECT_EQ(r.err.find("UNAVAILABLE"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(xdg + "/labshare/credentials.json"));
}

// Under --json the account commands' errors are one JSON object on one
// line on stderr, as every other command's (they printed "error: ...").
TEST_F(CliTest, AccountCommandErrorsUnderJsonAreOneJsonObject) {
  const std::string home = "XDG_CONFIG_HOME=" + *dir_ + "/xdg-json";
  CliRun r = LabshareEnv({"whoami", "--json"}, {home});
  EXPECT_EQ(r.exit_code, 26);
  EXPECT_EQ(r.out, "");
  ASSERT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  google::protobuf::Struct e = ParseJson(r.err);
  EXPECT_EQ(e.fields().at("code").string_value(), "UNAUTHENTICATED");
  EXPECT_EQ(e.fields().at("exit_code").number_value(), 26);
  EXPECT_EQ(e.fields().at("message").string_value(), "not signed in; run labshare login");

  r = LabshareEnv({"--json", "login"}, {home});  // no issuer anywhere
  EXPECT_EQ(r.exit_code, 2);
  ASSERT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  e = ParseJson(r.err);
  EXPECT_EQ(e.fields().at("code").string_value(), "USAGE");
  EXPECT_EQ(e.fields().at("exit_code").number_value(), 2);

  r = LabshareEnv({"--json", "token", "--no_such_flag=1"}, {home});
  EXPECT_EQ(r.exit_code, 2);
  e = ParseJson(r.err);
  EXPECT_EQ(e.fields().at("message").string_value(), "labshare token: unknown flag --no_such_flag");

  // A refused renewal: the service's error as JSON.
  const std::string xdg = *dir_ + "/xdg-json";
  WriteDueCredentials(xdg, inventory_->address());
  r = LabshareEnv({"--json", "whoami"}, {home, "LABSHARE_TLS_CA=" + testing::TestPki::Shared().ca_file()});
  EXPECT_EQ(r.exit_code, 19) << r.err;
  ASSERT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  e = ParseJson(r.err);
  EXPECT_EQ(e.fields().at("code").string_value(), "FAILED_PRECONDITION");
  EXPECT_EQ(e.fields().at("reason").string_value(), "SIGN_IN_NOT_CONFIGURED");
  EXPECT_EQ(e.fields().at("exit_code").number_value(), 19);
  // The same through a service call that needs the stored token.
  WriteDueCredentials(xdg, inventory_->address());
  r = LabshareEnv({"--json", "booking", "GetBooking", "bookings/bk01"},
                  {home, "LABSHARE_TLS_CA=" + testing::TestPki::Shared().ca_file()});
  EXPECT_EQ(r.exit_code, 19) << r.err;
  EXPECT_EQ(r.out, "");
  ASSERT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(ParseJson(r.err).fields().at("reason").string_value(), "SIGN_IN_NOT_CONFIGURED");
}

}  // namespace
}  // namespace labshare
