// The usage contract (proto/labshare/usage/v1/usage.proto) where the code
// and the RPC comments once disagreed: the audit-trail RPCs publish their
// events and VerifyAuditChain is idempotent through request_id; range limits
// are exact (100 calendar years, 120 months for MONTH rows); the annual CSV
// validates its request before it takes an export slot.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/server.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "labshare/usage/v1/usage.grpc.pb.h"
#include "labshare/usage/v1/usage_events.pb.h"
#include "services/usage/audit_chain.h"
#include "services/usage/usage_figures.h"
#include "services/usage/usage_service.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_tokens.h"
#include "tests/usage/usage_service_fixture.h"
#include "tests/usage/usage_test_events.h"

namespace labshare::usage {
namespace {

constexpr int kEntries = 3;

// Reads a whole stream; its final status.
template <typename R>
grpc::Status Drain(std::unique_ptr<grpc::ClientReader<R>> reader) {
  R m;
  while (reader->Read(&m)) {
  }
  return reader->Finish();
}

class UsageContractTest : public UsageServiceFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(StartUsage());
    for (int i = 0; i < kEntries; ++i) {
      labshare::inventory::v1::InventoryEvent e;
      e.mutable_header()->set_event_id(absl::StrCat("ev", i));
      e.mutable_instrument_changed()->mutable_instrument()->set_name(absl::StrCat("instruments/i", i));
      ASSERT_TRUE(audit_->Append("inventory", {"1-0", "labshare.inventory.v1.InventoryEvent",
                                               e.SerializeAsString()}).ok());
    }
  }

  // The outbox entry of `event` under a fresh event id.
  template <typename Event>
  StreamEvent Entry(Event event) {
    return test_events::Entry(std::move(event), absl::StrCat("fig", ++next_event_));
  }
  // Folds one event of `source` under a fresh event id.
  template <typename Event>
  void Fold(const std::string& source, Event event) {
    ASSERT_TRUE(figures_->Fold(source, Entry(std::move(event))).ok());
  }
  // An instrument of `owner` registered on 1 January 2026.
  void Register(const std::string& id, const std::string& owner, const std::string& category = "sem") {
    Fold("inventory", test_events::InstrumentChanged(id, Facts(owner, category)));
  }
  // Facts of an instrument registered on 1 January 2026.
  test_events::InstrumentFacts Facts(const std::string& owner, const std::string& category = "") const {
    test_events::InstrumentFacts f;
    f.owner = owner;
    f.category = category;
    f.create_time = absl::FromCivil(absl::CivilDay(2026, 1, 1), zone_);
    return f;
  }
  // A leasable instrument of organizations/own counting `counted_hours` a
  // day of a lease, registered (or changed) with a create_time of 1 January 2026.
  void RegisterLeasable(const std::string& id, int counted_hours) {
    labshare::inventory::v1::InventoryEvent e;
    auto* in = e.mutable_instrument_changed()->mutable_instrument();
    in->set_name("instruments/" + id);
    in->set_owner_organization("organizations/own");
    in->set_daily_available_hours(24);
    auto* m = in->add_modes();
    m->set_mode(labshare::type::v1::LEASE);
    m->mutable_lease_rules()->set_counted_hours_per_day(counted_hours);
    *in->mutable_create_time() = ToProto(absl::FromCivil(absl::CivilDay(2026, 1, 1), zone_));
    Fold("inventory", e);
  }
  // An empty store, as SetUp leaves it before its audit entries.
  void Reset() {
    testing::FlushAll(*redis_);
    ASSERT_TRUE(figures_->MigrateAggregates().ok());
  }
  // A posted charge: `amount` of service income of `payer` in `currency` at `at`.
  void Charge(const std::string& id, const std::string& payer, const std::string& currency, int64_t amount,
              absl::Time at, bool correction = false) {
    Fold("billing", test_events::ServiceIncome(id, payer, currency, amount, at, correction));
  }
  // A CONFIRMED booking of users/ana paid by organizations/lab, reserved [start, end).
  static labshare::booking::v1::Booking LabBooking(const std::string& id, const std::string& instrument,
                                                   labshare::type::v1::SharingMode mode, absl::Time start,
                                                   absl::Time end) {
    labshare::booking::v1::Booking b;
    b.set_name("bookings/" + id);
    b.set_instrument("instruments/" + instrument);
    b.set_mode(mode);
    b.set_payer_organization("organizations/lab");
    b.set_user("users/ana");
    b.set_state(labshare::booking::v1::Booking::CONFIRMED);
    *b.mutable_reserved_interval()->mutable_start_time() = ToProto(start);
    *b.mutable_reserved_interval()->mutable_end_time() = ToProto(end);
    return b;
  }
  v1::UsageFigures Figures(absl::CivilDay from, absl::CivilDay to, const v1::UsageFilter& filter = {}) {
    v1::GetUsageFiguresRequest g;
    *g.mutable_range() = Range(from, to);
    *g.mutable_filter() = filter;
    auto r = figures_->GetUsageFigures(auditor_, g);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->figures() : v1::UsageFigures();
  }

  int next_event_ = 0;
};

// "Publishes AuditVerificationRun"; mutations are idempotent through
// request_id and list FAILED_PRECONDITION (REQUEST_ID_REUSED).
TEST_F(UsageContractTest, VerifyAuditChainPublishesItsRunAndRetriesGiveTheSameAnswer) {
  v1::VerifyAuditChainRequest req;
  req.set_request_id("verify-1");
  v1::VerifyAuditChainResponse first;
  grpc::Status s = stub_->VerifyAuditChain(Ctx().get(), req, &first);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(first.result(), v1::VERIFIED);
  EXPECT_EQ(first.start_sequence(), 1);
  EXPECT_EQ(first.end_sequence(), kEntries + 1);
  EXPECT_EQ(first.entries_checked(), kEntries);

  std::vector<v1::UsageEvent> events = Outbox();
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_audit_verification_run());
  const v1::AuditVerificationRun& run = events[0].audit_verification_run();
  EXPECT_EQ(run.start_sequence(), 1);
  EXPECT_EQ(run.end_sequence(), kEntries + 1);
  EXPECT_EQ(run.result(), v1::VERIFIED);
  EXPECT_EQ(run.entries_checked(), kEntries);
  EXPECT_EQ(run.head().sequence(), kEntries);
  EXPECT_EQ(run.verify_time().seconds(), first.verify_time().seconds());
  EXPECT_EQ(events[0].header().request_id(), "verify-1");
  EXPECT_EQ(events[0].header().actor(), "users/audrey");

  // A retry (later, the chain grown meanwhile) gives the first answer and no second event.
  clock_.Advance(absl::Minutes(5));
  labshare::inventory::v1::InventoryEvent more;
  more.mutable_header()->set_event_id("ev-later");
  ASSERT_TRUE(audit_->Append("inventory", {"1-0", "labshare.inventory.v1.InventoryEvent",
                                           more.SerializeAsString()}).ok());
  v1::VerifyAuditChainResponse again;
  s = stub_->VerifyAuditChain(Ctx().get(), req, &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(Outbox().size(), 1u);

  // The same request_id with other content.
  req.set_start_sequence(2);
  v1::VerifyAuditChainResponse reused;
  s = stub_->VerifyAuditChain(Ctx().get(), req, &reused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "REQUEST_ID_REUSED");

  // Another auditor's same request_id is another request: it runs and publishes.
  req.set_start_sequence(0);
  v1::VerifyAuditChainResponse bobs;
  s = stub_->VerifyAuditChain(Ctx("bob").get(), req, &bobs);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(bobs.end_sequence(), kEntries + 2);
  ASSERT_EQ(Outbox().size(), 2u);

  // Without a request_id every call runs and publishes.
  v1::VerifyAuditChainRequest plain;
  plain.set_start_sequence(2);
  v1::VerifyAuditChainResponse third;
  s = stub_->VerifyAuditChain(Ctx().get(), plain, &third);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(third.start_sequence(), 2);
  events = Outbox();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].audit_verification_run().start_sequence(), 2);
  EXPECT_EQ(events[2].audit_verification_run().end_sequence(), kEntries + 2);
}

