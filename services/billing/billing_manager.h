// The billing use cases: booking events turned into charges exactly once,
// subsidy pools, the ledger's balances, invoices and settlement. Prices and
// postings come from billing_rules (pure); this class reads and writes the
// store and inventory.
#ifndef LABSHARE_SERVICES_BILLING_BILLING_MANAGER_H_
#define LABSHARE_SERVICES_BILLING_BILLING_MANAGER_H_

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/page_token.h"
#include "common/token.h"
#include "labshare/billing/v1/billing.grpc.pb.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "services/billing/billing_store.h"

namespace labshare::billing {

namespace v1 = labshare::billing::v1;
namespace inv = labshare::inventory::v1;
struct AccountRef;  // billing_rules.h

// The owner's figures from a charge posted at `now` (billing_events.proto
// IncomeFigures), and the same with every amount negated (a reversal).
v1::IncomeFigures IncomeOf(const v1::Charge& charge, absl::Time now);
v1::IncomeFigures NegatedIncome(v1::IncomeFigures figures);
// The signed changes the entries of `postings` (corrections posted at `now`)
// make to the owners' INCOME, IN_KIND_CONTRIBUTION, INTERNAL_USE and
// COMPENSATION accounts: one IncomeFigures per owner organisation whose
// income accounts they touch, keyed by `charge` when they correct one
// (CorrectionPosted.income_deltas). With `of_subsidy` (the postings correct
// a SUBSIDY posting, or a correction of one) their entries on an owner's
// RECEIVABLE from an organisation change that payer's subsidised part too:
// a credit (the payer owes less, a pool pays) adds to it, a debit takes
// from it; such an owner has figures even when no income account moved.
std::vector<v1::IncomeFigures> IncomeDeltasOf(const std::vector<v1::Posting>& postings, const v1::Charge* charge,
                                              absl::Time now, bool of_subsidy = false);

// What billing reads from inventory.
class InventoryReader {
 public:
  virtual ~InventoryReader() = default;
  virtual absl::StatusOr<inv::LookupRateResponse> LookupRate(const inv::LookupRateRequest& r) = 0;
  virtual absl::StatusOr<inv::Instrument> GetInstrument(const std::string& name) = 0;
  virtual absl::StatusOr<inv::Organization> GetOrganization(const std::string& name) = 0;
};

// The payment term: an invoice is due this many days after its issue
// (Invoice.due_time); labshare-billing --payment_term_days, checked at
// start-up to be within 1..kMaxPaymentTermDays.
inline constexpr int kDefaultPaymentTermDays = 30;
inline constexpr int kMaxPaymentTermDays = 365;

class BillingManager {
 public:
  // All pointers must outlive the manager. `zone`: the consortium time zone
  // of billing periods; `payment_term_days`: see kDefaultPaymentTermDays.
  BillingManager(BillingStore* store, InventoryReader* inventory, const Clock* clock,
                 absl::TimeZone zone, PageTokenCodec page_tokens,
                 int payment_term_days = kDefaultPaymentTermDays);

  // Applies one entry of a booking outbox exactly once (keyed by the
  // event's id, in the same atomic step as its charges and postings).
  // Events that bill nothing are acknowledged without a step.
  absl::Status ApplyBookingEvent(const StreamEvent& event);

  // The same for a batch of entries of one outbox, in stream order, with
  // the same effects as ApplyBookingEvent on each in turn: one status per
  // event. Far fewer round trips: one HMGET of the applied markers, inventory
  // answers asked once per batch, and the ledger steps of consecutive events
  // applied by one Lua call (each step with its own apply-once marker,
  // checks and writes, in order; the call stops at the first step that
  // cannot apply, and that event and the ones after it take the per-event
  // path). Lease events read what earlier events wrote (the deposit, the
  // rent charged), so the steps built before one are applied first and the
  // lease event itself takes the per-event path.
  std::vector<absl::Status> ApplyBookingEvents(const std::vector<StreamEvent>& events);

  absl::StatusOr<v1::Charge> GetCharge(const Principal& p, const v1::GetChargeRequest& r);
  absl::StatusOr<v1::ListChargesResponse> ListCharges(const Principal& p, const v1::ListChargesRequest& r);
  absl::StatusOr<v1::Posting> GetPosting(const Principal& p, const v1::GetPostingRequest& r);
  absl::StatusOr<v1::AccountBalance> GetAccountBalance(const Principal& p, const v1::GetAccountBalanceRequest& r);
  absl::StatusOr<v1::Deposit> GetDeposit(const Principal& p, const v1::GetDepositRequest& r);

