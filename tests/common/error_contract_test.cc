// The error contract (common/error_contract.h): the parser of the proto
// comments, the table built into the binaries, the runtime check, and a
// static check that every reason string in services/ and common/ is
// documented somewhere.
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/error.h"
#include "common/error_contract.h"
#include "common/error_contract_parser.h"
#include "common/grpc_status.h"
#include "labshare/inventory/v1/inventory.pb.h"

namespace labshare {
namespace {

namespace fs = std::filesystem;

std::string Read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::pair<std::string, std::string>> Protos() {
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& e : fs::recursive_directory_iterator(fs::path(LABSHARE_SOURCE_DIR) / "proto" / "labshare")) {
    if (e.path().extension() == ".proto") files.emplace_back(e.path().string(), Read(e.path()));
  }
  return files;
}

const ErrorContract& SourceContract() {
  static const ErrorContract* c = new ErrorContract(ParseErrorContract(Protos()));
  return *c;
}

std::set<CodeReason> Spec(absl::string_view s) { return ParseErrorSpec(s); }

TEST(ErrorContractParser, ReadsCodesAndTheReasonsThatStartItems) {
  EXPECT_EQ(Spec("INVALID_ARGUMENT (INVALID_NAME, INVALID_FIELD: reason empty); NOT_FOUND\n"
                 "(BOOKING_NOT_FOUND)."),
            (std::set<CodeReason>{{"INVALID_ARGUMENT", "INVALID_NAME"},
                                  {"INVALID_ARGUMENT", "INVALID_FIELD"},
                                  {"NOT_FOUND", "BOOKING_NOT_FOUND"}}));
}

TEST(ErrorContractParser, WordsInAnExplanationAreNotReasons) {
  EXPECT_EQ(Spec("FAILED_PRECONDITION (ORDER_STATE: the order is not in SAMPLES_RECEIVED, "
                 "OPERATOR_NOT_STAFF; BOOKING_STATE: not PENDING_APPROVAL or CONFIRMED; "
                 "TEMPLATE_COUNT: ONE_THIRD_TWO_THIRDS needs two (e.g. A_B, C_D))"),
            (std::set<CodeReason>{{"FAILED_PRECONDITION", "ORDER_STATE"},
                                  {"FAILED_PRECONDITION", "OPERATOR_NOT_STAFF"},
                                  {"FAILED_PRECONDITION", "BOOKING_STATE"},
                                  {"FAILED_PRECONDITION", "TEMPLATE_COUNT"}}));
}

TEST(ErrorContractParser, AOneWordReasonCountsWithItsExplanation) {
  EXPECT_EQ(Spec("FAILED_PRECONDITION (INVOICE_NOT_ISSUED; OVERPAYMENT: more than the open amount; "
                 "MEMBER; CNY: the currency)"),
            (std::set<CodeReason>{{"FAILED_PRECONDITION", "INVOICE_NOT_ISSUED"},
                                  {"FAILED_PRECONDITION", "OVERPAYMENT"}}));
}

TEST(ErrorContractParser, RecordPaymentDocumentsOverpayment) {
  const ErrorContract& c = SourceContract();
  const auto it = c.methods.find("/labshare.billing.v1.BillingService/RecordPayment");
  ASSERT_NE(it, c.methods.end());
  EXPECT_EQ(it->second.count({"FAILED_PRECONDITION", "OVERPAYMENT"}), 1u);
}

TEST(ErrorContractParser, ACodeWithoutReasonsAnswersItsOwnName) {
  EXPECT_EQ(Spec("OUT_OF_RANGE (SEQUENCE_OUT_OF_RANGE); DEADLINE_EXCEEDED if the range is long."),
            (std::set<CodeReason>{{"OUT_OF_RANGE", "SEQUENCE_OUT_OF_RANGE"},
                                  {"DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"}}));
}

TEST(ErrorContractParser, TheListEndsAtTheFirstSentenceEnd) {
  EXPECT_EQ(Spec("NOT_FOUND (X_NOT_FOUND). Unknown names match nothing, not NOT_FOUND."),
            (std::set<CodeReason>{{"NOT_FOUND", "X_NOT_FOUND"}}));
}

TEST(ErrorContractParser, ReferencesTakeAnotherRpcsErrors) {
  const std::string proto = R"(syntax = "proto3";
// Header. Errors: besides those listed, any method may return UNAVAILABLE
// (OTHER_UNAVAILABLE). More prose.
package p.v1;
service S {
  // Roles: anyone.
  // Errors: INVALID_ARGUMENT (INVALID_FIELD, INVALID_PAGE_TOKEN); NOT_FOUND (A_NOT_FOUND).
  rpc Alpha(AReq) returns (ARes);
  // Errors: INVALID_ARGUMENT (as Alpha; INVALID_UPDATE_MASK); ABORTED (ETAG_MISMATCH).
  rpc Beta(BReq)
      returns (BRes);
  // Roles and errors: as Alpha (without INVALID_PAGE_TOKEN), plus RESOURCE_EXHAUSTED (LIMIT_HIT).
  rpc Gamma(CReq) returns (CRes);
  // No list here.
  rpc Delta(DReq) returns (DRes);
}
)";
  const ErrorContract c = ParseErrorContract({{"s.proto", proto}});
  EXPECT_EQ(c.methods.at("/p.v1.S/Beta"),
            (std::set<CodeReason>{{"INVALID_ARGUMENT", "INVALID_FIELD"},
                                  {"INVALID_ARGUMENT", "INVALID_PAGE_TOKEN"},
                                  {"INVALID_ARGUMENT", "INVALID_UPDATE_MASK"},
                                  {"ABORTED", "ETAG_MISMATCH"}}));
  EXPECT_EQ(c.methods.at("/p.v1.S/Gamma"),
            (std::set<CodeReason>{{"INVALID_ARGUMENT", "INVALID_FIELD"},
                                  {"NOT_FOUND", "A_NOT_FOUND"},
                                  {"RESOURCE_EXHAUSTED", "LIMIT_HIT"}}));
  EXPECT_EQ(c.services.at("p.v1.S"), (std::set<CodeReason>{{"UNAVAILABLE", "OTHER_UNAVAILABLE"}}));
  EXPECT_TRUE(c.Allows("/p.v1.S/Alpha", "UNAVAILABLE", "OTHER_UNAVAILABLE"));
  EXPECT_FALSE(c.Allows("/p.v1.S/Alpha", "ABORTED", "ETAG_MISMATCH"));
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_TRUE(absl::StrContains(c.problems[0], "rpc Delta has no")) << c.problems[0];
}