// VerifyAuditChain: REQUEST_ID_REUSED is "checked first after the limits
// every request is held to (types.proto)": a number beyond them is
// INVALID_FIELD even under a request_id used before; within them, the reused
// id comes before the request's own INVALID_FIELD (a negative start).
TEST_F(UsageContractTest, AReusedRequestIdComesAfterTheLimitsEveryRequestIsHeldTo) {
  v1::VerifyAuditChainRequest req;
  req.set_request_id("verify-limits");
  v1::VerifyAuditChainResponse first;
  grpc::Status s = stub_->VerifyAuditChain(Ctx().get(), req, &first);
  ASSERT_TRUE(s.ok()) << s.error_message();

  req.set_start_sequence(1000000000000001);  // above 10^15
  v1::VerifyAuditChainResponse out;
  s = stub_->VerifyAuditChain(Ctx().get(), req, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");

  req.set_start_sequence(-5);
  s = stub_->VerifyAuditChain(Ctx().get(), req, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "REQUEST_ID_REUSED");
}

// usage.proto: sequences have no gaps, and any method may answer INTERNAL
// (AUDIT_CORRUPTED): ListAuditEntries over an entry deleted or stored as
// bytes that do not parse answers it, as ExportAuditTrail does, instead of
// leaving the entry out.
TEST_F(UsageContractTest, ListAuditEntriesOverAnEntryThatCannotBeReadIsAuditCorrupted) {
  for (const std::string& damage : {std::string(), std::string("\xff\xff\xff")}) {
    if (damage.empty()) {
      ASSERT_TRUE(pool_->Command({"DEL", audit_keys::Entry(2)}).ok());
    } else {
      ASSERT_TRUE(pool_->Command({"SET", audit_keys::Entry(2), damage}).ok());
    }
    v1::ListAuditEntriesRequest req;
    req.set_start_sequence(1);
    req.set_end_sequence(kEntries + 1);
    v1::ListAuditEntriesResponse out;
    grpc::Status s = stub_->ListAuditEntries(Ctx().get(), req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL) << s.error_message();
    EXPECT_EQ(GrpcErrorReason(s), "AUDIT_CORRUPTED");
    req.set_resource("instruments/i1");  // the index hit of entry 2
    s = stub_->ListAuditEntries(Ctx().get(), req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL) << s.error_message();
    EXPECT_EQ(GrpcErrorReason(s), "AUDIT_CORRUPTED");

    v1::ExportAuditTrailRequest exp;
    exp.set_format(v1::AUDIT_EXPORT_FORMAT_JSONL);
    exp.set_start_sequence(1);
    exp.set_end_sequence(kEntries + 1);
    auto c = Ctx();
    s = Drain(stub_->ExportAuditTrail(c.get(), exp));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL) << s.error_message();
    EXPECT_EQ(GrpcErrorReason(s), "AUDIT_CORRUPTED");
  }
}

// "Publishes ReportExported (kind EXPORT_KIND_AUDIT_TRAIL) when the stream completes."
TEST_F(UsageContractTest, ExportAuditTrailPublishesReportExported) {
  v1::ExportAuditTrailRequest req;
  req.set_format(v1::AUDIT_EXPORT_FORMAT_JSONL);
  req.set_start_sequence(2);
  auto ctx = Ctx();
  auto reader = stub_->ExportAuditTrail(ctx.get(), req);
  v1::ExportAuditTrailResponse m;
  v1::ExportTrailer trailer;
  while (reader->Read(&m)) {
    if (m.has_trailer()) trailer = m.trailer();
  }
  grpc::Status s = reader->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(trailer.row_count(), kEntries - 1);

  std::vector<v1::UsageEvent> events = Outbox();
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_report_exported());
  const v1::ReportExported& x = events[0].report_exported();
  EXPECT_EQ(x.kind(), v1::EXPORT_KIND_AUDIT_TRAIL);
  EXPECT_EQ(x.start_sequence(), 2);
  EXPECT_EQ(x.end_sequence(), kEntries + 1);
  EXPECT_EQ(x.trailer().SerializeAsString(), trailer.SerializeAsString());
  EXPECT_EQ(events[0].header().actor(), "users/audrey");

  // A refused export publishes nothing.
  req.set_format(v1::AUDIT_EXPORT_FORMAT_UNSPECIFIED);
  auto ctx2 = Ctx();
  auto bad = stub_->ExportAuditTrail(ctx2.get(), req);
  while (bad->Read(&m)) {
  }
  EXPECT_EQ(bad->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Outbox().size(), 1u);
}

// VerifyAuditChain: "DEADLINE_EXCEEDED if the caller's deadline is too
// short for the range": the run the caller never receives is neither
// stored nor published (AuditVerificationRun), so a retry with the same
// request_id verifies afresh and publishes once.
TEST_F(UsageContractTest, VerifyAuditChainPastTheCallersDeadlineKeepsAndPublishesNothing) {
  v1::VerifyAuditChainRequest req;
  req.set_request_id("verify-late");
  auto late = figures_->VerifyAuditChain(auditor_, req, *audit_, absl::InfinitePast());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded) << late.status();
  EXPECT_EQ(ErrorReason(late.status()), "DEADLINE_EXCEEDED");
  EXPECT_TRUE(Outbox().empty());
  auto retry = figures_->VerifyAuditChain(auditor_, req, *audit_, absl::InfiniteFuture());
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->result(), v1::VERIFIED);
  EXPECT_EQ(retry->entries_checked(), kEntries);
  std::vector<v1::UsageEvent> events = Outbox();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].has_audit_verification_run());
  // Over gRPC, a caller with time enough gets the answer (the replay).
  v1::VerifyAuditChainResponse resp;
  auto ctx = Ctx();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::hours(1));
  grpc::Status s = stub_->VerifyAuditChain(ctx.get(), req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.SerializeAsString(), retry->SerializeAsString());
  EXPECT_EQ(Outbox().size(), 1u);
}

// Streaming exports: "RESOURCE_EXHAUSTED, reason EXPORT_LIMIT ... before
// its first message (after the request was validated)". ExportAuditTrail
// takes its slot once the range is resolved and before it reads an entry,
// as ExportUsage does: a caller without a free slot is refused even over
// entries that would answer AUDIT_CORRUPTED; the request's errors still
// come first; the slot is given back when the call ends.
TEST_F(UsageContractTest, ExportAuditTrailTakesItsSlotBeforeReadingAnEntry) {
  ASSERT_TRUE(pool_->Command({"DEL", audit_keys::Entry(2)}).ok());
  figures_->set_max_concurrent_exports(/*total=*/0, /*per_caller=*/0);
  v1::ExportAuditTrailRequest req;
  req.set_format(v1::AUDIT_EXPORT_FORMAT_JSONL);
  auto export_status = [&](const v1::ExportAuditTrailRequest& r) {
    auto ctx = Ctx();
    return Drain(stub_->ExportAuditTrail(ctx.get(), r));
  };
  grpc::Status s = export_status(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "EXPORT_LIMIT");
  v1::ExportAuditTrailRequest beyond = req;
  beyond.set_start_sequence(kEntries + 1);
  s = export_status(beyond);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "SEQUENCE_OUT_OF_RANGE");
  v1::ExportAuditTrailRequest no_format = req;
  no_format.set_format(v1::AUDIT_EXPORT_FORMAT_UNSPECIFIED);
  EXPECT_EQ(GrpcErrorReason(export_status(no_format)), "INVALID_FIELD");

  // One slot: the damage is answered, and the slot is free again after.
  figures_->set_max_concurrent_exports(/*total=*/1, /*per_caller=*/1);
  for (int i = 0; i < 2; ++i) {
    s = export_status(req);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL) << s.error_message();
    EXPECT_EQ(GrpcErrorReason(s), "AUDIT_CORRUPTED");
    EXPECT_EQ(figures_->exports().active(), 0);
  }
  EXPECT_TRUE(Outbox().empty());
}

// QueryUsage: "RANGE_TOO_LARGE: ... MONTH over more than 120 months".
TEST_F(UsageContractTest, QueryUsageByMonthIsLimitedTo120Months) {
  v1::QueryUsageRequest q;
  q.set_granularity(v1::PERIOD_GRANULARITY_MONTH);
  *q.mutable_range() = Range(absl::CivilDay(2010, 1, 1), absl::CivilDay(2020, 1, 1));  // 120 months
  EXPECT_TRUE(figures_->QueryUsage(auditor_, q).ok());
  *q.mutable_range() = Range(absl::CivilDay(2010, 1, 1), absl::CivilDay(2020, 1, 2));  // 120 months and a day
  auto r = figures_->QueryUsage(auditor_, q);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(r.status()), "RANGE_TOO_LARGE");
  // The same range by year is fine.
  q.set_granularity(v1::PERIOD_GRANULARITY_YEAR);
  EXPECT_TRUE(figures_->QueryUsage(auditor_, q).ok());
}

