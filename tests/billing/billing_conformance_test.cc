// Billing against its contract (issue 12): re-issued invoices linked both
// ways, deposits after the lease closes (held amount, listed once, the
// DEPOSIT_APPLIED memo line), invoices that do not depend on the order in
// which events were consumed, and "a rejected request writes nothing": money
// inputs range-checked up front, and every multi-write ledger step driven
// into each of its failure paths (every counter it increments pushed past the
// limit, every key it writes of the wrong type, a stale check, a reused
// request id) with the whole store compared before and after.
//
// Runs billing in process over the booking fixture (real Redis, inventory and
// booking over real gRPC, fake clock).
#include <algorithm>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "tests/billing/direct_inventory.h"
#include "tests/booking/booking_fixture.h"

namespace labshare::billing {
namespace {

namespace bk = labshare::booking::v1;
using booking::BookingServiceTest;
using Snapshot = std::map<std::string, std::string>;  // key -> TYPE + DUMP

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
// The documented limits (billing.proto, Rounding): money inputs at most
// 10^15 minor units; ledger counters within +-(2^53 - 1).
constexpr int64_t kMaxAmount = 1000000000000000;
constexpr int64_t kLimit = (int64_t{1} << 53) - 1;

class BillingConformanceTest : public BookingServiceTest {
 protected:
  void SetUp() override {
    BookingServiceTest::SetUp();
    reader_ = std::make_unique<testing::DirectInventory>(inv_manager_.get());
    bstore_ = std::make_unique<BillingStore>(pool_.get());
    billing_ = std::make_unique<BillingManager>(bstore_.get(), reader_.get(), &clock_,
                                                *LoadBillingTimeZone("Asia/Shanghai"), labshare::testing::TestPageTokens());
    admin_p_.user_id = "root";
    admin_p_.roles = {Role::kConsortiumAdmin};
  }

  // Every booking event so far, in outbox order (partition by partition).
  std::vector<StreamEvent> BookingEvents() {
    std::vector<StreamEvent> out;
    for (int p = 0; p < booking::kPartitions; ++p) {
      auto raw = pool_->Command({"XRANGE", booking::keys::Outbox(p), "-", "+"});
      EXPECT_TRUE(raw.ok());
      if (!raw.ok()) continue;
      for (const auto& entry : raw->elements) {
        StreamEvent e;
        e.stream_id = entry.elements[0].str;
        e.type = entry.elements[1].elements[1].str;
        e.payload = entry.elements[1].elements[3].str;
        out.push_back(std::move(e));
      }
    }
    return out;
  }

  // Applies every booking event not applied yet (applying twice is a no-op).
  void Drain(BillingManager* billing = nullptr) {
    for (const auto& e : BookingEvents()) {
      auto s = (billing ? billing : billing_.get())->ApplyBookingEvent(e);
      EXPECT_TRUE(s.ok()) << s;
    }
  }