// ------------------------------------------------------------ the real protos

TEST(ErrorContract, EveryRpcOfEveryServiceDocumentsItsErrors) {
  const ErrorContract& c = SourceContract();
  EXPECT_TRUE(c.problems.empty()) << absl::StrJoin(c.problems, "\n");
  EXPECT_GT(c.methods.size(), 100u);
  for (const char* service : {"labshare.inventory.v1.InventoryService", "labshare.booking.v1.BookingService",
                              "labshare.billing.v1.BillingService", "labshare.usage.v1.UsageService"}) {
    EXPECT_EQ(c.services.count(service), 1u) << service << ": its file header lists no \"Errors:\"";
  }
  EXPECT_TRUE(c.Allows("/labshare.booking.v1.BookingService/GetBooking", "UNAUTHENTICATED", "TOKEN_EXPIRED"));
  EXPECT_TRUE(c.Allows("/labshare.usage.v1.UsageService/QueryUsage", "INTERNAL", "STORAGE_ERROR"));
}

TEST(ErrorContract, TheBuiltInTableIsTheContractOfTheSources) {
  // Generated at build time from the same files: a difference means the
  // table is stale, i.e. the build rule does not follow the protos.
  const ErrorContract& built = DocumentedErrors();
  const ErrorContract& source = SourceContract();
  EXPECT_EQ(built.everywhere, source.everywhere);
  EXPECT_EQ(built.services, source.services);
  EXPECT_EQ(built.methods, source.methods);
}