// "RANGE_TOO_LARGE: more than 100 years": calendar years, not 36600 days.
TEST_F(UsageContractTest, RangesAreLimitedToOneHundredCalendarYears) {
  v1::GetUsageFiguresRequest g;
  *g.mutable_range() = Range(absl::CivilDay(2000, 1, 1), absl::CivilDay(2100, 1, 1));
  EXPECT_TRUE(figures_->GetUsageFigures(auditor_, g).ok());
  *g.mutable_range() = Range(absl::CivilDay(2000, 1, 1), absl::CivilDay(2100, 1, 2));
  auto r = figures_->GetUsageFigures(auditor_, g);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(r.status()), "RANGE_TOO_LARGE");

  v1::QueryUsageRequest q;
  q.set_granularity(v1::PERIOD_GRANULARITY_YEAR);
  *q.mutable_range() = Range(absl::CivilDay(2000, 3, 1), absl::CivilDay(2100, 3, 2));
  EXPECT_EQ(ErrorReason(figures_->QueryUsage(auditor_, q).status()), "RANGE_TOO_LARGE");
  v1::ListIdleInstrumentsRequest idle;
  *idle.mutable_range() = g.range();
  EXPECT_EQ(ErrorReason(figures_->ListIdleInstruments(auditor_, idle).status()), "RANGE_TOO_LARGE");
}

// "beyond that the call ends with RESOURCE_EXHAUSTED ... (after the request
// was validated)": a bad year or scope is INVALID_ARGUMENT even when no
// export slot is free.
TEST_F(UsageContractTest, AnnualReportCsvValidatesBeforeTakingAnExportSlot) {
  figures_->set_max_concurrent_exports(/*total=*/0, /*per_caller=*/0);
  auto sink = [](const v1::CsvChunk&) { return absl::OkStatus(); };
  v1::ExportAnnualReportCsvRequest r;
  r.set_year(1969);
  absl::Status s = figures_->ExportAnnualReportCsv(auditor_, r, sink);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(s), "INVALID_YEAR");
  r.set_year(2026);
  r.mutable_scope()->add_facilities("facilities/Not_Valid");
  s = figures_->ExportAnnualReportCsv(auditor_, r, sink);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(s), "INVALID_NAME");
  r.clear_scope();
  s = figures_->ExportAnnualReportCsv(auditor_, r, sink);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrorReason(s), "EXPORT_LIMIT");
}

// types.proto: "Numbers in requests are range-checked before anything else
// uses them ... Outside: INVALID_ARGUMENT, reason INVALID_FIELD, naming the
// field" holds for the streaming methods as for the unary ones.
TEST_F(UsageContractTest, StreamingRequestsAreRangeCheckedFirst) {
  v1::ExportAuditTrailRequest audit;
  audit.set_format(v1::AUDIT_EXPORT_FORMAT_JSONL);
  audit.set_start_sequence(1000000000000001);  // above 10^15
  auto c1 = Ctx();
  grpc::Status s = Drain(stub_->ExportAuditTrail(c1.get(), audit));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");

  v1::ExportAnnualReportCsvRequest csv;
  csv.set_year(1000001);  // above 10^6
  auto c2 = Ctx();
  s = Drain(stub_->ExportAnnualReportCsv(c2.get(), csv));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");

  v1::ExportUsageRequest usage;
  usage.set_format(v1::EXPORT_FORMAT_ROWS);
  *usage.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2026, 2, 1));
  usage.mutable_range()->mutable_start_time()->set_nanos(-1);  // not a valid Timestamp
  auto c3 = Ctx();
  s = Drain(stub_->ExportUsage(c3.get(), usage));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
}

// UsageFigures.revenue_rate: "Minor units of service income (of instruments
// with a known value) / minor units of original_value"; DOMAIN-level
// definition: instruments without a value are "left out of both numerator
// and denominator". service_income itself still counts every instrument.
TEST_F(UsageContractTest, RevenueRateLeavesInstrumentsWithoutValueOutOfTheNumerator) {
  const absl::Time jan1 = absl::FromCivil(absl::CivilDay(2026, 1, 1), zone_);
  for (const auto& [id, value] : std::vector<std::pair<std::string, int64_t>>{{"valued", 1000000}, {"novalue", 0}}) {
    test_events::InstrumentFacts f = Facts("organizations/own");
    f.original_value_cny = value;
    Fold("inventory", test_events::InstrumentChanged(id, f));
  }
  for (const auto& [id, income] : std::vector<std::pair<std::string, int64_t>>{{"valued", 10000}, {"novalue", 5000}}) {
    Fold("billing", test_events::ServiceIncome(id, "organizations/other", "CNY", income, jan1 + absl::Hours(24 * 40)));
  }
  for (bool aggregates : {true, false}) {  // from the aggregates and from the counters
    figures_->set_use_aggregates(aggregates);
    v1::GetUsageFiguresRequest g;
    *g.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
    auto r = figures_->GetUsageFigures(auditor_, g);
    ASSERT_TRUE(r.ok()) << r.status();
    const v1::UsageFigures& fig = r->figures();
    EXPECT_EQ(fig.service_income().amount_minor(), 15000);
    EXPECT_EQ(fig.original_value().amount_minor(), 1000000);
    EXPECT_EQ(fig.instruments_without_value(), 1);
    EXPECT_EQ(fig.revenue_rate().numerator(), 10000) << "aggregates " << aggregates;
    EXPECT_EQ(fig.revenue_rate().denominator(), 1000000);
    EXPECT_EQ(fig.revenue_rate().basis_points(), 100);
  }
  EXPECT_GT(figures_->buckets_from_aggregates(), 0);  // the first round was answered from the aggregates
}

// "Use record": "A session not yet closed counts up to min(computed_time,
// reserved end)"; a lease not yet returned "up to computed_time", each day at
// most the counted hours "in force at handover"; completed_bookings counts
// bookings "with at least one check-in, a handover".
TEST_F(UsageContractTest, OpenSessionsCountUpToTheComputationTime) {
  namespace bk = labshare::booking::v1;
  Register("tem", "organizations/own");
  RegisterLeasable("lathe", 6);
  auto at = [&](int month, int day, int hour, int minute = 0) {
    return absl::FromCivil(absl::CivilSecond(2027, month, day, hour, minute, 0), zone_);
  };
  auto booking = [&](const std::string& id, const std::string& instrument, labshare::type::v1::SharingMode mode,
                     absl::Time start, absl::Time end) {
    bk::Booking b = LabBooking(id, instrument, mode, start, end);
    bk::BookingEvent created;
    *created.mutable_booking_created()->mutable_booking() = b;
    Fold("booking", created);
    return b;
  };
  // On-site, reserved 28 Feb 20:00 - 1 Mar 04:00, checked in at 22:00.
  bk::Booking b = booking("b1", "tem", labshare::type::v1::ON_SITE, at(2, 28, 20), at(3, 1, 4));
  *b.mutable_session()->mutable_start_time() = ToProto(at(2, 28, 22));
  bk::BookingEvent in;
  *in.mutable_booking_checked_in()->mutable_booking() = b;
  Fold("booking", in);
  // A lease handed over on 27 Feb 00:00 (no reserved cap: up to now).
  bk::Booking lease = booking("l1", "lathe", labshare::type::v1::LEASE, at(2, 27, 0), at(3, 10, 0));
  *lease.mutable_session()->mutable_start_time() = ToProto(at(2, 27, 0));
  *in.mutable_booking_checked_in()->mutable_booking() = lease;
  Fold("booking", in);

  v1::UsageFilter tem, lathe;
  tem.add_instruments("instruments/tem");
  lathe.add_instruments("instruments/lathe");
  const absl::CivilDay feb(2027, 2, 1), mar(2027, 3, 1), apr(2027, 4, 1);
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    SCOPED_TRACE(aggregates ? "aggregates" : "counters");
    clock_.Set(at(3, 1, 1, 30));
    v1::UsageFigures f = Figures(feb, mar, tem);
    EXPECT_EQ(f.effective_seconds(), 2 * 3600);
    EXPECT_EQ(f.external_seconds(), 2 * 3600);
    EXPECT_EQ(f.users_served(), 1);
    EXPECT_EQ(f.bookings(), 1);
    EXPECT_EQ(f.completed_bookings(), 1);
    EXPECT_EQ(Figures(mar, apr, tem).effective_seconds(), 5400);
    EXPECT_EQ(Figures(mar, apr, tem).completed_bookings(), 0);
    // Lease: 27 and 28 Feb at 6 h each, 1 Mar 1.5 h so far.
    EXPECT_EQ(Figures(feb, mar, lathe).effective_seconds(), 12 * 3600);
    EXPECT_EQ(Figures(mar, apr, lathe).effective_seconds(), 5400);
    EXPECT_EQ(Figures(feb, apr).effective_seconds(), 2 * 3600 + 5400 + 12 * 3600 + 5400);
    // Past the reserved end the on-site session stops growing; the lease does not.
    clock_.Set(at(3, 1, 6));
    EXPECT_EQ(Figures(mar, apr, tem).effective_seconds(), 4 * 3600);
    EXPECT_EQ(Figures(mar, apr, lathe).effective_seconds(), 6 * 3600);
  }
  // A maintenance window from 02:00 cuts the running session's block: it
  // counts up to the new reserved end.
  b.set_state(bk::Booking::CHECKED_IN);
  *b.mutable_reserved_interval()->mutable_end_time() = ToProto(at(3, 1, 2));
  bk::BookingEvent cut;
  *cut.mutable_booking_interval_changed()->mutable_booking() = b;
  cut.mutable_booking_interval_changed()->set_cause(bk::BookingIntervalChanged::MAINTENANCE_CUT);
  Fold("booking", cut);
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    EXPECT_EQ(Figures(mar, apr, tem).effective_seconds(), 2 * 3600);
  }
  // Checked out (clamped to 02:00): the actual session, counted once.
  b.set_state(bk::Booking::COMPLETED);
  *b.mutable_session()->mutable_end_time() = ToProto(at(3, 1, 2));
  bk::BookingEvent out;
  *out.mutable_booking_checked_out()->mutable_booking() = b;
  Fold("booking", out);
  // The lathe's rules change after the handover; the lease is returned on 2 Mar 12:00.
  RegisterLeasable("lathe", 12);
  *lease.mutable_session()->mutable_end_time() = ToProto(at(3, 2, 12));
  *out.mutable_booking_checked_out()->mutable_booking() = lease;
  Fold("booking", out);
  clock_.Set(at(3, 5, 0));
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    SCOPED_TRACE(aggregates ? "aggregates" : "counters");
    EXPECT_EQ(Figures(feb, mar, tem).effective_seconds(), 2 * 3600);
    EXPECT_EQ(Figures(feb, mar, tem).completed_bookings(), 1);
    EXPECT_EQ(Figures(mar, apr, tem).effective_seconds(), 2 * 3600);
    // 6 h a day (in force at handover) for 27 Feb - 2 Mar: 4 days.
    EXPECT_EQ(Figures(feb, apr, lathe).effective_seconds(), 4 * 6 * 3600);
    EXPECT_EQ(Figures(feb, apr, lathe).completed_bookings(), 1);
  }
}