  // Books every [from, to) first (min notice 2 h from now), then checks in
  // at each start and out at each end, in time order.
  void Sessions(std::vector<std::pair<absl::Duration, absl::Duration>> slots) {
    std::vector<std::pair<absl::Duration, std::string>> names;
    for (const auto& [from, to] : slots) {
      bk::Booking b;
      ASSERT_TRUE(Book(from, to, &b).ok());
      names.emplace_back(from, b.name());
    }
    std::sort(slots.begin(), slots.end());
    std::sort(names.begin(), names.end());
    for (size_t i = 0; i < slots.size(); ++i) {
      bk::Booking done;
      clock_.Set(day_ + slots[i].first);
      bk::CheckInRequest ci;
      ci.set_name(names[i].second);
      ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &done, ana_).ok());
      clock_.Set(day_ + slots[i].second);
      bk::CheckOutRequest co;
      co.set_name(names[i].second);
      ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckOut, co, &done, ana_).ok());
    }
  }
  void Session(absl::Duration from, absl::Duration to) { Sessions({{from, to}}); }

  // A lease of afm (3000.00 a day) for `lab`, handed over at day_ + 24 h,
  // returned at day_ + 6 days with `damage`, then closed.
  bk::Lease LeaseReturnedWithDamage(int64_t deposit, int64_t damage, bool close = true) {
    bk::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument("instruments/afm");
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24));
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 11));
    bk::Lease lease, out;
    EXPECT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RequestLease, r, &lease, ana_).ok());
    bk::ApproveLeaseRequest a;
    a.set_name(lease.name());
    a.mutable_contract()->set_rate_basis(bk::LeaseContract::DAILY);
    *a.mutable_contract()->mutable_rate() = MakeMoney("CNY", 300000);
    *a.mutable_contract()->mutable_deposit() = MakeMoney("CNY", deposit);
    EXPECT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::ApproveLease, a, &out, staff_).ok());
    bk::RecordHandoverRequest h;
    h.set_name(lease.name());
    h.set_condition_notes("tip new");
    clock_.Set(day_ + absl::Hours(24));
    EXPECT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_).ok());
    clock_.Set(day_ + absl::Hours(24 * 6));
    bk::RecordReturnRequest ret;
    ret.set_name(lease.name());
    ret.set_condition_notes("stage scratched");
    if (damage > 0) *ret.mutable_damage_amount() = MakeMoney("CNY", damage);
    EXPECT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordReturn, ret, &out, staff_).ok());
    if (close) {
      bk::CloseLeaseRequest c;
      c.set_name(lease.name());
      EXPECT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CloseLease, c, &out, staff_).ok());
    }
    return lease;
  }

  void CreatePool(const std::string& id, int32_t bps, int64_t top_up) {
    v1::CreateSubsidyPoolRequest cp;
    cp.set_subsidy_pool_id(id);
    cp.mutable_subsidy_pool()->set_display_name(id);
    cp.mutable_subsidy_pool()->set_currency_code("CNY");
    cp.mutable_subsidy_pool()->set_percentage_bps(bps);
    *cp.mutable_subsidy_pool()->mutable_cap_per_organization() = MakeMoney("CNY", 1000000000);
    cp.mutable_subsidy_pool()->set_cap_period_kind(v1::YEARLY);
    auto created = billing_->CreateSubsidyPool(admin_p_, cp);
    ASSERT_TRUE(created.ok()) << created.status();
    if (top_up == 0) return;
    v1::TopUpSubsidyPoolRequest top;
    top.set_name("subsidyPools/" + id);
    *top.mutable_amount() = MakeMoney("CNY", top_up);
    auto topped = billing_->TopUpSubsidyPool(admin_p_, top);
    ASSERT_TRUE(topped.ok()) << topped.status();
  }

  // ---------------------------------------------------------------- store snapshots

  // Every key of the store (billing's and everyone else's) with its type and
  // content in a canonical form (DUMP would do, except that a hash in
  // hashtable encoding may serialise in another order after mere reads):
  // equal snapshots mean nothing was written.
  Snapshot Take() {
    Snapshot out;
    auto keys = pool_->Command({"KEYS", "*"});
    EXPECT_TRUE(keys.ok());
    if (!keys.ok()) return out;
    auto flat = [](const RedisValue& v) {
      std::string s;
      std::function<void(const RedisValue&)> add = [&](const RedisValue& x) {
        if (x.is_array()) {
          absl::StrAppend(&s, "[");
          for (const auto& e : x.elements) add(e);
          absl::StrAppend(&s, "]");
        } else {
          absl::StrAppend(&s, x.str.size(), ":", x.str, x.integer, ";");
        }
      };
      add(v);
      return s;
    };
    for (const auto& k : keys->elements) {
      auto type = pool_->Command({"TYPE", k.str});
      EXPECT_TRUE(type.ok());
      if (!type.ok()) continue;
      std::string content;
      if (type->str == "hash") {
        auto all = bstore_->HashAll(k.str);
        EXPECT_TRUE(all.ok());
        std::sort(all->begin(), all->end());
        for (const auto& [f, v] : *all) absl::StrAppend(&content, f.size(), ":", f, "=", v.size(), ":", v, ";");
      } else if (type->str == "zset") {
        content = flat(*pool_->Command({"ZRANGE", k.str, "0", "-1", "WITHSCORES"}));
      } else if (type->str == "list") {
        content = flat(*pool_->Command({"LRANGE", k.str, "0", "-1"}));
      } else if (type->str == "stream") {
        content = flat(*pool_->Command({"XRANGE", k.str, "-", "+"})) +
                  flat(*pool_->Command({"XINFO", "GROUPS", k.str}));
      } else if (type->str == "set") {
        auto m = pool_->Command({"SMEMBERS", k.str});
        std::vector<std::string> v;
        for (const auto& e : m->elements) v.push_back(e.str);
        std::sort(v.begin(), v.end());
        content = absl::StrJoin(v, "\n");
      } else {
        content = flat(*pool_->Command({"DUMP", k.str}));
      }
      out[k.str] = type->str + "|" + content;
    }
    return out;
  }

  // DUMP of every key, to put the store back exactly (TTLs dropped).
  std::map<std::string, std::string> Dump() {
    std::map<std::string, std::string> out;
    auto keys = pool_->Command({"KEYS", "*"});
    EXPECT_TRUE(keys.ok());
    for (const auto& k : keys->elements) out[k.str] = pool_->Command({"DUMP", k.str})->str;
    return out;
  }

  // The keys that differ between two snapshots, for failure messages.
  static std::string Diff(const Snapshot& a, const Snapshot& b) {
    std::string out;
    for (const auto& [k, v] : a) {
      auto it = b.find(k);
      if (it == b.end() || it->second != v) absl::StrAppend(&out, k, " ");
    }
    for (const auto& [k, v] : b) {
      if (!a.count(k)) absl::StrAppend(&out, k, " ");
    }
    return out;
  }

  // Puts the store back exactly as it was when `d` was dumped.
  void Restore(const std::map<std::string, std::string>& d) {
    ASSERT_TRUE(pool_->Command({"FLUSHALL"}).ok());
    for (const auto& [key, v] : d) {
      auto r = pool_->Command({"RESTORE", key, "0", v});
      ASSERT_TRUE(r.ok()) << key << " " << r.status();
    }
  }

  // Ledger counters: every field of the balances hash and of every pool's
  // cap-usage hash, "<key> <field>" -> value.
  std::map<std::string, int64_t> Counters() {
    std::map<std::string, int64_t> out;
    auto keys = pool_->Command({"KEYS", "{billing}:cap:*"});
    EXPECT_TRUE(keys.ok());
    std::vector<std::string> hashes = {keys::Balances()};
    for (const auto& k : keys->elements) hashes.push_back(k.str);
    for (const auto& h : hashes) {
      auto all = bstore_->HashAll(h);
      EXPECT_TRUE(all.ok());
      for (const auto& [f, v] : *all) {
        int64_t n = 0;
        EXPECT_TRUE(absl::SimpleAtoi(v, &n)) << h << " " << f << " = " << v;
        out[h + " " + f] = n;
      }
    }
    return out;
  }

  struct Change {
    std::set<std::string> keys_written;                // created or changed
    std::vector<std::pair<std::string, int64_t>> counters;  // "<key> <field>", net delta
  };

  // Runs `op` once from the current state (it must succeed), records what it
  // wrote, and puts the store back as it was.
  Change Learn(const std::function<absl::Status()>& op) {
    const auto dump = Dump();
    const Snapshot before = Take();
    const auto counters_before = Counters();
    const absl::Status s = op();
    EXPECT_TRUE(s.ok()) << "the operation must succeed from the base state: " << s;
    Change c;
    for (const auto& [key, v] : Take()) {
      auto it = before.find(key);
      if (it == before.end() || it->second != v) c.keys_written.insert(key);
    }
    for (const auto& [field, v] : Counters()) {
      auto it = counters_before.find(field);
      const int64_t delta = v - (it == counters_before.end() ? 0 : it->second);
      if (delta != 0) c.counters.emplace_back(field, delta);
    }
    Restore(dump);
    return c;
  }

  // The heart of "a rejected request writes nothing". From the current
  // state, `op` succeeds; then, each time from that same state:
  //  - every counter it increments is seeded so that its increment crosses
  //    the ledger limit by one minor unit: `op` must fail and leave the whole
  //    store as it was (or, where the seed changes what `op` decides, e.g. a
  //    pool that now looks empty grants nothing, succeed with every counter
  //    still within the limit);
  //  - every key it writes is replaced by a value of the wrong type: `op`
  //    must fail and leave the store as it was.
  // Returns how many counters it increments.
  int ExpectRejectedStepsWriteNothing(const std::string& what, const std::function<absl::Status()>& op,
                                      const std::set<std::string>& may_decide_otherwise = {}) {
    const std::set<std::string> random_names = {"{billing}:payment:", "{billing}:posting:"};
    SCOPED_TRACE(what);
    const auto base = Dump();
    const Change change = Learn(op);
    EXPECT_FALSE(change.keys_written.empty());
    for (const auto& [counter, delta] : change.counters) {
      SCOPED_TRACE(counter);
      Restore(base);
      const std::string key = counter.substr(0, counter.find(' '));
      const std::string field = counter.substr(counter.find(' ') + 1);
      const int64_t seed = delta > 0 ? kLimit - delta + 1 : -kLimit - delta - 1;
      EXPECT_TRUE(pool_->Command({"HSET", key, field, std::to_string(seed)}).ok());
      const Snapshot seeded = Take();
      const absl::Status s = op();
      bool exempt = false;
      for (const auto& m : may_decide_otherwise) exempt |= absl::StrContains(counter, m);
      if (!s.ok() || !exempt) {
        EXPECT_FALSE(s.ok()) << delta;
        const Snapshot after = Take();
        EXPECT_TRUE(after == seeded) << "a rejected step wrote " << Diff(seeded, after) << ": " << s;
      }
      for (const auto& [c, v] : Counters()) {
        EXPECT_LE(v, kLimit) << c;
        EXPECT_GE(v, -kLimit) << c;
      }
    }
    for (const auto& key : change.keys_written) {
      SCOPED_TRACE("wrong type: " + key);
      Restore(base);
      EXPECT_TRUE(pool_->Command({"SET", key, "not what billing wrote"}).ok());
      const Snapshot seeded = Take();
      const absl::Status s = op();
      if (s.ok() && random_names.count(key.substr(0, key.rfind(':') + 1))) {
        // A name drawn at random (a payment's): this run wrote another one.
        EXPECT_EQ(pool_->Command({"GET", key})->str, "not what billing wrote");
        continue;
      }
      EXPECT_FALSE(s.ok());
      const Snapshot after = Take();
      EXPECT_TRUE(after == seeded) << "a rejected step wrote " << Diff(seeded, after) << ": " << s;
    }
    Restore(base);
    return static_cast<int>(change.counters.size());
  }

  std::unique_ptr<testing::DirectInventory> reader_;
  std::unique_ptr<BillingStore> bstore_;
  std::unique_ptr<BillingManager> billing_;
  Principal admin_p_;
};

absl::Time Feb2() { return absl::FromCivil(absl::CivilDay(2027, 2, 2), absl::UTCTimeZone()); }

// ================================================================ item 1: replaces / replaced_by