// The reasons the named issue-12 cases must answer are documented.
TEST(ErrorContract, NamedCasesAreDocumented) {
  const ErrorContract& c = SourceContract();
  const std::string cancel = "/labshare.booking.v1.BookingService/CancelOrder";
  EXPECT_TRUE(c.Allows(cancel, "FAILED_PRECONDITION", "ORDER_NOT_CANCELLABLE"));
  EXPECT_TRUE(c.Allows(cancel, "PERMISSION_DENIED", "ROLE_NOT_ALLOWED"));
  EXPECT_FALSE(c.Allows(cancel, "FAILED_PRECONDITION", "ORDER_STATE"));
}

// CreateBooking answers the first denial of inventory's access rules as its
// reason (DURING_MAINTENANCE as MAINTENANCE_CONFLICT), so every denial code
// it can produce must be in its list. MEMBERSHIP_SUSPENDED is not produced:
// a suspended organisation books as NON_MEMBER.
TEST(ErrorContract, EveryAccessDenialCreateBookingCanAnswerIsDocumented) {
  const ErrorContract& c = SourceContract();
  const auto* denials = labshare::inventory::v1::DenialCode_descriptor();
  for (int i = 0; i < denials->value_count(); ++i) {
    const std::string name = denials->value(i)->name();
    if (name == "DENIAL_CODE_UNSPECIFIED" || name == "MEMBERSHIP_SUSPENDED") continue;
    const std::string reason = name == "DURING_MAINTENANCE" ? "MAINTENANCE_CONFLICT" : name;
    EXPECT_TRUE(c.Allows("/labshare.booking.v1.BookingService/CreateBooking", "FAILED_PRECONDITION", reason))
        << reason;
  }
}