// Definitions: "Instrument attributes that can change (category, original
// value) are taken as of the time of use for time and money, and as of the
// end of the period for the instrument set"; external_seconds compares with
// the owner of the instrument then; available_seconds uses the
// daily_available_hours "in force at the start of d".
TEST_F(UsageContractTest, AttributesAreTakenAsOfTheTimeOfUse) {
  namespace bk = labshare::booking::v1;
  auto version = [&](const std::string& owner, const std::string& category, int hours, absl::CivilDay from) {
    test_events::InstrumentFacts f = Facts(owner, category);
    f.daily_available_hours = hours;
    f.update_time = absl::FromCivil(from, zone_);
    Fold("inventory", test_events::InstrumentChanged("sem1", f));
  };
  auto session = [&](const std::string& id, absl::CivilDay day, int hours) {
    const absl::Time start = absl::FromCivil(day, zone_) + absl::Hours(9);
    bk::Booking b = LabBooking(id, "sem1", labshare::type::v1::ON_SITE, start, start + absl::Hours(hours));
    *b.mutable_session()->mutable_start_time() = ToProto(start);
    *b.mutable_session()->mutable_end_time() = ToProto(start + absl::Hours(hours));
    bk::BookingEvent out;
    *out.mutable_booking_checked_out()->mutable_booking() = b;
    Fold("booking", out);
  };
  // Owned by "own", category sem, 24 h a day; in January the lab uses it 2 h
  // and pays 1000. From 1 February the lab owns it (tem, 12 h a day) and
  // uses it 3 h.
  version("organizations/own", "sem", 24, absl::CivilDay(2026, 1, 1));
  session("s1", absl::CivilDay(2026, 1, 10), 2);
  Charge("sem1", "organizations/lab", "CNY", 1000, absl::FromCivil(absl::CivilDay(2026, 1, 10), zone_) + absl::Hours(12));
  version("organizations/lab", "tem", 12, absl::CivilDay(2026, 2, 1));
  session("s2", absl::CivilDay(2026, 2, 10), 3);

  const absl::CivilDay jan(2026, 1, 1), mar(2026, 3, 1), next_year(2027, 1, 1);
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    SCOPED_TRACE(aggregates ? "aggregates" : "counters");
    v1::UsageFigures f = Figures(jan, next_year);
    EXPECT_EQ(f.effective_seconds(), 5 * 3600);
    EXPECT_EQ(f.external_seconds(), 2 * 3600);  // January's use was external, February's internal
    EXPECT_EQ(f.external_users_served(), 1);
    f = Figures(jan, mar);
    EXPECT_EQ(f.available_seconds(), 31 * 86400 + 28 * 43200);

    v1::QueryUsageRequest q;
    *q.mutable_range() = Range(jan, next_year);
    q.add_group_by(v1::DIMENSION_CATEGORY);
    auto r = figures_->QueryUsage(auditor_, q);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->rows_size(), 2);
    EXPECT_EQ(r->rows(0).key().category(), "sem");
    EXPECT_EQ(r->rows(0).figures().effective_seconds(), 2 * 3600);
    EXPECT_EQ(r->rows(0).figures().service_income().amount_minor(), 1000);
    EXPECT_EQ(r->rows(0).figures().instrument_count(), 0);  // the set: as of the end of the period
    EXPECT_EQ(r->rows(1).key().category(), "tem");
    EXPECT_EQ(r->rows(1).figures().effective_seconds(), 3 * 3600);
    EXPECT_EQ(r->rows(1).figures().service_income().amount_minor(), 0);
    EXPECT_EQ(r->rows(1).figures().instrument_count(), 1);

    q.clear_group_by();
    q.add_group_by(v1::DIMENSION_OWNER_ORGANIZATION);
    r = figures_->QueryUsage(auditor_, q);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->rows_size(), 2);
    EXPECT_EQ(r->rows(0).key().owner_organization(), "organizations/lab");
    EXPECT_EQ(r->rows(0).figures().effective_seconds(), 3 * 3600);
    EXPECT_EQ(r->rows(0).figures().external_seconds(), 0);
    EXPECT_EQ(r->rows(1).key().owner_organization(), "organizations/own");
    EXPECT_EQ(r->rows(1).figures().effective_seconds(), 2 * 3600);
    EXPECT_EQ(r->rows(1).figures().external_seconds(), 2 * 3600);

    v1::UsageFilter sem;
    sem.add_categories("sem");
    f = Figures(jan, next_year, sem);
    EXPECT_EQ(f.effective_seconds(), 2 * 3600);
    EXPECT_EQ(f.service_income().amount_minor(), 1000);
    EXPECT_EQ(f.instrument_count(), 0);
    // January alone: the instrument was sem then, in the set too.
    f = Figures(jan, absl::CivilDay(2026, 2, 1), sem);
    EXPECT_EQ(f.effective_seconds(), 2 * 3600);
    EXPECT_EQ(f.instrument_count(), 1);
  }
  // A change of something else (here the daily hours, from 15 February)
  // keeps the month answerable from the aggregates.
  figures_->set_use_aggregates(true);
  version("organizations/lab", "tem", 10, absl::CivilDay(2026, 2, 15));
  const int64_t before = figures_->buckets_from_aggregates();
  v1::UsageFigures feb = Figures(absl::CivilDay(2026, 2, 1), mar);
  EXPECT_EQ(feb.available_seconds(), 14 * 43200 + 14 * 36000);
  EXPECT_EQ(feb.effective_seconds(), 3 * 3600);
  EXPECT_EQ(figures_->buckets_from_aggregates(), before + 1);
}