TEST_F(BillingConformanceTest, ReissuedInvoiceAndTheVoidedOneLinkEachOther) {
  Session(absl::Hours(9), absl::Hours(10));
  Drain();
  clock_.Set(Feb2());
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  issue.set_request_id("issue-1");
  auto first = billing_->IssueInvoice(admin_p_, issue);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->replaces(), "");

  v1::VoidInvoiceRequest v;
  v.set_name(first->name());
  v.set_reason("wrong contact");
  ASSERT_TRUE(billing_->VoidInvoice(admin_p_, v).ok());
  issue.set_request_id("issue-2");
  auto second = billing_->IssueInvoice(admin_p_, issue);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->number(), "LS-CNY-2027-000002");
  EXPECT_EQ(second->replaces(), first->name());
  EXPECT_EQ(second->amount_due().amount_minor(), 50000);
  v1::GetInvoiceRequest get;
  get.set_name(first->name());
  auto voided = billing_->GetInvoice(admin_p_, get);
  ASSERT_TRUE(voided.ok());
  EXPECT_EQ(voided->state(), v1::Invoice::VOID);
  EXPECT_EQ(voided->replaced_by(), second->name());
  EXPECT_EQ(voided->number(), first->number());
  EXPECT_EQ(voided->lines_size(), first->lines_size());
  // A retry of the re-issue answers the same invoice and changes nothing.
  const Snapshot before_retry = Take();
  auto retry = billing_->IssueInvoice(admin_p_, issue);
  ASSERT_TRUE(retry.ok());
  EXPECT_EQ(retry->SerializeAsString(), second->SerializeAsString());
  EXPECT_TRUE(Take() == before_retry);

  // Voided again and re-issued: the chain goes on, one link per re-issue.
  v.set_name(second->name());
  ASSERT_TRUE(billing_->VoidInvoice(admin_p_, v).ok());
  issue.set_request_id("issue-3");
  auto third = billing_->IssueInvoice(admin_p_, issue);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->replaces(), second->name());
  get.set_name(second->name());
  EXPECT_EQ(billing_->GetInvoice(admin_p_, get)->replaced_by(), third->name());
  EXPECT_EQ(billing_->GetInvoice(admin_p_, get)->replaces(), first->name());
  get.set_name(first->name());
  EXPECT_EQ(billing_->GetInvoice(admin_p_, get)->replaced_by(), second->name());
}

TEST_F(BillingConformanceTest, AFirstInvoiceReplacesNothing) {
  Session(absl::Hours(9), absl::Hours(10));
  Drain();
  clock_.Set(Feb2());
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  auto inv = billing_->IssueInvoice(admin_p_, issue);
  ASSERT_TRUE(inv.ok());
  EXPECT_EQ(inv->replaces(), "");
  EXPECT_EQ(inv->replaced_by(), "");
}

// ================================================================ item 2: deposits after close

TEST_F(BillingConformanceTest, ClosedLeaseDepositHoldsNothingIsListedOnceAndExplainedOnTheInvoice) {
  const bk::Lease lease = LeaseReturnedWithDamage(100000, 30000);
  Drain();
  v1::GetDepositRequest gd;
  gd.set_name("deposits/" + lease.name().substr(lease.name().rfind('/') + 1));
  auto d = billing_->GetDeposit(admin_p_, gd);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->state(), v1::Deposit::APPLIED);
  EXPECT_EQ(d->amount().amount_minor(), 100000);
  EXPECT_EQ(d->held_amount().amount_minor(), 0);
  EXPECT_EQ(d->held_amount().currency_code(), "CNY");
  EXPECT_EQ(d->applied_amount().amount_minor(), 30000);
  EXPECT_EQ(d->released_amount().amount_minor(), 70000);
  EXPECT_EQ(d->assessed_damage().amount_minor(), 30000);
  EXPECT_EQ(d->excess_damage_charge(), "");

  v1::ListDepositsRequest list;
  list.set_page_size(100);
  auto listed = billing_->ListDeposits(admin_p_, list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->deposits_size(), 1);
  EXPECT_EQ(listed->deposits(0).name(), d->name());
  EXPECT_EQ(listed->deposits(0).held_amount().amount_minor(), 0);
  list.set_state(v1::Deposit::APPLIED);
  EXPECT_EQ(billing_->ListDeposits(admin_p_, list)->deposits_size(), 1);

  // The lessee's invoice: the deposit charged at handover, six days of rent
  // and a memo line for the 300.00 kept (amount zero, nothing more owed).
  v1::PreviewInvoiceRequest preview;
  preview.set_payer_organization("organizations/lab");
  preview.set_period("2027-01");
  auto lab = billing_->PreviewInvoice(admin_p_, preview);
  ASSERT_TRUE(lab.ok()) << lab.status();
  const v1::InvoiceLine* memo = nullptr;
  int64_t deposit_charged = 0, rent = 0;
  for (const auto& l : lab->lines()) {
    if (l.kind() == v1::InvoiceLine::DEPOSIT_APPLIED) {
      EXPECT_EQ(memo, nullptr) << "one memo line";
      memo = &l;
    }
    if (l.fee_kind() == v1::DEPOSIT) deposit_charged += l.amount().amount_minor();
    if (l.fee_kind() == v1::LEASE_PERIOD) rent += l.amount().amount_minor();
  }
  ASSERT_NE(memo, nullptr);
  EXPECT_EQ(memo->amount().amount_minor(), 0);
  EXPECT_EQ(memo->amount().currency_code(), "CNY");
  EXPECT_EQ(memo->memo_amount().amount_minor(), 30000);
  EXPECT_EQ(memo->memo_amount().currency_code(), "CNY");
  EXPECT_EQ(memo->deposit(), d->name());
  EXPECT_EQ(memo->payee_organization(), "organizations/owner");
  EXPECT_FALSE(memo->posting().empty());
  EXPECT_EQ(deposit_charged, 100000);
  EXPECT_EQ(rent, 1800000);
  EXPECT_EQ(lab->lines_size(), 3);
  EXPECT_EQ(lab->charges_total().amount_minor(), 1900000);
  EXPECT_EQ(lab->amount_due().amount_minor(), 1900000);
  ASSERT_EQ(lab->payees_size(), 1);
  EXPECT_EQ(lab->payees(0).amount_due().amount_minor(), 1900000);

  // The owner's invoice: the 700.00 it returns.
  preview.set_payer_organization("organizations/owner");
  auto owner = billing_->PreviewInvoice(admin_p_, preview);
  ASSERT_TRUE(owner.ok());
  ASSERT_EQ(owner->lines_size(), 1);
  EXPECT_EQ(owner->lines(0).kind(), v1::InvoiceLine::DEPOSIT_RELEASE);
  EXPECT_EQ(owner->lines(0).amount().amount_minor(), 70000);
  EXPECT_EQ(owner->deposit_release_total().amount_minor(), 70000);
  EXPECT_EQ(owner->amount_due().amount_minor(), 70000);

  // Issued, the memo line is on the lessee's invoice once and not again.
  clock_.Set(Feb2());
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  auto issued = billing_->IssueInvoice(admin_p_, issue);
  ASSERT_TRUE(issued.ok()) << issued.status();
  EXPECT_EQ(issued->lines_size(), 3);
  preview.set_payer_organization("organizations/lab");
  preview.set_period("2027-02");
  EXPECT_EQ(billing_->PreviewInvoice(admin_p_, preview)->lines_size(), 0);
}

TEST_F(BillingConformanceTest, DepositKeptWholeForDamageBeyondItIsExplainedAndHoldsNothing) {
  const bk::Lease lease = LeaseReturnedWithDamage(100000, 150000);
  Drain();
  v1::GetDepositRequest gd;
  gd.set_name("deposits/" + lease.name().substr(lease.name().rfind('/') + 1));
  auto d = billing_->GetDeposit(admin_p_, gd);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->held_amount().amount_minor(), 0);
  EXPECT_EQ(d->applied_amount().amount_minor(), 100000);
  EXPECT_EQ(d->released_amount().amount_minor(), 0);
  v1::PreviewInvoiceRequest preview;
  preview.set_payer_organization("organizations/lab");
  preview.set_period("2027-01");
  auto lab = billing_->PreviewInvoice(admin_p_, preview);
  ASSERT_TRUE(lab.ok());
  std::map<int, int64_t> memo, amount;  // by kind
  for (const auto& l : lab->lines()) {
    memo[l.kind()] += l.memo_amount().amount_minor();
    amount[l.kind()] += l.amount().amount_minor();
  }
  EXPECT_EQ(memo[v1::InvoiceLine::DEPOSIT_APPLIED], 100000);
  EXPECT_EQ(amount[v1::InvoiceLine::DEPOSIT_APPLIED], 0);
  // Deposit 1000.00 + rent 18000.00 + damage beyond the deposit 500.00.
  EXPECT_EQ(lab->amount_due().amount_minor(), 100000 + 1800000 + 50000);
  preview.set_payer_organization("organizations/owner");
  EXPECT_EQ(billing_->PreviewInvoice(admin_p_, preview)->lines_size(), 0);  // nothing returned
  v1::ListDepositsRequest list;
  EXPECT_EQ(billing_->ListDeposits(admin_p_, list)->deposits_size(), 1);
}