// Literals that look like reasons but are not answered by any RPC.
const std::map<std::string, std::string>& NotAnRpcReason() {
  static const auto* m = new std::map<std::string, std::string>{
      // Enum value names used in messages and comparisons.
      {"CHECKED_IN", "booking state in a message"},
      {"HANDED_OVER", "lease state in a message"},
      {"PENDING_APPROVAL", "booking state in a message"},
      {"QUOTE_ACCEPTED", "order state in a message"},
      {"REPORT_DELIVERED", "order state in a message"},
      {"SAMPLES_RECEIVED", "order state in a message"},
      {"OTHER_ORGANIZATION", "organisation type in a message"},
      {"NOT_SERVING", "health status in a log line"},
      // Environment variables.
      {"LABSHARE_CONFIG", "environment variable"},
      // Process start and the command-line tools: never an RPC answer.
      {"INVALID_REDIS_ADDRESS", "flag parsing at start"},
      {"INVALID_REDIS_CREDENTIALS", "--redis_user / --redis_password_file at start"},
      {"INVALID_AUDIT_KEY", "usage's --audit_signing_key_file at start"},
      {"AUDIT_SIGNING_FAILED", "usage's consumer retries the append"},
      {"LISTEN_FAILED", "server start"},
      {"METRICS_LISTEN_FAILED", "server start"},
      {"PLAINTEXT_REFUSED", "server start and client channels (common/tls.h)"},
      {"TLS_CONFIG_INVALID", "TLS files at start (common/tls.h)"},
      {"SECRET_FILE_NOT_FOUND", "secret loading at start"},
      {"SECRET_FILE_UNREADABLE", "secret loading at start"},
      {"SECRET_FILE_EXPOSED", "secret loading at start"},
      {"SECRET_KEY_INVALID", "notify's --webhook_secret_key_file at start"},
      {"WEBHOOK_SECRET_SEALED", "notify at start and its delivery threads (no key for a sealed secret): logged, never an RPC answer"},
      {"WEBHOOK_SECRET_KEY_MISMATCH", "notify at start (--webhook_secret_key_file not the sealing key)"},
      {"UNKNOWN_ROLE", "labshare-token's --roles"},
      {"INVALID_JWKS", "key set loading at start (--jwks); later refreshes keep the old keys"},
      {"JWKS_UNAVAILABLE", "key set loading at start (--jwks); later refreshes keep the old keys"},
      {"HTTP_UNAVAILABLE", "common/http_client.h: callers turn it into their own answer"},
      {"INVALID_SIGNING_KEY", "key loading at start (--token_signing_key_file) and labshare-token"},
      {"KEY_GENERATION_FAILED", "labshare-token --generate_key"},
      {"INVALID_FLAG", "labshare-inventory's sign-in flags at start"},
      {"XDG_CONFIG_HOME", "environment variable (labshare login's credentials)"},
      // Event consumers and the sweep: statuses that stay inside a process.
      {"NOT_DUE", "the sweep's own skip signal"},
      {"UNDECODABLE_EVENT", "usage's consumer skips such an event"},
      {"CORRUPT_EVENT", "billing's consumer of booking events"},
      {"AUDIT_CONTENTION", "usage's consumer retries the append"},
      {"NOT_IN_PERIOD", "billing's lease period step (consumer)"},
      {"SETTLEMENT_MISMATCH", "billing's lease settlement step (consumer)"},
      // Also ComputeSettlement's (documented there): open amounts past 64 bits.
      {"AMOUNT_OUT_OF_RANGE", "billing's charge arithmetic (consumer)"},
      {"QUOTE_TOTAL_MISMATCH", "billing's charge of an accepted quote (consumer)"},
      {"CLIENT_GONE", "a stream whose client left: nobody receives it"},
      {"STORAGE_FULL", "ErrorInfo metadata \"cause\" of STORAGE_UNAVAILABLE (types.proto), not a reason"},
      {"REPLICA_ACK_TIMEOUT", "ErrorInfo metadata \"cause\" of STORAGE_UNAVAILABLE (types.proto), not a reason"},
      {"EVAL_RO", "a Redis command name (common/redis.cc routing tables)"},
      {"EVALSHA_RO", "a Redis command name (common/redis.cc routing tables)"},
      {"FCALL_RO", "a Redis command name (common/redis.cc routing tables)"},
      {"UNBALANCED_POSITIONS", "PlanTransfers' argument check; ComputeSettlement's positions balance"},
  };
  return *m;
}

std::vector<std::pair<std::string, std::string>> ReasonLiterals() {
  std::vector<std::pair<std::string, std::string>> out;  // (literal, file:line)
  for (const char* dir : {"services", "common"}) {
    for (const auto& e : fs::recursive_directory_iterator(fs::path(LABSHARE_SOURCE_DIR) / dir)) {
      const std::string ext = e.path().extension().string();
      if (ext != ".cc" && ext != ".h" && ext != ".inc") continue;
      const std::string text = Read(e.path());
      int line = 1;
      for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\n') ++line;
        if (text[i] != '"') continue;
        size_t j = i + 1;
        while (j < text.size() && (std::isupper(static_cast<unsigned char>(text[j])) ||
                                   std::isdigit(static_cast<unsigned char>(text[j])) || text[j] == '_')) {
          ++j;
        }
        if (j < text.size() && text[j] == '"' && j > i + 1) {
          const std::string word = text.substr(i + 1, j - i - 1);
          if (word.find('_') != std::string::npos && std::isupper(static_cast<unsigned char>(word[0]))) {
            out.emplace_back(word, absl::StrCat(fs::relative(e.path(), LABSHARE_SOURCE_DIR).string(), ":", line));
          }
          i = j;  // the closing quote is not an opening one
        }
      }
    }
  }
  return out;
}