// An instrument folded before versions were kept has no history: its record
// as it stood becomes its first version at start (SeedInstrumentVersions),
// so a change after the upgrade does not move its earlier use.
TEST_F(UsageContractTest, InstrumentsFromBeforeVersionsKeepTheirEarlierAttributes) {
  labshare::inventory::v1::InventoryEvent e;
  auto* in = e.mutable_instrument_changed()->mutable_instrument();
  in->set_name("instruments/sem1");
  in->set_owner_organization("organizations/own");
  in->set_category("sem");
  in->set_daily_available_hours(24);
  *in->mutable_create_time() = ToProto(absl::FromCivil(absl::CivilDay(2026, 1, 1), zone_));
  *in->mutable_update_time() = ToProto(absl::FromCivil(absl::CivilDay(2026, 1, 1), zone_));
  Fold("inventory", e);
  ASSERT_TRUE(pool_->Command({"DEL", "{usage}:ih:sem1"}).ok());  // as an older version left it
  Charge("sem1", "organizations/lab", "CNY", 1000, absl::FromCivil(absl::CivilDay(2026, 1, 10), zone_));
  auto seeded = figures_->SeedInstrumentVersions();
  ASSERT_TRUE(seeded.ok()) << seeded.status();
  EXPECT_EQ(*seeded, 1);
  EXPECT_EQ(*figures_->SeedInstrumentVersions(), 0);  // once
  in->set_category("tem");
  *in->mutable_update_time() = ToProto(absl::FromCivil(absl::CivilDay(2026, 2, 1), zone_));
  Fold("inventory", e);
  v1::UsageFilter sem;
  sem.add_categories("sem");
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    SCOPED_TRACE(aggregates ? "aggregates" : "counters");
    v1::UsageFigures f = Figures(absl::CivilDay(2026, 1, 1), absl::CivilDay(2026, 2, 1), sem);
    EXPECT_EQ(f.service_income().amount_minor(), 1000);
    EXPECT_EQ(f.instrument_count(), 1);
  }
}

// users / organisations served: "SME and start-up counts use the
// organisation's size class (inventory) at the time of use."
TEST_F(UsageContractTest, SmeCountsUseTheSizeClassAtTheTimeOfUse) {
  namespace bk = labshare::booking::v1;
  namespace iv = labshare::inventory::v1;
  auto size = [&](iv::SizeClass c) {
    iv::InventoryEvent e;
    auto* o = e.mutable_organization_changed()->mutable_organization();
    o->set_name("organizations/lab");
    o->set_display_name("Lab");
    o->set_size_class(c);
    Fold("inventory", e);
  };
  Register("sem1", "organizations/own");
  size(iv::SME);
  const absl::Time start = absl::FromCivil(absl::CivilSecond(2026, 3, 2, 9, 0, 0), zone_);
  bk::Booking b = LabBooking("b1", "sem1", labshare::type::v1::ON_SITE, start, start + absl::Hours(2));
  *b.mutable_session()->mutable_start_time() = ToProto(start);
  *b.mutable_session()->mutable_end_time() = ToProto(start + absl::Hours(2));
  bk::BookingEvent out;
  *out.mutable_booking_checked_out()->mutable_booking() = b;
  Fold("booking", out);
  size(iv::LARGE);  // grew after the use
  auto expect_sme = [&](const char* how) {
    SCOPED_TRACE(how);
    for (const auto& [from, to] : std::vector<std::pair<absl::CivilDay, absl::CivilDay>>{
             {absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1)},
             {absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1)}}) {
      v1::UsageFigures f = Figures(from, to);
      EXPECT_EQ(f.users_served(), 1);
      EXPECT_EQ(f.sme_users_served(), 1);
      EXPECT_EQ(f.sme_organizations_served(), 1);
      EXPECT_EQ(f.startup_organizations_served(), 0);
    }
  };
  figures_->set_use_aggregates(false);
  expect_sme("counters");
  figures_->set_use_aggregates(true);
  auto rebuilt = figures_->RebuildStaleAggregates();  // the size change made every period stale
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  const int64_t before = figures_->buckets_from_aggregates();
  expect_sme("rebuilt aggregates");
  EXPECT_GT(figures_->buckets_from_aggregates(), before);
}

// bookings: "a booking counts in the period containing ... the time its
// service order was confirmed (TECHNICAL_SERVICE)": one per order, however
// often its run is rescheduled, in the month the quote was accepted; its
// cancellation by the client is a (late) cancelled booking; an order the
// owner declined is a rejected request "in the period containing the request
// time".
TEST_F(UsageContractTest, AServiceOrderCountsOnceWhenConfirmed) {
  namespace bk = labshare::booking::v1;
  Register("nmr", "organizations/own");
  const absl::Time accepted = absl::FromCivil(absl::CivilSecond(2026, 3, 30, 10, 0, 0), zone_);
  bk::ServiceOrder o;
  o.set_name("serviceOrders/o1");
  o.set_instrument("instruments/nmr");
  o.set_client_organization("organizations/lab");
  o.set_requester("users/ana");
  o.set_state(bk::ServiceOrder::QUOTE_ACCEPTED);
  *o.mutable_quote_accept_time() = ToProto(accepted);
  bk::BookingEvent qa;
  *qa.mutable_service_order_quote_accepted()->mutable_service_order() = o;
  Fold("booking", qa);
  // Its run scheduled on 6 April, then moved to 8 April (the first run
  // cancelled by its order, a new one created).
  auto run = [&](const std::string& id, int day) {
    const absl::Time start = absl::FromCivil(absl::CivilDay(2026, 4, day), zone_) + absl::Hours(9);
    bk::Booking b = LabBooking(id, "nmr", labshare::type::v1::TECHNICAL_SERVICE, start, start + absl::Hours(2));
    b.set_service_order(o.name());
    bk::BookingEvent created;
    *created.mutable_booking_created()->mutable_booking() = b;
    Fold("booking", created);
    return b;
  };
  bk::Booking first = run("r1", 6);
  bk::BookingEvent moved;
  *moved.mutable_booking_cancelled()->mutable_booking() = first;
  moved.mutable_booking_cancelled()->set_initiator(bk::Booking::PARENT_RESOURCE);
  Fold("booking", moved);
  // A spare run the staff booked and cancelled themselves (its booker): not
  // a cancellation by the user side.
  *moved.mutable_booking_cancelled()->mutable_booking() = run("r3", 9);
  moved.mutable_booking_cancelled()->set_initiator(bk::Booking::BOOKER);
  Fold("booking", moved);
  bk::Booking second = run("r2", 8);
  // The run starts (and later ends): completed, in the order's month too.
  clock_.Set(absl::FromCivil(absl::CivilSecond(2026, 4, 8, 10, 0, 0), zone_));
  *second.mutable_session()->mutable_start_time() = second.reserved_interval().start_time();
  bk::BookingEvent started;
  *started.mutable_booking_checked_in()->mutable_booking() = second;
  Fold("booking", started);
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    EXPECT_EQ(Figures(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1)).completed_bookings(), 1);
    EXPECT_EQ(Figures(absl::CivilDay(2026, 4, 1), absl::CivilDay(2026, 5, 1)).effective_seconds(), 3600);
  }
  *second.mutable_session()->mutable_end_time() = second.reserved_interval().end_time();
  bk::BookingEvent ended;
  *ended.mutable_booking_checked_out()->mutable_booking() = second;
  Fold("booking", ended);
  // A second order, also accepted in March, the client cancels late before
  // its run; a third is declined by the owner's staff before any quote was
  // accepted (requested in March).
  bk::ServiceOrder o2 = o;
  o2.set_name("serviceOrders/o2");
  *qa.mutable_service_order_quote_accepted()->mutable_service_order() = o2;
  Fold("booking", qa);
  bk::BookingEvent cancelled;
  cancelled.mutable_header()->set_actor_organization("organizations/lab");
  auto* c = cancelled.mutable_service_order_cancelled();
  *c->mutable_service_order() = o2;
  c->mutable_service_order()->set_state(bk::ServiceOrder::CANCELLED);
  c->set_previous_state(bk::ServiceOrder::SCHEDULED);
  c->set_late_cancellation(true);
  Fold("booking", cancelled);
  bk::BookingEvent declined;
  declined.mutable_header()->set_actor_organization("organizations/own");
  auto* d = declined.mutable_service_order_cancelled();
  d->mutable_service_order()->set_name("serviceOrders/o3");
  d->mutable_service_order()->set_instrument("instruments/nmr");
  d->mutable_service_order()->set_client_organization("organizations/lab");
  *d->mutable_service_order()->mutable_create_time() = ToProto(accepted - absl::Hours(24));
  d->set_previous_state(bk::ServiceOrder::QUOTED);
  Fold("booking", declined);
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    SCOPED_TRACE(aggregates ? "aggregates" : "counters");
    const v1::UsageFigures march = Figures(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1));
    EXPECT_EQ(march.cancelled_bookings(), 1);
    EXPECT_EQ(march.late_cancelled_bookings(), 1);
    EXPECT_EQ(march.rejected_requests(), 1);
    EXPECT_EQ(Figures(absl::CivilDay(2026, 4, 1), absl::CivilDay(2026, 5, 1)).cancelled_bookings(), 0);
    EXPECT_EQ(march.completed_bookings(), 1);
    EXPECT_EQ(Figures(absl::CivilDay(2026, 4, 1), absl::CivilDay(2026, 5, 1)).completed_bookings(), 0);
    EXPECT_EQ(Figures(absl::CivilDay(2026, 4, 1), absl::CivilDay(2026, 5, 1)).effective_seconds(), 7200);
    EXPECT_EQ(Figures(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1)).bookings(), 2);  // o1, o2
    EXPECT_EQ(Figures(absl::CivilDay(2026, 4, 1), absl::CivilDay(2026, 5, 1)).bookings(), 0);
    EXPECT_EQ(Figures(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1)).bookings(), 2);
  }
}