TEST_F(BillingConformanceTest, DepositHeldUntilTheLeaseCloses) {
  const bk::Lease lease = LeaseReturnedWithDamage(100000, 0, /*close=*/false);
  Drain();
  v1::GetDepositRequest gd;
  gd.set_name("deposits/" + lease.name().substr(lease.name().rfind('/') + 1));
  auto d = billing_->GetDeposit(admin_p_, gd);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->state(), v1::Deposit::HELD);
  EXPECT_EQ(d->held_amount().amount_minor(), 100000);
  bk::CloseLeaseRequest c;
  c.set_name(lease.name());
  bk::Lease out;
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CloseLease, c, &out, staff_).ok());
  Drain();
  d = billing_->GetDeposit(admin_p_, gd);
  EXPECT_EQ(d->state(), v1::Deposit::RELEASED);
  EXPECT_EQ(d->held_amount().amount_minor(), 0);
  EXPECT_EQ(d->released_amount().amount_minor(), 100000);
  v1::ListDepositsRequest list;
  EXPECT_EQ(billing_->ListDeposits(admin_p_, list)->deposits_size(), 1);
  // Released in full: no memo line anywhere.
  v1::PreviewInvoiceRequest preview;
  preview.set_payer_organization("organizations/lab");
  preview.set_period("2027-01");
  auto lab = billing_->PreviewInvoice(admin_p_, preview);
  ASSERT_TRUE(lab.ok());
  EXPECT_EQ(lab->amount_due().amount_minor(), 100000 + 1800000);
  for (const auto& l : lab->lines()) EXPECT_NE(l.kind(), v1::InvoiceLine::DEPOSIT_APPLIED);
}

// ================================================================ item 3: reproducible invoices

TEST_F(BillingConformanceTest, TheSameEventsConsumedInAnotherOrderIssueTheSameInvoice) {
  // Four sessions and a missed booking, so lines of different intervals,
  // fee kinds and lengths.
  Sessions({{absl::Hours(15), absl::Hours(16)},
            {absl::Hours(9), absl::Hours(10) + absl::Minutes(30)},
            {absl::Hours(12), absl::Hours(13)},
            {absl::Hours(19), absl::Hours(21)}});
  bk::Booking missed;
  ASSERT_TRUE(Book(absl::Hours(23), absl::Hours(24), &missed).ok());
  clock_.Set(day_ + absl::Hours(23) + absl::Minutes(20));
  ASSERT_GE(*manager_->Sweep(), 1);
  std::vector<StreamEvent> events = BookingEvents();
  ASSERT_GE(events.size(), 10u);

  // A second billing on its own Redis, fed the same events backwards.
  auto other_redis = labshare::testing::RedisServer::Start();
  ASSERT_TRUE(other_redis.ok()) << other_redis.status();
  RedisPool other_pool((*other_redis)->options());
  BillingStore other_store(&other_pool);
  BillingManager other(&other_store, reader_.get(), &clock_, *LoadBillingTimeZone("Asia/Shanghai"), labshare::testing::TestPageTokens());
  clock_.Set(day_ + absl::Hours(30));
  for (const auto& e : events) ASSERT_TRUE(billing_->ApplyBookingEvent(e).ok());
  for (auto it = events.rbegin(); it != events.rend(); ++it) ASSERT_TRUE(other.ApplyBookingEvent(*it).ok());

  v1::PreviewInvoiceRequest preview;
  preview.set_payer_organization("organizations/lab");
  preview.set_period("2027-01");
  auto a = billing_->PreviewInvoice(admin_p_, preview);
  auto b = other.PreviewInvoice(admin_p_, preview);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->lines_size(), 5);
  EXPECT_EQ(SerializeDeterministic(*a), SerializeDeterministic(*b));
  EXPECT_EQ(a->etag(), b->etag());

  clock_.Set(Feb2());
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  issue.set_request_id("month-end");
  auto x = billing_->IssueInvoice(admin_p_, issue);
  auto y = other.IssueInvoice(admin_p_, issue);
  ASSERT_TRUE(x.ok() && y.ok()) << x.status() << " " << y.status();
  EXPECT_EQ(SerializeDeterministic(*x), SerializeDeterministic(*y));
  EXPECT_EQ(x->SerializeAsString(), y->SerializeAsString());
  // By service interval: 09:00, 12:00, 15:00, 19:00, then the missed 23:00.
  int64_t previous = 0;
  for (int i = 0; i < x->lines_size(); ++i) {
    const auto& l = x->lines(i);
    EXPECT_EQ(l.line_number(), i + 1);
    EXPECT_GE(l.service_interval().start_time().seconds(), previous);
    previous = l.service_interval().start_time().seconds();
  }
  EXPECT_EQ(FromProto(x->lines(0).service_interval().start_time()), day_ + absl::Hours(9));
  EXPECT_EQ(x->lines(4).fee_kind(), v1::MISSED_BOOKING_FEE);
  // 1.5 h + 1 h + 1 h + 2 h at 500.00, and half of the missed hour.
  EXPECT_EQ(x->amount_due().amount_minor(), 75000 + 50000 + 50000 + 100000 + 25000);
}

TEST_F(BillingConformanceTest, LinesOfOneChargeStayTogetherInAFixedOrder) {
  CreatePool("voucher", 1000, 10000000);
  Sessions({{absl::Hours(9), absl::Hours(10)}, {absl::Hours(12), absl::Hours(13)}});
  // Consumed latest first.
  std::vector<StreamEvent> events = BookingEvents();
  for (auto it = events.rbegin(); it != events.rend(); ++it) ASSERT_TRUE(billing_->ApplyBookingEvent(*it).ok());
  v1::PreviewInvoiceRequest preview;
  preview.set_payer_organization("organizations/lab");
  preview.set_period("2027-01");
  auto inv = billing_->PreviewInvoice(admin_p_, preview);
  ASSERT_TRUE(inv.ok());
  ASSERT_EQ(inv->lines_size(), 4);
  // 09:00 charge, its subsidy, then 12:00 charge, its subsidy.
  EXPECT_EQ(inv->lines(0).kind(), v1::InvoiceLine::CHARGE);
  EXPECT_EQ(inv->lines(1).kind(), v1::InvoiceLine::SUBSIDY);
  EXPECT_EQ(inv->lines(1).charge(), inv->lines(0).charge());
  EXPECT_EQ(inv->lines(2).kind(), v1::InvoiceLine::CHARGE);
  EXPECT_EQ(inv->lines(3).charge(), inv->lines(2).charge());
  EXPECT_EQ(FromProto(inv->lines(0).service_interval().start_time()), day_ + absl::Hours(9));
  EXPECT_EQ(FromProto(inv->lines(2).service_interval().start_time()), day_ + absl::Hours(12));
  EXPECT_EQ(inv->lines(1).amount().amount_minor(), -5000);
  EXPECT_EQ(inv->amount_due().amount_minor(), 90000);
}

// ================================================================ item 4: inputs range-checked up front