  absl::StatusOr<v1::SubsidyPool> CreateSubsidyPool(const Principal& p, const v1::CreateSubsidyPoolRequest& r);
  absl::StatusOr<v1::SubsidyPool> GetSubsidyPool(const Principal& p, const v1::GetSubsidyPoolRequest& r);
  absl::StatusOr<v1::ListSubsidyPoolsResponse> ListSubsidyPools(const Principal& p,
                                                                const v1::ListSubsidyPoolsRequest& r);
  absl::StatusOr<v1::SubsidyPool> UpdateSubsidyPool(const Principal& p, const v1::UpdateSubsidyPoolRequest& r);
  absl::StatusOr<v1::SubsidyPool> TopUpSubsidyPool(const Principal& p, const v1::TopUpSubsidyPoolRequest& r);

  absl::StatusOr<v1::Invoice> PreviewInvoice(const Principal& p, const v1::PreviewInvoiceRequest& r);
  absl::StatusOr<v1::Invoice> IssueInvoice(const Principal& p, const v1::IssueInvoiceRequest& r);
  absl::StatusOr<v1::Invoice> GetInvoice(const Principal& p, const v1::GetInvoiceRequest& r);
  // The issued invoice as a PDF or CSV file (invoice_document.h).
  absl::StatusOr<v1::InvoiceDocument> GetInvoiceDocument(const Principal& p,
                                                         const v1::GetInvoiceDocumentRequest& r);
  absl::StatusOr<v1::Settlement> ComputeSettlement(const Principal& p, const v1::ComputeSettlementRequest& r);
  absl::StatusOr<v1::Settlement> GetSettlement(const Principal& p, const v1::GetSettlementRequest& r);

  // billing_payments.cc
  absl::StatusOr<v1::Payment> RecordPayment(const Principal& p, const v1::RecordPaymentRequest& r);
  absl::StatusOr<v1::Invoice> MarkInvoicePaid(const Principal& p, const v1::MarkInvoicePaidRequest& r);
  absl::StatusOr<v1::Invoice> VoidInvoice(const Principal& p, const v1::VoidInvoiceRequest& r);
  absl::StatusOr<v1::PostCorrectionResponse> PostCorrection(const Principal& p, const v1::PostCorrectionRequest& r);
  absl::StatusOr<v1::OrganizationStatement> GetOrganizationStatement(const Principal& p,
                                                                     const v1::GetOrganizationStatementRequest& r);
  absl::StatusOr<v1::OwnerIncomeReport> GetOwnerIncomeReport(const Principal& p,
                                                             const v1::GetOwnerIncomeReportRequest& r);
  absl::StatusOr<v1::ListBalancesResponse> ListBalances(const Principal& p, const v1::ListBalancesRequest& r);

  // billing_lists.cc
  absl::StatusOr<v1::ListInvoicesResponse> ListInvoices(const Principal& p, const v1::ListInvoicesRequest& r);
  absl::StatusOr<v1::ListPostingsResponse> ListPostings(const Principal& p, const v1::ListPostingsRequest& r);
  absl::StatusOr<v1::ListDepositsResponse> ListDeposits(const Principal& p, const v1::ListDepositsRequest& r);
  absl::StatusOr<v1::Payment> GetPayment(const Principal& p, const v1::GetPaymentRequest& r);
  absl::StatusOr<v1::ListPaymentsResponse> ListPayments(const Principal& p, const v1::ListPaymentsRequest& r);
  absl::StatusOr<v1::ListSettlementsResponse> ListSettlements(const Principal& p, const v1::ListSettlementsRequest& r);
  absl::StatusOr<v1::SubsidyAllowance> GetSubsidyAllowance(const Principal& p, const v1::GetSubsidyAllowanceRequest& r);

  // Posts the LEASE_PERIOD charges of leases still out for every billing
  // period that has ended (once per lease and period). The service runs it
  // periodically; safe on every replica. Returns how many were posted.
  absl::StatusOr<int> ChargeEndedLeasePeriods();

  // Rewrites the index members of the earlier form ("<ms, 15 digits>|<id>")
  // of postings, charges, deposits, payments and settlements to the
  // nanosecond form (keys::IndexMember) at their document's create_time,
  // so that lists order by create_time then name to the nanosecond. Each
  // member moves in one atomic step (removed, then added only if this call
  // removed it): safe on every start and on several replicas at once.
  // Returns how many members it moved.
  absl::StatusOr<int> MigrateIndexMembers();