// Sessions stay in {usage}:open until their check-out. Two usage replicas on
// one stream (a catch-up) can fold a check-out before its check-in, or
// before a block change of the running session: the closed marker keeps the
// session closed, and every figure is the one of the events in order.
TEST_F(UsageContractTest, ACheckInFoldedAfterItsCheckOutOpensNothing) {
  namespace bk = labshare::booking::v1;
  auto at = [&](int day, int hour, int minute = 0) {
    return absl::FromCivil(absl::CivilSecond(2027, 2, day, hour, minute, 0), zone_);
  };
  auto lifecycle = [&](bk::Booking b, absl::Time in_at, absl::Time out_at) {
    std::vector<bk::BookingEvent> events;
    bk::BookingEvent created;
    *created.mutable_booking_created()->mutable_booking() = b;
    events.push_back(created);
    b.set_state(bk::Booking::CHECKED_IN);
    *b.mutable_session()->mutable_start_time() = ToProto(in_at);
    bk::BookingEvent in;
    *in.mutable_booking_checked_in()->mutable_booking() = b;
    events.push_back(in);
    // The running session's block cut by 30 minutes (a maintenance window).
    *b.mutable_reserved_interval()->mutable_end_time() =
        ToProto(FromProto(b.reserved_interval().end_time()) - absl::Minutes(30));
    bk::BookingEvent cut;
    *cut.mutable_booking_interval_changed()->mutable_booking() = b;
    events.push_back(cut);
    b.set_state(bk::Booking::COMPLETED);
    *b.mutable_session()->mutable_end_time() = ToProto(out_at);
    bk::BookingEvent out;
    *out.mutable_booking_checked_out()->mutable_booking() = b;
    events.push_back(out);
    return events;  // created, in, cut, out
  };
  // On-site on the tem, reserved 10 Feb 09:00-12:00, used 09:30-11:00; a
  // lease of the lathe (6 counted hours a day) handed over 11 Feb 00:00,
  // returned 13 Feb 12:00.
  const auto onsite = lifecycle(LabBooking("b1", "tem", labshare::type::v1::ON_SITE, at(10, 9), at(10, 12)),
                                at(10, 9, 30), at(10, 11));
  const auto lease = lifecycle(LabBooking("l1", "lathe", labshare::type::v1::LEASE, at(11, 0), at(20, 0)),
                               at(11, 0), at(13, 12));
  // A booking its booker cancels, never checked in: no closed marker.
  bk::BookingEvent cancelled;
  *cancelled.mutable_booking_cancelled()->mutable_booking() =
      LabBooking("b2", "tem", labshare::type::v1::ON_SITE, at(14, 9), at(14, 10));
  cancelled.mutable_booking_cancelled()->set_initiator(bk::Booking::BOOKER);
  v1::UsageFilter tem, lathe;
  tem.add_instruments("instruments/tem");
  lathe.add_instruments("instruments/lathe");
  const absl::CivilDay feb(2027, 2, 1), mar(2027, 3, 1), apr(2027, 4, 1);
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 3, 5), zone_));
  // The events in the order given by `order` (indexes into created, in, cut, out).
  for (const std::vector<int>& order : {std::vector<int>{0, 1, 2, 3}, std::vector<int>{0, 3, 1, 2},
                                        std::vector<int>{0, 3, 2, 1}, std::vector<int>{0, 1, 3, 2}}) {
    SCOPED_TRACE(absl::StrCat("order ", order[1], order[2], order[3]));
    Reset();
    Register("tem", "organizations/own");
    RegisterLeasable("lathe", 6);
    for (int i : order) Fold("booking", onsite[static_cast<size_t>(i)]);
    for (int i : order) Fold("booking", lease[static_cast<size_t>(i)]);
    Fold("booking", cancelled);
    EXPECT_EQ(pool_->Command({"HLEN", "{usage}:open"})->integer, 0);
    EXPECT_EQ(pool_->Command({"HLEN", "{usage}:closed"})->integer, 2);
    for (bool aggregates : {true, false}) {
      figures_->set_use_aggregates(aggregates);
      SCOPED_TRACE(aggregates ? "aggregates" : "counters");
      const v1::UsageFigures february = Figures(feb, mar);
      EXPECT_EQ(Figures(feb, mar, tem).effective_seconds(), 5400);
      // 6 h on each of 11, 12 and 13 Feb.
      EXPECT_EQ(Figures(feb, mar, lathe).effective_seconds(), 3 * 6 * 3600);
      EXPECT_EQ(february.effective_seconds(), 5400 + 3 * 6 * 3600);
      EXPECT_EQ(february.external_seconds(), 5400 + 3 * 6 * 3600);
      EXPECT_EQ(february.bookings(), 2);
      EXPECT_EQ(february.completed_bookings(), 2);
      EXPECT_EQ(february.cancelled_bookings(), 1);
      EXPECT_EQ(february.users_served(), 1);
      EXPECT_EQ(february.organizations_served(), 1);
      const v1::UsageFigures march = Figures(mar, apr);
      EXPECT_EQ(march.effective_seconds(), 0);
      EXPECT_EQ(march.completed_bookings(), 0);
      EXPECT_EQ(march.bookings(), 0);
    }
  }
}

