// The labshare client as people use it, black box: the real `labshare`
// binary against a real redis-server, labshare-inventory and
// labshare-booking (processes on free loopback ports, in demo time from a
// clock file so that create times are fixed), checking its exact output:
// tables with Chinese names aligned by display width, times in the caller's
// zone ($TZ) and, in tables of bookings, in the facility's zone; boolean
// flags without a value; errors under --json as one JSON object; many calls
// in one run (labshare batch) and every page of a list (--all_pages).
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
  static CliRun LabshareEnv(const std::vector<std::string>& args, const std::vector<std::string>& env,
                            const std::string& stdin_file = "/dev/null") {
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
    const int status =
        std::system((absl::StrJoin(quoted, " ") + " <" + ShellQuote(stdin_file) + " >" + out + " 2>" + err).c_str());
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

  // `labshare --token=ADMIN args...` reading `input` on stdin.
  static CliRun AdminWithInput(std::vector<std::string> args, const std::string& input) {
    const std::string path = *dir_ + "/stdin";
    std::ofstream(path, std::ios::binary | std::ios::trunc) << input;
    args.insert(args.begin(), "--token=" + *admin_);
    return LabshareEnv(args, {"LABSHARE_TLS_CA=" + testing::TestPki::Shared().ca_file()}, path);
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

// The names of the users in each page of `--json --all_pages` output (one
// JSON object a page, one after the other), and whether each page has a
// next_page_token.
std::vector<std::pair<std::vector<std::string>, bool>> UserPages(const std::string& text) {
  std::vector<std::pair<std::vector<std::string>, bool>> pages;
  // Each page ends with a "}" line.
  for (absl::string_view page : absl::StrSplit(text, "\n}\n", absl::SkipEmpty())) {
    const google::protobuf::Struct s = ParseJson(absl::StrCat(page, "\n}\n"));
    std::vector<std::string> names;
    for (const auto& u : s.fields().at("users").list_value().values()) {
      names.push_back(u.struct_value().fields().at("name").string_value());
    }
    pages.emplace_back(names, s.fields().count("next_page_token") > 0);
  }
  return pages;
}

// --all_pages follows next_page_token: every page, in turn, the same as
// asking for each page with --page_token by hand; --max_pages stops a list
// longer than that with exit 3 (and, with --output, writes nothing).
TEST_F(CliTest, AllPagesFollowsEveryPage) {
  const std::vector<std::string> list = {"--json", "inventory", "ListUsers", "--organization=organizations/nanocraft",
                                         "--page_size=1"};
  std::vector<std::string> args = list;
  args.push_back("--all_pages");
  const CliRun all = Admin(args);
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_EQ(all.err, "");
  using Pages = std::vector<std::pair<std::vector<std::string>, bool>>;
  EXPECT_EQ(UserPages(all.out), (Pages{{{"users/chen-jing"}, true}, {{"users/li-wei"}, true}, {{"users/zoe"}, false}}))
      << all.out;
  // By hand: the same pages, byte for byte.
  std::string by_hand, token;
  for (int page = 0; page < 3; ++page) {
    args = list;
    if (!token.empty()) args.push_back("--page_token=" + token);
    const CliRun r = Admin(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    by_hand += r.out;
    const google::protobuf::Struct s = ParseJson(r.out);
    token = s.fields().count("next_page_token") ? s.fields().at("next_page_token").string_value() : "";
  }
  EXPECT_EQ(token, "");
  EXPECT_EQ(all.out, by_hand);
  // Without --all_pages: the first page only.
  const CliRun first = Admin(list);
  EXPECT_EQ(UserPages(first.out), (Pages{{{"users/chen-jing"}, true}})) << first.out;
  // A method without pages: one answer.
  const CliRun one = Admin({"--json", "--all_pages", "booking", "GetBooking", "bookings/bk01"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.out, Admin({"--json", "booking", "GetBooking", "bookings/bk01"}).out);

  // --max_pages=3 is enough; 2 is not: exit 3, nothing in --output's file.
  args = list;
  args.insert(args.end(), {"--all_pages", "--max_pages=3"});
  EXPECT_EQ(Admin(args).out, all.out);
  const std::string file = *dir_ + "/two-pages.json";
  args = list;
  args.insert(args.end(), {"--all_pages", "--max_pages=2", "--output=" + file});
  const CliRun capped = Admin(args);
  EXPECT_EQ(capped.exit_code, 3);
  EXPECT_EQ(capped.err, "{\"code\":\"LOCAL\",\"reason\":\"\",\"domain\":\"labshare-cli\",\"message\":\"more than 2 pages "
                        "(--max_pages=2)\",\"metadata\":{},\"field_violations\":[],\"exit_code\":3}\n");
  EXPECT_EQ(capped.out, "");
  EXPECT_FALSE(std::filesystem::exists(file));
  for (const auto& entry : std::filesystem::directory_iterator(*dir_)) {
    EXPECT_FALSE(absl::StrContains(entry.path().filename().string(), "two-pages")) << entry.path();
  }
  args = {"inventory", "ListUsers", "--max_pages=0"};
  const CliRun zero = Admin(args);
  EXPECT_EQ(zero.exit_code, 2);
  EXPECT_EQ(zero.err, "error: --max_pages: a number from 1\n");
}

// labshare batch: one call a line, each answer where its --output says,
// exactly as the same call alone prints it; the batch's flags (--json,
// --all_pages, the token) hold for every line; comments, blank lines and
// quoted words; stdin as well as a file.
TEST_F(CliTest, BatchRunsEveryLineAsItsOwnCallWould) {
  const std::string d = *dir_ + "/batch-ok";
  std::filesystem::create_directories(d);
  const std::string batch = d + "/calls";
  std::ofstream(batch) << "# the nanocraft people, every page\n"
                       << "inventory ListUsers --organization=organizations/nanocraft --page_size=1 --output=" << d
                       << "/users.json\n"
                       << "\n"
                       << "  booking GetBooking bookings/bk01 --json=false --output='" << d << "/bk01 text'\n"
                       << "inventory GetFacility \"facilities/berlin\" --output=" << d << "/berlin.json\n"
                       << "usage ListIdleInstruments --output=" << d << "/never.json\n";
  // (nothing answers at the usage address: the last line fails, after the
  // others wrote theirs.)
  CliRun r = Admin({"--json", "--all_pages", "--usage=127.0.0.1:1", "batch", batch});
  EXPECT_EQ(r.exit_code, 24) << r.err;  // 10 + UNAVAILABLE
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(ReadAll(d + "/users.json"),
            Admin({"--json", "--all_pages", "inventory", "ListUsers", "--organization=organizations/nanocraft",
                   "--page_size=1"})
                .out);
  EXPECT_EQ(UserPages(ReadAll(d + "/users.json")).size(), 3u);
  EXPECT_EQ(ReadAll(d + "/bk01 text"), Admin({"booking", "GetBooking", "bookings/bk01"}).out);
  EXPECT_NE(ReadAll(d + "/bk01 text").find("\nreserved_interval: "), std::string::npos);
  EXPECT_EQ(ReadAll(d + "/berlin.json"), Admin({"--json", "inventory", "GetFacility", "facilities/berlin"}).out);
  EXPECT_FALSE(std::filesystem::exists(d + "/never.json"));

  // Without the failing line: exit 0, nothing on stdout or stderr; from stdin.
  std::ofstream(batch) << "inventory GetFacility facilities/berlin --output=" << d << "/berlin-2.json\n"
                       << "booking GetBooking bookings/bk01 --output=" << d << "/bk01.json\n";
  r = AdminWithInput({"--json", "batch"}, ReadAll(batch));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(ReadAll(d + "/berlin-2.json"), ReadAll(d + "/berlin.json"));
  EXPECT_EQ(ReadAll(d + "/bk01.json"), Admin({"--json", "booking", "GetBooking", "bookings/bk01"}).out);
  // Lines without --output: the answers on stdout, in order.
  r = AdminWithInput({"batch", "-"}, "inventory GetFacility facilities/berlin\nbooking GetBooking bookings/bk01\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, Admin({"inventory", "GetFacility", "facilities/berlin"}).out +
                       Admin({"booking", "GetBooking", "bookings/bk01"}).out);
}

// The first line that fails stops the batch: the exit code is that line's,
// the error names the line (number and text), the lines after it do not run
// and its --output file is not written.
TEST_F(CliTest, BatchStopsAtTheFirstFailingLineAndNamesIt) {
  const std::string d = *dir_ + "/batch-fail";
  std::filesystem::create_directories(d);
  const std::string input = "booking GetBooking bookings/bk01 --output=" + d + "/1\n" +
                            "# a comment\n" +
                            "booking GetBooking bookings/nope --output=" + d + "/3\n" +
                            "booking GetBooking bookings/bk02 --output=" + d + "/4\n";
  CliRun r = AdminWithInput({"batch"}, input);
  EXPECT_EQ(r.exit_code, 15);  // 10 + NOT_FOUND
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(absl::StartsWith(r.err, "error: line 3 (booking GetBooking bookings/nope --output=" + d +
                                          "/3): NOT_FOUND BOOKING_NOT_FOUND: "))
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(std::filesystem::exists(d + "/1"));
  EXPECT_FALSE(std::filesystem::exists(d + "/3"));
  EXPECT_FALSE(std::filesystem::exists(d + "/4"));

  // Under --json: one JSON object naming the line.
  r = AdminWithInput({"--json", "batch"}, input);
  EXPECT_EQ(r.exit_code, 15);
  ASSERT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  google::protobuf::Struct e = ParseJson(r.err);
  EXPECT_EQ(e.fields().at("line").number_value(), 3);
  EXPECT_EQ(e.fields().at("command").string_value(), "booking GetBooking bookings/nope --output=" + d + "/3");
  EXPECT_EQ(e.fields().at("code").string_value(), "NOT_FOUND");
  EXPECT_EQ(e.fields().at("reason").string_value(), "BOOKING_NOT_FOUND");
  EXPECT_EQ(e.fields().at("exit_code").number_value(), 15);

  // The client's own errors on a line: exit 2, the line named.
  r = AdminWithInput({"batch"}, "booking GetBooking bookings/bk01\nbooking NoSuchMethod\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "error: line 2 (booking NoSuchMethod): unknown method \"NoSuchMethod\"; `labshare booking` lists "
                   "them\n");
  r = AdminWithInput({"batch"}, "booking GetBooking bookings/bk01 --token=x\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "error: line 1 (booking GetBooking bookings/bk01 --token=x): --token goes on the batch's command "
                   "line\n");
  r = AdminWithInput({"batch"}, "\nbooking GetBooking 'bookings/bk01\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "error: line 2 (booking GetBooking 'bookings/bk01): the quote (') at column 20 is not closed\n");
  r = AdminWithInput({"batch"}, "health 127.0.0.1:1\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "error: line 1 (health 127.0.0.1:1): a line is a call: <service> <Method> [NAME] "
                   "[--field=value ...] (services: inventory, booking, billing, usage)\n");
  r = AdminWithInput({"batch"}, "booking GetBooking bookings/bk01 --max_pages=x\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "error: line 1 (booking GetBooking bookings/bk01 --max_pages=x): --max_pages: a number from 1\n");
  // The batch file itself.
  r = Admin({"batch", *dir_ + "/no-such-file"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.err, "error: cannot read " + *dir_ + "/no-such-file\n");
  r = Admin({"--output=x", "batch"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "error: --output goes on a line of the batch\n");
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