TEST_F(BillingConformanceTest, TopUpOfInt64MaxIsRejectedAndWritesNothing) {
  CreatePool("voucher", 1000, 1000);
  const Snapshot before = Take();
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/voucher");
  top.set_request_id("huge");
  *top.mutable_amount() = MakeMoney("CNY", kInt64Max);
  auto s = billing_->TopUpSubsidyPool(admin_p_, top);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(s.status()), "INVALID_FIELD");
  ASSERT_FALSE(FieldViolationsOf(s.status()).empty());
  EXPECT_EQ(FieldViolationsOf(s.status())[0].field, "amount.amount_minor");
  EXPECT_TRUE(Take() == before);
  v1::GetSubsidyPoolRequest get;
  get.set_name("subsidyPools/voucher");
  auto pool = billing_->GetSubsidyPool(admin_p_, get);
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ(pool->balance().amount_minor(), 1000);
  EXPECT_EQ(pool->topped_up_total().amount_minor(), 1000);
  EXPECT_EQ(pool->granted_total().amount_minor(), 0);

  // The maximum is accepted up to the pool's total; one more is not.
  *top.mutable_amount() = MakeMoney("CNY", kMaxAmount - 1000);
  top.set_request_id("max");
  ASSERT_TRUE(billing_->TopUpSubsidyPool(admin_p_, top).ok());
  EXPECT_EQ(billing_->GetSubsidyPool(admin_p_, get)->balance().amount_minor(), kMaxAmount);
  const Snapshot full = Take();
  *top.mutable_amount() = MakeMoney("CNY", 1);
  top.set_request_id("one-more");
  s = billing_->TopUpSubsidyPool(admin_p_, top);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(s.status()), "INVALID_FIELD");
  EXPECT_TRUE(Take() == full);
  *top.mutable_amount() = MakeMoney("CNY", kMaxAmount + 1);
  s = billing_->TopUpSubsidyPool(admin_p_, top);
  EXPECT_EQ(ErrorReason(s.status()), "INVALID_FIELD");
  EXPECT_TRUE(Take() == full);
}

TEST_F(BillingConformanceTest, MoneyInputsAboveTheMaximumAreInvalidArguments) {
  const Snapshot before = Take();
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("big");
  cp.mutable_subsidy_pool()->set_display_name("big");
  cp.mutable_subsidy_pool()->set_currency_code("CNY");
  cp.mutable_subsidy_pool()->set_percentage_bps(1000);
  *cp.mutable_subsidy_pool()->mutable_cap_per_organization() = MakeMoney("CNY", kInt64Max);
  cp.mutable_subsidy_pool()->set_cap_period_kind(v1::YEARLY);
  auto pool = billing_->CreateSubsidyPool(admin_p_, cp);
  EXPECT_EQ(pool.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(pool.status()), "INVALID_FIELD");

  v1::RecordPaymentRequest pay;
  pay.mutable_payment()->set_payer("organizations/lab");
  pay.mutable_payment()->set_payee("organizations/owner");
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", kInt64Max);
  auto paid = billing_->RecordPayment(admin_p_, pay);
  EXPECT_EQ(paid.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(paid.status()), "INVALID_FIELD");
  ASSERT_FALSE(FieldViolationsOf(paid.status()).empty());
  EXPECT_EQ(FieldViolationsOf(paid.status())[0].field, "payment.amount.amount_minor");
  EXPECT_TRUE(Take() == before);
}

TEST_F(BillingConformanceTest, AdjustmentEntriesAboveTheMaximumAreRejected) {
  Session(absl::Hours(9), absl::Hours(10));
  Drain();
  auto charges = billing_->ListCharges(admin_p_, v1::ListChargesRequest());
  ASSERT_TRUE(charges.ok() && charges->charges_size() == 1);
  const Snapshot before = Take();
  v1::PostCorrectionRequest fix;
  fix.set_posting(charges->charges(0).posting());
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  fix.set_reason("mis-priced");
  auto* dr = fix.add_entries();
  dr->set_account("organizations/owner/accounts/income");
  *dr->mutable_debit() = MakeMoney("CNY", kInt64Max);
  auto* cr = fix.add_entries();
  cr->set_account("organizations/owner/accounts/receivable");
  cr->set_counterparty("organizations/lab");
  *cr->mutable_credit() = MakeMoney("CNY", kInt64Max);
  auto s = billing_->PostCorrection(admin_p_, fix);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(s.status()), "INVALID_AMOUNT");
  EXPECT_TRUE(Take() == before);
}

// ================================================================ item 4: the ledger step itself

// The one Lua step every billing change goes through, driven into each of
// its failure paths directly.
// A sum check (RecordPayment's bound on what a payer owes a payee): at the
// bound the step writes; one unit past it the step is stale and writes
// nothing; a field that is not an integer is a type error, nothing written.
TEST_F(BillingConformanceTest, ASumCheckAdmitsUpToItsBoundAndNotOneUnitMore) {
  const std::string payable = "organizations/lab|PAYABLE|organizations/own|CNY";
  const std::string receivable = "organizations/lab|RECEIVABLE|organizations/own|CNY";
  ASSERT_TRUE(pool_->Command({"HSET", keys::Balances(), payable, "-15000", receivable, "2000"}).ok());
  auto step = [&](int64_t max) {
    LedgerStep s;
    s.sum_checks.push_back({keys::Balances(), {payable, receivable}, max});
    s.incrs.push_back({keys::Balances(), payable, 1000});
    s.events.push_back("event");
    return s;
  };
  const Snapshot before = Take();
  auto stale = bstore_->Apply(step(-13001));  // the sum is -13000: one unit past the bound
  ASSERT_TRUE(stale.ok()) << stale.status();
  EXPECT_EQ(stale->kind, StepResult::Kind::kStale);
  EXPECT_TRUE(Take() == before);
  auto applied = bstore_->Apply(step(-13000));  // at the bound
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->kind, StepResult::Kind::kApplied);
  EXPECT_EQ(pool_->Command({"HGET", keys::Balances(), payable})->str, "-14000");
  // A field missing counts 0; one that is not an integer fails the step,
  // and so does one that is not canonical ("007", "-0": not integers to
  // Redis' HINCRBY nor to the ledger's other checks).
  for (const char* bad : {"2.5", "007", "-0", "-02000"}) {
    SCOPED_TRACE(bad);
    ASSERT_TRUE(pool_->Command({"HSET", keys::Balances(), receivable, bad}).ok());
    const Snapshot typed = Take();
    auto r = bstore_->Apply(step(0));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
    EXPECT_EQ(ErrorReason(r.status()), "CORRUPT_DOCUMENT");
    EXPECT_TRUE(Take() == typed);
  }
}

// Several steps in one call (ApplyMany): a later step checks the keys an
// earlier step of the same call created, by the type that step left (the
// script caches key types across steps): a step that would push onto a key
// the previous step made a hash answers a type error and writes nothing,
// the one before it stays applied, the one after it is not tried; a stale
// second step likewise.
TEST_F(BillingConformanceTest, ALaterStepInOneCallSeesWhatAnEarlierOneCreated) {
  const auto empty = Dump();
  auto step = [](const std::string& event) {
    LedgerStep s;
    s.applied_event_id = event;
    s.applied_stream_id = "1-1";
    return s;
  };
  LedgerStep first = step("evt-a");
  first.hash_sets.push_back({keys::Account("x"), "f", "v"});  // creates a hash
  first.events.push_back("event-a");
  LedgerStep second = step("evt-b");
  second.appends.push_back({keys::Account("x"), "line"});  // a list op on it
  second.events.push_back("event-b");
  LedgerStep third = step("evt-c");
  third.incrs.push_back({keys::Balances(), "a||CNY", 5});
  auto out = bstore_->ApplyMany({first, second, third});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);  // the third was not tried
  ASSERT_TRUE((*out)[0].ok());
  EXPECT_EQ((*out)[0]->kind, StepResult::Kind::kApplied);
  EXPECT_EQ((*out)[1].status().code(), absl::StatusCode::kInternal) << (*out)[1].status();
  EXPECT_EQ(pool_->Command({"TYPE", keys::Account("x")})->str, "hash");
  EXPECT_EQ(pool_->Command({"HGET", keys::Applied(), "evt-b"})->type, RedisValue::Type::kNil);
  EXPECT_EQ(pool_->Command({"HGET", keys::Applied(), "evt-c"})->type, RedisValue::Type::kNil);
  EXPECT_EQ(pool_->Command({"XLEN", keys::Outbox()})->integer, 1);
  EXPECT_EQ(pool_->Command({"HGET", keys::Balances(), "a||CNY"})->type, RedisValue::Type::kNil);

  // A second step whose version check fails against the document the first
  // step of the call wrote: stale, nothing of it written.
  Restore(empty);
  LedgerStep put = step("evt-d");
  put.version_checks.push_back({keys::Doc("pool", "p"), 0});
  put.puts.push_back({keys::Doc("pool", "p"), "doc", 1});
  LedgerStep stale = step("evt-e");
  stale.version_checks.push_back({keys::Doc("pool", "p"), 0});  // it is at 1 now
  stale.puts.push_back({keys::Doc("pool", "p"), "other", 1});
  stale.events.push_back("event-e");
  out = bstore_->ApplyMany({put, stale});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);
  ASSERT_TRUE((*out)[0].ok() && (*out)[1].ok());
  EXPECT_EQ((*out)[0]->kind, StepResult::Kind::kApplied);
  EXPECT_EQ((*out)[1]->kind, StepResult::Kind::kStale);
  auto doc = bstore_->docs().Get(keys::Doc("pool", "p"));
  ASSERT_TRUE(doc.ok() && doc->has_value());
  EXPECT_EQ((*doc)->data, "doc");
  EXPECT_EQ((*doc)->version, 1);
  EXPECT_EQ(pool_->Command({"XLEN", keys::Outbox()})->integer, 0);  // neither had an event
}