// bookings: one per service order "when its service order was confirmed":
// a quote accepted again after a new quote (IssueQuote on a QUOTE_ACCEPTED
// order) counts nothing more, and the order's period stays that of its
// first acceptance (its run's completion, its client's cancellation).
TEST_F(UsageContractTest, AQuoteAcceptedAgainCountsTheOrderOnce) {
  namespace bk = labshare::booking::v1;
  Register("nmr", "organizations/own");
  auto time = [&](int month, int day, int hour) {
    return absl::FromCivil(absl::CivilSecond(2026, month, day, hour, 0, 0), zone_);
  };
  auto accept = [&](bk::ServiceOrder o, absl::Time when) {
    o.set_state(bk::ServiceOrder::QUOTE_ACCEPTED);
    *o.mutable_quote_accept_time() = ToProto(when);
    bk::BookingEvent qa;
    *qa.mutable_service_order_quote_accepted()->mutable_service_order() = o;
    Fold("booking", qa);
    return o;
  };
  bk::ServiceOrder o;
  o.set_name("serviceOrders/o1");
  o.set_instrument("instruments/nmr");
  o.set_client_organization("organizations/lab");
  o.set_requester("users/ana");
  *o.mutable_create_time() = ToProto(time(3, 20, 9));
  accept(o, time(3, 30, 10));
  bk::BookingEvent quoted;
  *quoted.mutable_service_order_quoted()->mutable_service_order() = o;
  Fold("booking", quoted);
  o = accept(o, time(4, 2, 10));
  // Its run on 6 April 09:00-11:00.
  bk::Booking run = LabBooking("r1", "nmr", labshare::type::v1::TECHNICAL_SERVICE, time(4, 6, 9), time(4, 6, 11));
  run.set_service_order(o.name());
  bk::BookingEvent created;
  *created.mutable_booking_created()->mutable_booking() = run;
  Fold("booking", created);
  *run.mutable_session()->mutable_start_time() = run.reserved_interval().start_time();
  *run.mutable_session()->mutable_end_time() = run.reserved_interval().end_time();
  bk::BookingEvent ended;
  *ended.mutable_booking_checked_out()->mutable_booking() = run;
  Fold("booking", ended);
  // A second order, accepted on 30 March and again on 2 April, cancelled
  // late by its client.
  bk::ServiceOrder o2 = o;
  o2.set_name("serviceOrders/o2");
  accept(o2, time(3, 30, 11));
  *quoted.mutable_service_order_quoted()->mutable_service_order() = o2;
  Fold("booking", quoted);
  o2 = accept(o2, time(4, 2, 11));
  bk::BookingEvent cancelled;
  cancelled.mutable_header()->set_actor_organization("organizations/lab");
  auto* c = cancelled.mutable_service_order_cancelled();
  *c->mutable_service_order() = o2;
  c->mutable_service_order()->set_state(bk::ServiceOrder::CANCELLED);
  c->set_previous_state(bk::ServiceOrder::QUOTE_ACCEPTED);
  c->set_late_cancellation(true);
  Fold("booking", cancelled);
  EXPECT_EQ(pool_->Command({"HGET", "{usage}:tsorder", "serviceOrders/o1"})->str,
            std::to_string(absl::ToUnixMillis(time(3, 30, 10))));
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    SCOPED_TRACE(aggregates ? "aggregates" : "counters");
    const v1::UsageFigures march = Figures(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1));
    EXPECT_EQ(march.bookings(), 2);
    EXPECT_EQ(march.completed_bookings(), 1);
    EXPECT_EQ(march.cancelled_bookings(), 1);
    EXPECT_EQ(march.late_cancelled_bookings(), 1);
    EXPECT_EQ(march.rejected_requests(), 0);
    const v1::UsageFigures april = Figures(absl::CivilDay(2026, 4, 1), absl::CivilDay(2026, 5, 1));
    EXPECT_EQ(april.bookings(), 0);
    EXPECT_EQ(april.completed_bookings(), 0);
    EXPECT_EQ(april.cancelled_bookings(), 0);
    EXPECT_EQ(april.late_cancelled_bookings(), 0);
    EXPECT_EQ(april.rejected_requests(), 0);
    EXPECT_EQ(april.effective_seconds(), 7200);
    const v1::UsageFigures year = Figures(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
    EXPECT_EQ(year.bookings(), 2);
    EXPECT_EQ(year.completed_bookings(), 1);
    EXPECT_EQ(year.cancelled_bookings(), 1);
  }
}

// A consumer read is folded as one batch (FoldBatch): an event prepared from
// what an earlier event of the same batch writes (a run's completion counts
// when its order's quote was accepted; a lease's return, the counted hours
// recorded at its handover) sees that write, so a batch gives the figures of
// its events folded one by one.
TEST_F(UsageContractTest, ABatchFoldsLikeItsEventsOneByOne) {
  namespace bk = labshare::booking::v1;
  auto time = [&](int month, int day, int hour) {
    return absl::FromCivil(absl::CivilSecond(2026, month, day, hour, 0, 0), zone_);
  };
  std::vector<bk::BookingEvent> events;
  bk::ServiceOrder o;
  o.set_name("serviceOrders/o1");
  o.set_instrument("instruments/nmr");
  o.set_client_organization("organizations/lab");
  o.set_state(bk::ServiceOrder::QUOTE_ACCEPTED);
  *o.mutable_quote_accept_time() = ToProto(time(3, 30, 10));
  events.emplace_back();
  *events.back().mutable_service_order_quote_accepted()->mutable_service_order() = o;
  // The run on 6 April 09:00-11:00 and the lease of the lathe (handed over
  // 6 April 00:00, returned 7 April 12:00), each created, started, ended.
  for (bk::Booking b : {LabBooking("r1", "nmr", labshare::type::v1::TECHNICAL_SERVICE, time(4, 6, 9), time(4, 6, 11)),
                        LabBooking("l1", "lathe", labshare::type::v1::LEASE, time(4, 6, 0), time(4, 9, 0))}) {
    if (b.mode() == labshare::type::v1::TECHNICAL_SERVICE) b.set_service_order(o.name());
    events.emplace_back();
    *events.back().mutable_booking_created()->mutable_booking() = b;
    *b.mutable_session()->mutable_start_time() = b.reserved_interval().start_time();
    events.emplace_back();
    *events.back().mutable_booking_checked_in()->mutable_booking() = b;
    *b.mutable_session()->mutable_end_time() =
        b.mode() == labshare::type::v1::LEASE ? ToProto(time(4, 7, 12)) : b.reserved_interval().end_time();
    events.emplace_back();
    *events.back().mutable_booking_checked_out()->mutable_booking() = b;
  }
  v1::UsageFilter nmr, lathe;
  nmr.add_instruments("instruments/nmr");
  lathe.add_instruments("instruments/lathe");
  clock_.Set(time(5, 1, 0));
  for (bool batch : {false, true}) {
    SCOPED_TRACE(batch ? "one batch" : "one by one");
    Reset();
    Register("nmr", "organizations/own");
    RegisterLeasable("lathe", 6);
    if (batch) {
      std::vector<StreamEvent> entries;
      for (const auto& e : events) entries.push_back(Entry(e));
      for (const absl::Status& s : figures_->FoldBatch("booking", entries)) EXPECT_TRUE(s.ok()) << s;
    } else {
      for (const auto& e : events) Fold("booking", e);
    }
    for (bool aggregates : {true, false}) {
      figures_->set_use_aggregates(aggregates);
      SCOPED_TRACE(aggregates ? "aggregates" : "counters");
      const v1::UsageFigures march = Figures(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1), nmr);
      EXPECT_EQ(march.bookings(), 1);
      EXPECT_EQ(march.completed_bookings(), 1);
      const v1::UsageFigures april = Figures(absl::CivilDay(2026, 4, 1), absl::CivilDay(2026, 5, 1), nmr);
      EXPECT_EQ(april.bookings(), 0);
      EXPECT_EQ(april.completed_bookings(), 0);
      EXPECT_EQ(april.effective_seconds(), 7200);
      const v1::UsageFigures leased = Figures(absl::CivilDay(2026, 4, 1), absl::CivilDay(2026, 5, 1), lathe);
      EXPECT_EQ(leased.effective_seconds(), 2 * 6 * 3600);
      EXPECT_EQ(leased.bookings(), 1);
      EXPECT_EQ(leased.completed_bookings(), 1);
    }
    EXPECT_EQ(pool_->Command({"HLEN", "{usage}:open"})->integer, 0);
  }
}

// "Streaming exports": ReportExported is published before the last message;
// when it cannot be, the stream ends with the error instead of the trailer
// (a client never holds a trailer of an export that was not recorded).
TEST_F(UsageContractTest, ExportsWhoseEventCannotBePublishedEndWithoutTheirTrailer) {
  // The outbox is broken (a string where the stream should be): XADD fails.
  ASSERT_TRUE(pool_->Command({"SET", "{usage}:outbox", "broken"}).ok());

  v1::ExportAuditTrailRequest audit;
  audit.set_format(v1::AUDIT_EXPORT_FORMAT_JSONL);
  auto ctx = Ctx();
  auto reader = stub_->ExportAuditTrail(ctx.get(), audit);
  v1::ExportAuditTrailResponse m;
  int trailers = 0;
  while (reader->Read(&m)) trailers += m.has_trailer() ? 1 : 0;
  grpc::Status s = reader->Finish();
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(trailers, 0);

  v1::ExportUsageRequest usage;
  usage.set_format(v1::EXPORT_FORMAT_CSV);
  *usage.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2026, 2, 1));
  trailers = 0;
  absl::Status st = figures_->ExportUsage(auditor_, usage, [&](const v1::ExportUsageResponse& r) {
    trailers += r.has_trailer() ? 1 : 0;
    return absl::OkStatus();
  });
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(trailers, 0);

  v1::ExportAnnualReportCsvRequest annual;
  annual.set_year(2026);
  st = figures_->ExportAnnualReportCsv(auditor_, annual, [&](const v1::CsvChunk& c) {
    trailers += c.has_trailer() ? 1 : 0;
    return absl::OkStatus();
  });
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(trailers, 0);

  // Repaired: the same exports end with their trailer, each recorded once.
  ASSERT_TRUE(pool_->Command({"DEL", "{usage}:outbox"}).ok());
  trailers = 0;
  auto ctx2 = Ctx();
  reader = stub_->ExportAuditTrail(ctx2.get(), audit);
  while (reader->Read(&m)) trailers += m.has_trailer() ? 1 : 0;
  s = reader->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(trailers, 1);
  std::vector<v1::UsageEvent> events = Outbox();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].report_exported().kind(), v1::EXPORT_KIND_AUDIT_TRAIL);
  EXPECT_EQ(events[0].report_exported().trailer().row_count(), kEntries);
}