TEST(ErrorContract, EveryReasonInTheCodeIsDocumentedSomewhere) {
  const ErrorContract& c = SourceContract();
  std::set<std::string> documented;
  for (const auto& cr : c.everywhere) documented.insert(cr.second);
  for (const auto& [s, errors] : c.services) {
    for (const auto& cr : errors) documented.insert(cr.second);
  }
  for (const auto& [m, errors] : c.methods) {
    for (const auto& cr : errors) documented.insert(cr.second);
  }
  const auto literals = ReasonLiterals();
  EXPECT_GT(literals.size(), 100u);
  std::vector<std::string> undocumented;
  for (const auto& [word, where] : literals) {
    if (documented.count(word) > 0 || IsGrpcCodeName(word) || NotAnRpcReason().count(word) > 0 ||
        absl::StartsWith(word, "LABSHARE_")) {  // environment variables
      continue;
    }
    undocumented.push_back(absl::StrCat(where, ": \"", word, "\""));
  }
  EXPECT_TRUE(undocumented.empty())
      << "reasons documented in no proto comment (document them on the methods that answer them, "
         "or fix the reason):\n"
      << absl::StrJoin(undocumented, "\n");
}

// ------------------------------------------------------------ the runtime check

constexpr char kCancelOrder[] = "/labshare.booking.v1.BookingService/CancelOrder";

TEST(ErrorContractCheck, DocumentedAnswersPass) {
  EXPECT_EQ(UndocumentedAnswer(kCancelOrder, grpc::Status::OK), "");
  EXPECT_EQ(UndocumentedAnswer(kCancelOrder, ToGrpcStatus(MakeError(absl::StatusCode::kFailedPrecondition,
                                                                    "ORDER_NOT_CANCELLABLE", "no"),
                                                          "booking.labshare")),
            "");
  EXPECT_EQ(UndocumentedAnswer(kCancelOrder, ToGrpcStatus(MakeError(absl::StatusCode::kUnauthenticated,
                                                                    "TOKEN_EXPIRED", "sign in"),
                                                          "booking.labshare")),
            "");
  // gRPC's own statuses carry no ErrorInfo; a cancelled call's status
  // reaches nobody.
  EXPECT_EQ(UndocumentedAnswer(kCancelOrder, grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "late")), "");
  EXPECT_EQ(UndocumentedAnswer(kCancelOrder, ToGrpcStatus(MakeError(absl::StatusCode::kCancelled,
                                                                    "CLIENT_GONE", "gone"),
                                                          "booking.labshare")),
            "");
}

TEST(ErrorContractCheck, UndocumentedAnswersAreNamed) {
  const std::string wrong = UndocumentedAnswer(
      kCancelOrder, ToGrpcStatus(MakeError(absl::StatusCode::kFailedPrecondition, "ORDER_STATE", "no"),
                                 "booking.labshare"));
  EXPECT_TRUE(absl::StrContains(wrong, "FAILED_PRECONDITION ORDER_STATE")) << wrong;
  // The right reason with the wrong code is drift too.
  EXPECT_NE(UndocumentedAnswer(kCancelOrder, ToGrpcStatus(MakeError(absl::StatusCode::kAborted,
                                                                    "ORDER_NOT_CANCELLABLE", "no"),
                                                          "booking.labshare")),
            "");
  EXPECT_NE(UndocumentedAnswer(kCancelOrder, grpc::Status(grpc::StatusCode::INTERNAL, "bare")), "");
  EXPECT_NE(UndocumentedAnswer("/labshare.booking.v1.BookingService/NoSuchRpc",
                               ToGrpcStatus(MakeError(absl::StatusCode::kNotFound, "X", "no"), "d")),
            "");
}

TEST(ErrorContractCheckDeathTest, StrictModeAbortsOnAnUndocumentedAnswer) {
  if (!StrictReasons()) GTEST_SKIP() << "LABSHARE_STRICT_REASONS=1 is set by ctest";
  const grpc::Status wrong = ToGrpcStatus(
      MakeError(absl::StatusCode::kFailedPrecondition, "ORDER_STATE", "no"), "booking.labshare");
  EXPECT_DEATH(CheckAnswerDocumented(kCancelOrder, wrong), "undocumented error: .*CancelOrder.*ORDER_STATE");
  CheckAnswerDocumented(kCancelOrder, grpc::Status::OK);  // and lives on a documented one
}

}  // namespace
}  // namespace labshare