TEST_F(BillingConformanceTest, TheLedgerStepChecksEverythingBeforeItsFirstWrite) {
  auto full_step = [] {
    LedgerStep s;
    s.applied_event_id = "evt-1";
    s.applied_stream_id = "1-1";
    s.idempotency_key = keys::Idempotency("Test", "req-1");
    s.fingerprint = "fp";
    s.response = "answer";
    s.field_checks.push_back({keys::Sequences(), "LS-CNY-2027", "0"});
    s.version_checks.push_back({keys::Doc("pool", "p"), 0});
    s.puts.push_back({keys::Doc("pool", "p"), "doc", 1});
    s.incrs.push_back({keys::Balances(), "a|b|CNY", 100});
    s.incrs.push_back({keys::Balances(), "c||CNY", -100});
    s.incrs.push_back({keys::Cap("p"), "org|0", 100});
    s.hash_sets.push_back({keys::Sequences(), "LS-CNY-2027", "1"});
    s.index_adds.push_back({keys::Index("pool"), "0000000000|p"});
    s.index_removes.push_back({keys::Index("charge"), "x"});
    s.appends.push_back({keys::Account("a"), "line"});
    s.events.push_back("event");
    return s;
  };
  auto apply = [&](const LedgerStep& s) { return bstore_->Apply(s); };
  const auto empty = Dump();

  // Counters: each one past +-limit, alone or by two increments together,
  // or not an integer.
  struct Seed {
    std::string key, field, value;
  };
  const std::vector<Seed> seeds = {
      {keys::Balances(), "a|b|CNY", std::to_string(kLimit - 99)},
      {keys::Balances(), "c||CNY", std::to_string(-kLimit + 99)},
      {keys::Cap("p"), "org|0", std::to_string(kLimit - 99)},
      {keys::Balances(), "a|b|CNY", "9223372036854775807"},
      {keys::Balances(), "a|b|CNY", "-9223372036854775808"},
      {keys::Balances(), "a|b|CNY", "99999999999999999999999"},
      {keys::Balances(), "a|b|CNY", "12.5"},
      {keys::Balances(), "a|b|CNY", "abc"},
      // Not canonical: Redis' HINCRBY refuses them, so the checks do too
      // (before, "007" passed the check and HINCRBY failed after the put).
      {keys::Balances(), "a|b|CNY", "007"},
      {keys::Balances(), "a|b|CNY", "-007"},
      {keys::Balances(), "a|b|CNY", "-0"},
      {keys::Balances(), "a|b|CNY", "+7"},
      {keys::Cap("p"), "org|0", "00"},
  };
  for (const auto& seed : seeds) {
    SCOPED_TRACE(seed.key + " " + seed.field + " = " + seed.value);
    Restore(empty);
    ASSERT_TRUE(pool_->Command({"HSET", seed.key, seed.field, seed.value}).ok());
    const Snapshot before = Take();
    auto r = apply(full_step());
    EXPECT_FALSE(r.ok());
    EXPECT_TRUE(r.status().code() == absl::StatusCode::kInvalidArgument ||
                r.status().code() == absl::StatusCode::kInternal)
        << r.status();
    EXPECT_TRUE(Take() == before);
  }
  {
    SCOPED_TRACE("two increments of one counter cross together");
    Restore(empty);
    LedgerStep s = full_step();
    s.incrs.push_back({keys::Balances(), "a|b|CNY", kLimit - 99});  // 100 + kLimit - 99
    const Snapshot before = Take();
    auto r = apply(s);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ErrorReason(r.status()), "INVALID_FIELD");
    EXPECT_TRUE(Take() == before);
  }
  {
    SCOPED_TRACE("an increment of INT64_MAX itself");
    Restore(empty);
    LedgerStep s = full_step();
    s.incrs.push_back({keys::Balances(), "z||CNY", kInt64Max});
    const Snapshot before = Take();
    EXPECT_EQ(apply(s).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Take() == before);
  }
  // Every key the step writes, of the wrong type.
  for (const std::string& key :
       {keys::Applied(), keys::Idempotency("Test", "req-1"), keys::Outbox(), keys::Doc("pool", "p"), keys::Balances(),
        keys::Cap("p"), keys::Sequences(), keys::Index("pool"), keys::Index("charge"), keys::Account("a")}) {
    SCOPED_TRACE("wrong type: " + key);
    Restore(empty);
    ASSERT_TRUE(pool_->Command({"SET", key, "x"}).ok());
    const Snapshot before = Take();
    auto r = apply(full_step());
    EXPECT_FALSE(r.ok());
    EXPECT_TRUE(Take() == before);
  }
  // A list where a hash is expected, a hash where the index zset is.
  for (const auto& [key, cmd] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {keys::Doc("pool", "p"), {"RPUSH", keys::Doc("pool", "p"), "x"}},
           {keys::Index("pool"), {"HSET", keys::Index("pool"), "f", "v"}},
           {keys::Account("a"), {"ZADD", keys::Account("a"), "0", "m"}},
           {keys::Outbox(), {"HSET", keys::Outbox(), "f", "v"}}}) {
    SCOPED_TRACE("wrong type: " + key);
    Restore(empty);
    ASSERT_TRUE(pool_->Command(cmd).ok());
    const Snapshot before = Take();
    auto r = apply(full_step());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
    EXPECT_TRUE(Take() == before);
  }
  // Stale checks.
  {
    Restore(empty);
    ASSERT_TRUE(pool_->Command({"HSET", keys::Sequences(), "LS-CNY-2027", "7"}).ok());
    const Snapshot before = Take();
    auto r = apply(full_step());
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->kind, StepResult::Kind::kStale);
    EXPECT_TRUE(Take() == before);
  }
  {
    Restore(empty);
    ASSERT_TRUE(pool_->Command({"HSET", keys::Doc("pool", "p"), "d", "other", "v", "3"}).ok());
    const Snapshot before = Take();
    auto r = apply(full_step());
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->kind, StepResult::Kind::kStale);
    EXPECT_TRUE(Take() == before);
  }
  // Applied once; then already applied, replayed and reused write nothing.
  Restore(empty);
  auto first = apply(full_step());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->kind, StepResult::Kind::kApplied);
  auto bal = bstore_->Counters(keys::Balances(), {"a|b|CNY", "c||CNY"});
  EXPECT_EQ((*bal)[0], 100);
  EXPECT_EQ((*bal)[1], -100);
  const Snapshot applied = Take();
  auto again = apply(full_step());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->kind, StepResult::Kind::kAlreadyApplied);
  EXPECT_TRUE(Take() == applied);
  LedgerStep replay = full_step();
  replay.applied_event_id.clear();
  auto r = apply(replay);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, StepResult::Kind::kReplayed);
  EXPECT_EQ(r->response, "answer");
  EXPECT_TRUE(Take() == applied);
  replay.fingerprint = "another request";
  r = apply(replay);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, StepResult::Kind::kRequestReused);
  EXPECT_TRUE(Take() == applied);
}