// UsageFigures.other_currency_income: "Postings in currencies other than the
// reporting currency, one entry per currency, never converted and not part of
// service_income or any rate."
TEST_F(UsageContractTest, OtherCurrencyIncomeIsReportedPerCurrency) {
  Register("sem1", "organizations/own");
  const absl::Time feb = absl::FromCivil(absl::CivilDay(2026, 2, 10), zone_);
  Charge("sem1", "organizations/lab", "CNY", 10000, feb);
  Charge("sem1", "organizations/lab", "USD", 2500, feb);
  Charge("sem1", "organizations/uni", "USD", 1200, feb + absl::Hours(2));
  Charge("sem1", "organizations/uni", "USD", -200, feb + absl::Hours(3), /*correction=*/true);
  Charge("sem1", "organizations/lab", "EUR", 700, feb);
  Charge("sem1", "organizations/lab", "JPY", 300, feb);
  Charge("sem1", "organizations/lab", "JPY", -300, feb, /*correction=*/true);  // nets to nothing
  auto other = [](const v1::UsageFigures& f) {
    std::vector<std::string> out;
    for (const auto& m : f.other_currency_income()) out.push_back(absl::StrCat(m.currency_code(), ":", m.amount_minor()));
    return out;
  };
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    v1::UsageFigures f = Figures(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
    EXPECT_EQ(f.service_income().amount_minor(), 10000);
    EXPECT_EQ(other(f), (std::vector<std::string>{"EUR:700", "USD:3500"})) << "aggregates " << aggregates;
    EXPECT_EQ(f.revenue_rate().numerator(), 0);  // no value, and never another currency
    // A month from the aggregates, and a user-side filter from the counters.
    f = Figures(absl::CivilDay(2026, 2, 1), absl::CivilDay(2026, 3, 1));
    EXPECT_EQ(other(f), (std::vector<std::string>{"EUR:700", "USD:3500"}));
    v1::UsageFilter uni;
    uni.add_user_organizations("organizations/uni");
    f = Figures(absl::CivilDay(2026, 2, 1), absl::CivilDay(2026, 3, 1), uni);
    EXPECT_EQ(f.service_income().amount_minor(), 0);
    EXPECT_EQ(other(f), (std::vector<std::string>{"USD:1000"}));
  }
  // EXPORT_FORMAT_CSV: other_currency_income as "CODE:amount" joined by ";".
  v1::ExportUsageRequest csv;
  csv.set_format(v1::EXPORT_FORMAT_CSV);
  *csv.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
  std::string file;
  ASSERT_TRUE(figures_->ExportUsage(auditor_, csv, [&](const v1::ExportUsageResponse& m) {
                        file += m.csv();
                        return absl::OkStatus();
                      }).ok());
  EXPECT_NE(file.find(",10000,0,0,0,EUR:700;USD:3500,"), std::string::npos) << file;
  // The aggregates rebuilt after an attribute change carry them too.
  figures_->set_use_aggregates(true);
  Register("sem1", "organizations/own", "tem");
  auto rebuilt = figures_->RebuildStaleAggregates();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_GT(*rebuilt, 0);
  const int64_t before = figures_->buckets_from_aggregates();
  EXPECT_EQ(other(Figures(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1))),
            (std::vector<std::string>{"EUR:700", "USD:3500"}));
  EXPECT_GT(figures_->buckets_from_aggregates(), before);
}

// GetAnnualReport: the year and the scope's names are checked before the
// page token ({year 2999, page_token "junk"} is INVALID_YEAR, not
// INVALID_PAGE_TOKEN).
TEST_F(UsageContractTest, AnnualReportChecksTheYearBeforeThePageToken) {
  v1::GetAnnualReportRequest r;
  r.set_year(2999);
  r.set_page_token("junk");
  absl::Status s = figures_->GetAnnualReport(auditor_, r).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(ErrorReason(s), "INVALID_YEAR");
  r.set_year(2026);
  r.mutable_scope()->add_facilities("facilities/Not_Valid");
  EXPECT_EQ(ErrorReason(figures_->GetAnnualReport(auditor_, r).status()), "INVALID_NAME");
  r.clear_scope();
  EXPECT_EQ(ErrorReason(figures_->GetAnnualReport(auditor_, r).status()), "INVALID_PAGE_TOKEN");
  // Through gRPC too.
  r.set_year(2999);
  v1::AnnualReport out;
  grpc::Status g = stub_->GetAnnualReport(Ctx().get(), r, &out);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(g), "INVALID_YEAR");
}

// UpdateThresholds: the content of the masked paths is INVALID_ARGUMENT
// before a stale etag is ABORTED (ETAG_MISMATCH); nothing is written.
TEST_F(UsageContractTest, UpdateThresholdsValidatesBeforeTheEtag) {
  const Principal carol{"carol", "", {Role::kConsortiumAdmin}, absl::InfiniteFuture()};
  v1::GetThresholdsRequest get;
  get.set_name("thresholds");
  auto before = figures_->GetThresholds(carol, get);
  ASSERT_TRUE(before.ok()) << before.status();

  v1::UpdateThresholdsRequest u;
  u.mutable_thresholds()->set_name("thresholds");
  u.mutable_thresholds()->set_etag("stale-999");
  auto* band = u.mutable_thresholds()->add_bands();
  band->set_idle_effective_seconds_per_year(-1);  // negative
  u.mutable_update_mask()->add_paths("bands");
  absl::Status s = figures_->UpdateThresholds(carol, u).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(ErrorReason(s), "INVALID_FIELD");
  u.mutable_thresholds()->clear_bands();
  u.mutable_update_mask()->clear_paths();
  u.mutable_update_mask()->add_paths("default_lease_counted_hours_per_day");
  u.mutable_thresholds()->set_default_lease_counted_hours_per_day(25);
  v1::Thresholds out;
  grpc::Status g = stub_->UpdateThresholds(Ctx(Role::kConsortiumAdmin, "ada").get(), u, &out);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(g), "INVALID_FIELD");

  // Valid content of the masked path (the others are not looked at): the
  // stale etag decides.
  u.mutable_thresholds()->set_default_lease_counted_hours_per_day(6);
  s = figures_->UpdateThresholds(carol, u).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_EQ(ErrorReason(s), "ETAG_MISMATCH");
  auto after = figures_->GetThresholds(carol, get);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->SerializeAsString(), before->SerializeAsString());
  // The current etag with valid content applies.
  u.mutable_thresholds()->set_etag(before->etag());
  auto applied = figures_->UpdateThresholds(carol, u);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->default_lease_counted_hours_per_day(), 6);
}

// usage_events.proto: an entry the audit cannot decode gets no audit entry;
// it is logged (a warning naming the stream entry) and acknowledged (OK).
TEST_F(UsageContractTest, UndecodableEventsAreLoggedAndAcknowledged) {
  auto head = audit_->Head();
  ASSERT_TRUE(head.ok());
  labshare::inventory::v1::InventoryEvent no_id;
  no_id.mutable_instrument_changed()->mutable_instrument()->set_name("instruments/x");
  const std::vector<StreamEvent> events = {
      {"7-1", "labshare.nothing.v1.Unknown", "abc"},
      {"7-2", "labshare.inventory.v1.InventoryEvent", "\xff\xff\xff"},
      {"7-3", "labshare.inventory.v1.InventoryEvent", no_id.SerializeAsString()},
  };
  SetQuietLogging(false);
  ::testing::internal::CaptureStderr();
  std::vector<absl::Status> batch = ApplyEvents(audit_.get(), figures_.get(), "inventory", events);
  absl::Status one = ApplyEvent(audit_.get(), figures_.get(), "inventory", {"7-4", "", "x"});
  FlushLogs();
  const std::string log = ::testing::internal::GetCapturedStderr();
  SetQuietLogging(true);
  ASSERT_EQ(batch.size(), events.size());
  for (const auto& st : batch) EXPECT_TRUE(st.ok()) << st;
  EXPECT_TRUE(one.ok()) << one;
  for (const char* id : {"7-1", "7-2", "7-3", "7-4"}) {
    EXPECT_NE(log.find(absl::StrCat("\"stream_id\":\"", id, "\"")), std::string::npos) << id << "\n" << log;
  }
  EXPECT_NE(log.find("event acknowledged without an audit entry"), std::string::npos) << log;
  auto after = audit_->Head();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->sequence(), head->sequence());
}

}  // namespace
}  // namespace labshare::usage