  // Adds every issued invoice missing from its period and currency's set
  // (keys::PeriodInvoices: issued before the sets existed, or by a replica
  // that did not write them) when keys::PeriodInvoiceCount says one is
  // missing; nothing otherwise. Each invoice is added, and counted, in one
  // atomic step, once: safe on every start, replica and ComputeSettlement.
  // Returns how many it added.
  absl::StatusOr<int> IndexPeriodInvoices();

  // Long indexes (every invoice ever issued, the invoices of a period and
  // currency, the settlements of a period) are read in pages of this many
  // members, never cut at a fixed count. Default 1000; tests set a small
  // page to cross page boundaries with a few documents.
  void set_index_page(int members) { index_page_ = std::max(1, members); }

  // Every account's balance (debit minus credit, per counterparty).
  absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> AllBalances() const;

 private:
  // The time of a dated step (LedgerStep::stamp) built now: the clock, or
  // just after the ledger's latest stamp when the clock is behind it (a
  // replica's clock behind another's, a step that lost a race): postings
  // are never back-dated, also across replicas.
  absl::Time StampNow() const;
  struct Priced {
    std::vector<v1::Charge> charges;
    // Postings that are not charges (deposit release and application).
    std::vector<v1::Posting> postings;
    std::optional<v1::Deposit> deposit;
    int64_t deposit_version = 0;
    std::optional<labshare::booking::v1::Lease> lease_out;  // handed over: rent runs
    std::string lease_done;                                  // returned: rent stopped
  };
  struct IngestBatch;  // billing_manager.cc
  // The step applying one booking event (nullopt: it bills nothing).
  absl::StatusOr<std::optional<LedgerStep>> BookingStep(const StreamEvent& event,
                                                        const labshare::booking::v1::BookingEvent& e,
                                                        IngestBatch* batch);
  InventoryReader& Inventory(IngestBatch* batch) const;
  absl::StatusOr<int64_t> Counter(IngestBatch* batch, const std::string& key, const std::string& field) const;
  // Applies the batch's built steps (one Lua call); the events whose step
  // did not apply take the per-event path. Sets their statuses.
  void Flush(IngestBatch& batch, const std::vector<StreamEvent>& events, std::vector<absl::Status>& statuses);
  absl::StatusOr<std::vector<v1::Charge>> UnchargedLeasePeriods(const labshare::booking::v1::Lease& lease,
                                                                absl::Time until);
  absl::StatusOr<Priced> Price(const labshare::booking::v1::BookingEvent& e, IngestBatch* batch = nullptr);
  // On a lease's return: re-prices each period whose rent was charged before
  // (the lease as at handover, charged at the period's end) with the return
  // applied, and adds to `step` a CORRECTION of each difference: the rent's
  // CHARGE posting reduced by it (reversed in full, the charge REVERSED, for
  // a period after the return), its SUBSIDY postings reduced to what the
  // pools pay of the new amount (pool balance and cap usage given back), the
  // charge ADJUSTED, and one CorrectionPosted per charge. Corrections are
  // posted now, never back-dated; the step's event marker keeps them once.
  // A charge corrected before (not POSTED, or any of its CHARGE and
  // SUBSIDY postings corrected) is left as it stands, logged
  // (billing.proto LEASE_PERIOD).
  absl::Status CorrectChargedRent(LedgerStep& step, const labshare::booking::v1::Lease& returned, absl::Time now,
                                  const std::string& request_id, const std::string& trace_id);
  // The rate line for `payer` at `at`, looked up at the payer class and
  // tier booking recorded (`payer_class` unset, as on events from before
  // booking recorded it: inventory's class of the organisation now).
  absl::StatusOr<v1::AppliedRate> RateFor(const std::string& instrument, labshare::type::v1::SharingMode mode,
                                          const std::string& payer, absl::Time at,
                                          labshare::type::v1::PayerClass payer_class, const std::string& tier,
                                          const std::string& service_entry, IngestBatch* batch = nullptr);
  // Adds the subsidy lines, totals and postings of one charge to the step;
  // its events carry `request_id` and `trace_id` (the causing event's; ""
  // for none).
  absl::Status PostCharge(LedgerStep& step, v1::Charge& charge, const std::string& event_id, absl::Time now,
                          const std::string& request_id, const std::string& trace_id,
                          IngestBatch* batch = nullptr);
  void AddPosting(LedgerStep& step, const v1::Posting& posting, absl::Time now);
  // The balance, after `postings` are added to `step`, of every pool whose
  // POOL_FUNDS they touch (CorrectionPosted.pool_balances, by pool name);
  // the step checks each balance is still the one read.
  absl::StatusOr<std::vector<v1::PoolBalance>> PoolBalancesAfter(LedgerStep& step,
                                                                 const std::vector<v1::Posting>& postings) const;
  // The kind of the posting a chain of corrections starts from: `posting`'s
  // own kind unless it is a CORRECTION, else its corrected posting's root.
  absl::StatusOr<v1::PostingKind> RootKindOf(const v1::Posting& posting) const;
  absl::StatusOr<std::vector<v1::SubsidyPool>> LoadPools() const;
  // With each pool document's version and the pool-set generation
  // (keys::PoolGeneration), read before the index.
  absl::StatusOr<std::vector<v1::SubsidyPool>> LoadPools(std::vector<int64_t>* versions, int64_t* generation) const;
  // OK, or NOT_FOUND SUBSIDY_POOL_NOT_FOUND for a "subsidyPools/{id}" not created.
  absl::Status PoolExists(const std::string& pool) const;
  // OK, or NOT_FOUND for a party that does not exist: SUBSIDY_POOL_NOT_FOUND
  // for a pool not created, ORGANIZATION_NOT_FOUND (from inventory;
  // INVENTORY_UNAVAILABLE when it cannot answer) for an organisation.
  absl::Status PartiesExist(const std::set<std::string>& parties) const;
  // GetAccountBalance once the account is parsed and its reader allowed. An
  // empty r.counterparty means every counterparty, unless
  // `exact_counterparty` (ListBalances' group_by_counterparty row of the
  // entries that name none): then only entries without one.
  // With `through` (ListBalances' later pages without as_of_time: the
  // first page's time), the entries created at or before it count and the
  // balance is as of it.
  absl::StatusOr<v1::AccountBalance> ReadBalance(const AccountRef& ref, const v1::GetAccountBalanceRequest& r,
                                                 bool exact_counterparty = false,
                                                 std::optional<absl::Time> through = std::nullopt) const;
  // A pool's POOL_FUNDS balance (what it can still grant).
  absl::StatusOr<int64_t> PoolBalance(const v1::SubsidyPool& pool) const;
  // How many postings other than top-ups changed the pool (keys::PoolChanges).
  absl::StatusOr<int64_t> PoolChangeCount(const std::string& pool_id) const;
  absl::StatusOr<v1::Invoice> Draft(const std::string& payer, const std::string& period,
                                    const std::string& currency);
  absl::StatusOr<std::vector<v1::Posting>> PostingsBetween(absl::Time from, absl::Time to) const;
  // The COMPUTED settlements of a period (any currency), oldest first.
  absl::StatusOr<std::vector<v1::Settlement>> ComputedSettlements(const std::string& period) const;
  // The settlement an invoice is in (Invoice.settlement; an ISSUED invoice
  // is paid only through its transfers): the one it names, or, for a
  // settlement computed before settlements named their invoices, the newest
  // COMPUTED settlement of its period and currency that lists it; "" when
  // none. `computed` caches ComputedSettlements by period across calls.
  using ComputedCache = std::map<std::string, std::vector<v1::Settlement>>;
  absl::StatusOr<std::string> HeldBy(const v1::Invoice& inv, ComputedCache* computed = nullptr) const;
  // The stored invoice `name` as GetInvoice checks it (the caller's scope,
  // the name; a member only its own organisation's, as payer or payee),
  // without its settlement: nullopt when there is none.
  absl::StatusOr<std::optional<v1::Invoice>> InvoiceInScope(const Principal& p, const std::string& name) const;

  // Clears `s` in `step` (every transfer paid, or none to pay): CLEARED,
  // its SETTLEMENT_NETTING posting, each of `invoices` (its invoices, with
  // their versions) still ISSUED in it PAID; the InvoicePaid and
  // SettlementCleared events appended to `events`.
  absl::Status ClearSettlement(const Principal& p, absl::Time now, const std::string& request_id, v1::Settlement& s,
                               std::vector<std::pair<v1::Invoice, int64_t>> invoices, LedgerStep& step,
                               std::vector<std::string>& events);

  BillingStore* store_;
  InventoryReader* inventory_;
  const Clock* clock_;
  absl::TimeZone zone_;
  PageTokenCodec page_tokens_;
  absl::Duration payment_term_;
  int index_page_ = 1000;
};

}  // namespace labshare::billing

#endif  // LABSHARE_SERVICES_BILLING_BILLING_MANAGER_H_