// ================================================================ item 4: every multi-write billing step

TEST_F(BillingConformanceTest, TopUpWritesNothingWhenRejected) {
  CreatePool("voucher", 1000, 5000);
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/voucher");
  top.set_request_id("top");
  *top.mutable_amount() = MakeMoney("CNY", 7000);
  auto op = [&] { return billing_->TopUpSubsidyPool(admin_p_, top).status(); };
  EXPECT_EQ(ExpectRejectedStepsWriteNothing("TopUpSubsidyPool", op), 2);  // POOL_CASH, POOL_FUNDS
  // A reused request id.
  ASSERT_TRUE(op().ok());
  Snapshot before = Take();
  *top.mutable_amount() = MakeMoney("CNY", 7001);
  EXPECT_EQ(ErrorReason(billing_->TopUpSubsidyPool(admin_p_, top).status()), "REQUEST_ID_REUSED");
  EXPECT_TRUE(Take() == before);
}

TEST_F(BillingConformanceTest, PoolCreationAndUpdateWriteNothingWhenRejected) {
  v1::CreateSubsidyPoolRequest cp;
  cp.set_subsidy_pool_id("voucher");
  cp.set_request_id("create");
  cp.mutable_subsidy_pool()->set_display_name("voucher");
  cp.mutable_subsidy_pool()->set_currency_code("CNY");
  cp.mutable_subsidy_pool()->set_percentage_bps(1000);
  ExpectRejectedStepsWriteNothing("CreateSubsidyPool",
                                  [&] { return billing_->CreateSubsidyPool(admin_p_, cp).status(); });
  ASSERT_TRUE(billing_->CreateSubsidyPool(admin_p_, cp).ok());
  Snapshot before = Take();
  cp.set_request_id("create-again");
  EXPECT_EQ(ErrorReason(billing_->CreateSubsidyPool(admin_p_, cp).status()), "SUBSIDY_POOL_EXISTS");
  EXPECT_TRUE(Take() == before);
  v1::UpdateSubsidyPoolRequest up;
  up.mutable_subsidy_pool()->set_name("subsidyPools/voucher");
  up.mutable_subsidy_pool()->set_priority(5);
  up.mutable_update_mask()->add_paths("priority");
  up.set_request_id("update");
  ExpectRejectedStepsWriteNothing("UpdateSubsidyPool",
                                  [&] { return billing_->UpdateSubsidyPool(admin_p_, up).status(); });
  up.mutable_subsidy_pool()->set_etag("7");
  EXPECT_EQ(ErrorReason(billing_->UpdateSubsidyPool(admin_p_, up).status()), "ETAG_MISMATCH");
  EXPECT_TRUE(Take() == before);
}

TEST_F(BillingConformanceTest, ChargesFromEventsWriteNothingWhenRejected) {
  CreatePool("voucher", 1000, 10000000);
  Session(absl::Hours(9), absl::Hours(10));
  std::vector<StreamEvent> events = BookingEvents();
  // Everything but the check-out applied: the check-out posts the charge,
  // its subsidy and the cap usage in one step.
  int checked_out = -1;
  for (size_t i = 0; i < events.size(); ++i) {
    bk::BookingEvent e;
    ASSERT_TRUE(e.ParseFromString(events[i].payload));
    if (e.has_booking_checked_out()) checked_out = static_cast<int>(i);
  }
  ASSERT_GE(checked_out, 0);
  const StreamEvent out = events[static_cast<size_t>(checked_out)];
  // Charge: P.EXPENSE, P.PAYABLE, O.RECEIVABLE, O.INCOME; subsidy: F.POOL_FUNDS,
  // F.POOL_PAYABLE, P.PAYABLE, P.SUBSIDY_RECEIVED, O.RECEIVABLE x2; cap usage.
  // The pool's funds and cap usage decide the subsidy: a pool seeded as
  // overdrawn or an organisation past its cap gets nothing, and the charge
  // is posted without a subsidy.
  const int n = ExpectRejectedStepsWriteNothing(
      "ApplyBookingEvent (check-out)", [&] { return billing_->ApplyBookingEvent(out); },
      {"subsidyPools/voucher/accounts/pool-funds", "{billing}:cap:"});
  EXPECT_GE(n, 8);
  ASSERT_TRUE(billing_->ApplyBookingEvent(out).ok());
  const Snapshot applied = Take();
  ASSERT_TRUE(billing_->ApplyBookingEvent(out).ok());  // already applied: nothing
  EXPECT_TRUE(Take() == applied);
}

TEST_F(BillingConformanceTest, DepositStepsWriteNothingWhenRejected) {
  const bk::Lease lease = LeaseReturnedWithDamage(100000, 30000);
  std::vector<StreamEvent> events = BookingEvents();
  for (const auto& e : events) {
    bk::BookingEvent be;
    ASSERT_TRUE(be.ParseFromString(e.payload));
    if (be.has_lease_closed()) {
      ExpectRejectedStepsWriteNothing("ApplyBookingEvent (lease closed)",
                                      [&] { return billing_->ApplyBookingEvent(e); });
    }
    if (be.has_lease_handed_over()) {
      ExpectRejectedStepsWriteNothing("ApplyBookingEvent (handover)",
                                      [&] { return billing_->ApplyBookingEvent(e); });
    }
    if (be.has_lease_returned()) {
      ExpectRejectedStepsWriteNothing("ApplyBookingEvent (return)",
                                      [&] { return billing_->ApplyBookingEvent(e); });
    }
    ASSERT_TRUE(billing_->ApplyBookingEvent(e).ok());
  }
}

TEST_F(BillingConformanceTest, InvoiceStepsWriteNothingWhenRejected) {
  Session(absl::Hours(9), absl::Hours(10));
  Drain();
  clock_.Set(Feb2());
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  issue.set_request_id("issue");
  ExpectRejectedStepsWriteNothing("IssueInvoice", [&] { return billing_->IssueInvoice(admin_p_, issue).status(); });
  auto inv = billing_->IssueInvoice(admin_p_, issue);
  ASSERT_TRUE(inv.ok());
  Snapshot before = Take();
  issue.set_request_id("issue-again");
  EXPECT_EQ(ErrorReason(billing_->IssueInvoice(admin_p_, issue).status()), "INVOICE_ALREADY_ISSUED");
  EXPECT_TRUE(Take() == before);

  v1::VoidInvoiceRequest v;
  v.set_name(inv->name());
  v.set_reason("wrong");
  v.set_request_id("void");
  ExpectRejectedStepsWriteNothing("VoidInvoice", [&] { return billing_->VoidInvoice(admin_p_, v).status(); });
  ASSERT_TRUE(billing_->VoidInvoice(admin_p_, v).ok());
  before = Take();
  v.set_request_id("void-again");
  EXPECT_EQ(ErrorReason(billing_->VoidInvoice(admin_p_, v).status()), "INVOICE_NOT_ISSUED");
  EXPECT_TRUE(Take() == before);
  // The re-issue also writes the voided invoice's link.
  issue.set_request_id("reissue");
  ExpectRejectedStepsWriteNothing("IssueInvoice (re-issue)",
                                  [&] { return billing_->IssueInvoice(admin_p_, issue).status(); });
  // A series counter out of range: refused before anything is written.
  ASSERT_TRUE(pool_->Command({"HSET", keys::Sequences(), "LS-CNY-2027", "9223372036854775807"}).ok());
  before = Take();
  auto corrupt = billing_->IssueInvoice(admin_p_, issue);
  EXPECT_FALSE(corrupt.ok());
  EXPECT_TRUE(Take() == before);
}

