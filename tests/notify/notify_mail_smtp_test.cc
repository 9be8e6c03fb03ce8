// SMTP delivery (SendSmtp, libcurl) against the test SMTP server
// (tests/notify/smtp_sink.py on Debian's python3-aiosmtpd): STARTTLS with
// the relay's certificate checked against a CA, AUTH, and the outcomes the
// sender acts on (sent, temporary, permanent); never in clear when STARTTLS
// is required.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/notify/notify_mail_smtp.h"
#include "tests/booking/booking_test_cluster.h"
#include "tests/support/test_pki.h"

namespace labshare::notify {
namespace {

using labshare::testing::ChildProcess;
using labshare::testing::TestPki;

class SmtpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/labshare-smtp-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ + "/pw") << "s3cret-relay\n";
  }
  void TearDown() override {
    if (HasFailure()) {
      for (auto& s : sinks_) std::cerr << s->StderrTail(3000) << "\n";
    }
    sinks_.clear();
    std::filesystem::remove_all(dir_);
  }
  // A sink storing into dir_/<name>; "" when it failed to start.
  std::string StartSink(const std::string& name, bool tls, bool auth) {
    std::vector<std::string> args = {"--dir=" + dir_ + "/" + name};
    if (tls) {
      const auto& cert = TestPki::Shared().Service("notify");
      args.push_back("--tls_cert=" + cert.cert_file);
      args.push_back("--tls_key=" + cert.key_file);
    }
    if (auth) {
      args.push_back("--auth_user=labshare");
      args.push_back("--auth_password_file=" + dir_ + "/pw");
    }
    auto s = ChildProcess::Start("smtp-" + name, std::string(LABSHARE_SOURCE_DIR) + "/tests/notify/smtp_sink.py",
                                 args, dir_);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return "";
    sinks_.push_back(*std::move(s));
    return sinks_.back()->address();
  }
  int Count(const std::string& name) {
    int n = 0;
    if (!std::filesystem::exists(dir_ + "/" + name)) return 0;
    for (const auto& e : std::filesystem::directory_iterator(dir_ + "/" + name)) {
      if (absl::EndsWith(e.path().string(), ".eml") && e.path().filename().string()[0] != '.') ++n;
    }
    return n;
  }
  OutgoingMail Mail() {
    OutgoingMail m;
    m.message_id = "m1";
    m.to_address = "ana@lab.test";
    m.to_name = "Ana";
    m.subject = "预约已确认";
    m.text = "text";
    m.html = "<p>html</p>";
    m.kind = "BOOKING_CONFIRMED";
    m.date = absl::FromUnixSeconds(1803859200);
    return m;
  }
  std::string dir_;
  std::vector<std::unique_ptr<ChildProcess>> sinks_;
};

TEST_F(SmtpTest, StartTlsAndAuth) {
  const std::string address = StartSink("secure", true, true);
  ASSERT_FALSE(address.empty());
  SmtpOptions o;
  o.server = address;
  o.starttls = true;
  o.ca_file = TestPki::Shared().ca_file();
  o.user = "labshare";
  o.password = "s3cret-relay";
  o.from = "noreply@labshare.test";
  const SmtpResult sent = SendSmtp(o, Mail());
  EXPECT_EQ(sent.outcome, SmtpResult::kSent) << sent.error;
  EXPECT_EQ(Count("secure"), 1);

  // A wrong password: not sent (retried, then a dead letter).
  o.password = "wrong";
  EXPECT_NE(SendSmtp(o, Mail()).outcome, SmtpResult::kSent);
  // No STARTTLS where the relay requires it: not sent (530).
  o.password = "s3cret-relay";
  o.starttls = false;
  EXPECT_NE(SendSmtp(o, Mail()).outcome, SmtpResult::kSent);
  // A relay whose certificate the CA did not sign: not sent.
  o.starttls = true;
  o.ca_file = "/etc/ssl/certs/ca-certificates.crt";
  EXPECT_NE(SendSmtp(o, Mail()).outcome, SmtpResult::kSent);
  EXPECT_EQ(Count("secure"), 1);
}

TEST_F(SmtpTest, StartTlsRequiredButNotOfferedSendsNothing) {
  const std::string address = StartSink("plain", false, false);
  ASSERT_FALSE(address.empty());
  SmtpOptions o;
  o.server = address;
  o.from = "noreply@labshare.test";
  o.starttls = true;
  o.ca_file = TestPki::Shared().ca_file();
  EXPECT_NE(SendSmtp(o, Mail()).outcome, SmtpResult::kSent);
  EXPECT_EQ(Count("plain"), 0);
  o.starttls = false;  // a loopback development sink
  EXPECT_EQ(SendSmtp(o, Mail()).outcome, SmtpResult::kSent);
  EXPECT_EQ(Count("plain"), 1);
}

TEST_F(SmtpTest, TemporaryAndPermanentFailures) {
  const std::string address = StartSink("codes", false, false);
  ASSERT_FALSE(address.empty());
  SmtpOptions o;
  o.server = address;
  o.from = "noreply@labshare.test";
  OutgoingMail m = Mail();
  m.to_address = "tempfail-x@lab.test";
  SmtpResult r = SendSmtp(o, m);
  EXPECT_EQ(r.outcome, SmtpResult::kTemporary);
  EXPECT_TRUE(absl::StartsWith(r.error, "451")) << r.error;
  m.to_address = "reject-x@lab.test";
  r = SendSmtp(o, m);
  EXPECT_EQ(r.outcome, SmtpResult::kPermanent);
  EXPECT_TRUE(absl::StartsWith(r.error, "550")) << r.error;
  // Nobody listening: temporary.
  o.server = "127.0.0.1:1";
  EXPECT_EQ(SendSmtp(o, Mail()).outcome, SmtpResult::kTemporary);
  EXPECT_EQ(Count("codes"), 0);
}

TEST_F(SmtpTest, AnAddressThatCouldInjectIsRefusedForGoodAndNeverSent) {
  const std::string address = StartSink("inject", false, false);
  ASSERT_FALSE(address.empty());
  SmtpOptions o;
  o.server = address;
  o.from = "noreply@labshare.test";
  OutgoingMail m = Mail();
  m.to_address = "ana@lab.test>\r\nBcc: <all@lab.test";
  SmtpResult r = SendSmtp(o, m);
  EXPECT_EQ(r.outcome, SmtpResult::kPermanent);
  EXPECT_EQ(r.error, "invalid recipient address (contains '<' or '>'); not sent");
  m.to_address = "ana@lab.test,bo@lab.test@x";
  r = SendSmtp(o, m);
  EXPECT_EQ(r.outcome, SmtpResult::kPermanent);
  EXPECT_EQ(r.error, "invalid recipient address (must contain exactly one '@'); not sent");
  EXPECT_EQ(Count("inject"), 0);
  EXPECT_EQ(SendSmtp(o, Mail()).outcome, SmtpResult::kSent);
  EXPECT_EQ(Count("inject"), 1);
}

}  // namespace
}  // namespace labshare::notify