TEST_F(BillingConformanceTest, PaymentsWriteNothingWhenRejected) {
  Session(absl::Hours(9), absl::Hours(10));
  Drain();
  clock_.Set(Feb2());
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  auto inv = billing_->IssueInvoice(admin_p_, issue);
  ASSERT_TRUE(inv.ok());
  v1::RecordPaymentRequest pay;
  pay.mutable_payment()->set_payer("organizations/lab");
  pay.mutable_payment()->set_payee("organizations/owner");
  pay.mutable_payment()->set_invoice(inv->name());
  *pay.mutable_payment()->mutable_amount() = MakeMoney("CNY", 20000);
  pay.set_request_id("pay");
  // P.PAYABLE, P.CASH, O.CASH, O.RECEIVABLE.
  EXPECT_EQ(ExpectRejectedStepsWriteNothing("RecordPayment",
                                            [&] { return billing_->RecordPayment(admin_p_, pay).status(); }),
            4);
  v1::MarkInvoicePaidRequest mark;
  mark.set_name(inv->name());
  mark.set_request_id("mark");
  EXPECT_EQ(ExpectRejectedStepsWriteNothing("MarkInvoicePaid",
                                            [&] { return billing_->MarkInvoicePaid(admin_p_, mark).status(); }),
            4);
  v1::ComputeSettlementRequest cs;
  cs.set_period("2027-01");
  cs.set_request_id("settle");
  ExpectRejectedStepsWriteNothing("ComputeSettlement",
                                  [&] { return billing_->ComputeSettlement(admin_p_, cs).status(); });
}

TEST_F(BillingConformanceTest, MarkInvoicePaidRecordsEveryPayeeOrNothing) {
  Session(absl::Hours(9), absl::Hours(10));
  Drain();
  auto charges = billing_->ListCharges(admin_p_, v1::ListChargesRequest());
  ASSERT_TRUE(charges.ok() && charges->charges_size() == 1);
  // An adjustment makes lab owe outsider 10.00 too: two payees.
  v1::PostCorrectionRequest adjust;
  adjust.set_posting(charges->charges(0).posting());
  adjust.set_mode(v1::PostCorrectionRequest::ADJUST);
  adjust.set_reason("outsider's consumables");
  auto* dr = adjust.add_entries();
  dr->set_account("organizations/lab/accounts/expense");
  *dr->mutable_debit() = MakeMoney("CNY", 1000);
  auto* cr = adjust.add_entries();
  cr->set_account("organizations/lab/accounts/payable");
  cr->set_counterparty("organizations/outsider");
  *cr->mutable_credit() = MakeMoney("CNY", 1000);
  auto adjusted = billing_->PostCorrection(admin_p_, adjust);
  ASSERT_TRUE(adjusted.ok()) << adjusted.status();
  clock_.Set(Feb2());
  v1::IssueInvoiceRequest issue;
  issue.set_payer_organization("organizations/lab");
  issue.set_period("2027-01");
  auto inv = billing_->IssueInvoice(admin_p_, issue);
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_EQ(inv->payees_size(), 2);
  v1::MarkInvoicePaidRequest mark;
  mark.set_name(inv->name());
  mark.set_request_id("mark");
  mark.set_external_reference("bank-42");
  // Both payments' counters (4 each): whichever would overflow, neither
  // payment is recorded and the invoice stays ISSUED.
  EXPECT_EQ(ExpectRejectedStepsWriteNothing("MarkInvoicePaid (two payees)",
                                            [&] { return billing_->MarkInvoicePaid(admin_p_, mark).status(); }),
            8);
  auto paid = billing_->MarkInvoicePaid(admin_p_, mark);
  ASSERT_TRUE(paid.ok()) << paid.status();
  EXPECT_EQ(paid->state(), v1::Invoice::PAID);
  EXPECT_EQ(paid->payments_size(), 2);
  EXPECT_EQ(paid->amount_paid().amount_minor(), 51000);
  EXPECT_EQ(paid->amount_outstanding().amount_minor(), 0);
  for (const auto& pb : paid->payees()) EXPECT_EQ(pb.amount_outstanding().amount_minor(), 0);
  const Snapshot after = Take();
  auto again = billing_->MarkInvoicePaid(admin_p_, mark);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->SerializeAsString(), paid->SerializeAsString());
  EXPECT_TRUE(Take() == after);
  v1::GetAccountBalanceRequest b;
  b.set_name("organizations/outsider/accounts/cash");
  b.set_counterparty("organizations/lab");
  EXPECT_EQ(billing_->GetAccountBalance(admin_p_, b)->balance().amount_minor(), 1000);
  b.set_name("organizations/lab/accounts/payable");
  b.clear_counterparty();
  EXPECT_EQ(billing_->GetAccountBalance(admin_p_, b)->balance().amount_minor(), 0);
}

TEST_F(BillingConformanceTest, CorrectionsWriteNothingWhenRejected) {
  CreatePool("voucher", 1000, 10000000);
  Session(absl::Hours(9), absl::Hours(10));
  Drain();
  auto charges = billing_->ListCharges(admin_p_, v1::ListChargesRequest());
  ASSERT_TRUE(charges.ok() && charges->charges_size() == 1);
  v1::PostCorrectionRequest fix;
  fix.set_posting(charges->charges(0).posting());
  fix.set_mode(v1::PostCorrectionRequest::REVERSE);
  fix.set_reason("instrument fault");
  fix.set_request_id("fix");
  // The charge's four counters, the subsidy's six, the cap usage.
  EXPECT_GE(ExpectRejectedStepsWriteNothing("PostCorrection (reverse)",
                                            [&] { return billing_->PostCorrection(admin_p_, fix).status(); }),
            8);
  v1::PostCorrectionRequest adjust;
  adjust.set_posting(charges->charges(0).posting());
  adjust.set_mode(v1::PostCorrectionRequest::ADJUST);
  adjust.set_reason("mis-priced");
  adjust.set_request_id("adjust");
  auto* dr = adjust.add_entries();
  dr->set_account("organizations/owner/accounts/income");
  *dr->mutable_debit() = MakeMoney("CNY", 1000);
  auto* cr = adjust.add_entries();
  cr->set_account("organizations/owner/accounts/receivable");
  cr->set_counterparty("organizations/lab");
  *cr->mutable_credit() = MakeMoney("CNY", 1000);
  EXPECT_EQ(ExpectRejectedStepsWriteNothing("PostCorrection (adjust)",
                                            [&] { return billing_->PostCorrection(admin_p_, adjust).status(); }),
            2);
}

TEST_F(BillingConformanceTest, LeasePeriodChargesWriteNothingWhenRejected) {
  bk::RequestLeaseRequest r;
  r.mutable_lease()->set_instrument("instruments/afm");
  *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24));
  *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 40));
  bk::Lease lease, out;
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RequestLease, r, &lease, ana_).ok());
  bk::ApproveLeaseRequest a;
  a.set_name(lease.name());
  a.mutable_contract()->set_rate_basis(bk::LeaseContract::DAILY);
  *a.mutable_contract()->mutable_rate() = MakeMoney("CNY", 300000);
  *a.mutable_contract()->mutable_deposit() = MakeMoney("CNY", 0);
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::ApproveLease, a, &out, staff_).ok());
  bk::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("tip new");
  clock_.Set(day_ + absl::Hours(24));
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_).ok());
  Drain();
  clock_.Set(Feb2());
  ExpectRejectedStepsWriteNothing("ChargeEndedLeasePeriods", [&]() -> absl::Status {
    auto n = billing_->ChargeEndedLeasePeriods();
    if (!n.ok()) return n.status();
    return *n == 1 ? absl::OkStatus() : absl::InternalError(absl::StrCat(*n, " periods posted"));
  });
}

}  // namespace
}  // namespace labshare::billing
