// Billing's lists against billing.proto "ordered by create_time then name":
// to the nanosecond, also for postings, charges, deposits and payments
// created within one millisecond. Index members of the earlier millisecond
// form are rewritten at start (MigrateIndexMembers: once, idempotent), and
// a page token made over them still resumes after its item.
//
// Runs billing in process over the booking fixture (real Redis, inventory
// and booking over real gRPC, fake clock).
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "services/billing/billing_manager.h"
#include "tests/billing/billing_ledger_fixture.h"

namespace labshare::billing {
namespace {

constexpr char kLab[] = "organizations/lab";
constexpr char kOwner[] = "organizations/owner";

class BillingIndexOrderTest : public testing::BillingLedgerTest {
 protected:
  // The CORRECTION postings' names in ListPostings' order, pages of `size`
  // from `token`; the next page token in *next.
  std::vector<std::string> Corrections(int size = 1000, const std::string& token = "", std::string* next = nullptr) {
    v1::ListPostingsRequest lp;
    lp.set_kind(v1::CORRECTION);
    lp.set_page_size(size);
    lp.set_page_token(token);
    auto got = billing_->ListPostings(root_, lp);
    EXPECT_TRUE(got.ok()) << got.status();
    std::vector<std::string> names;
    if (!got.ok()) return names;
    for (const auto& posting : got->postings()) names.push_back(posting.name());
    if (next != nullptr) *next = got->next_page_token();
    return names;
  }

  // Eleven ADJUST corrections of the top-up, c1 .. c11 (names
  // "<top-up>-c<n>-1": by name c1, c10, c11, c2, ...), a microsecond apart
  // inside one millisecond; their names in creation order.
  std::vector<std::string> ElevenInOneMillisecond() {
    const absl::Time t = day_ + absl::Hours(1);
    std::vector<std::string> made;
    for (int i = 0; i < 11; ++i) {
      clock_.Set(t + absl::Microseconds(i));
      auto posted = OweBy(top_up_, kLab, kOwner, 100 + i);
      EXPECT_TRUE(posted.ok()) << posted.status();
      if (posted.ok()) made.push_back(posted->correction().name());
    }
    return made;
  }
};

TEST_F(BillingIndexOrderTest, PostingsWithinOneMillisecondListByCreateTime) {
  const std::vector<std::string> made = ElevenInOneMillisecond();
  ASSERT_EQ(made.size(), 11u);
  ASSERT_GT(made[9], made[0]);
  ASSERT_LT(made[9], made[1]);  // by name c10 comes before c2
  EXPECT_EQ(Corrections(), made);
  // Paged, the same order.
  std::string next;
  std::vector<std::string> paged = Corrections(4, "", &next);
  while (!next.empty()) {
    std::string token = next;
    for (const auto& n : Corrections(4, token, &next)) paged.push_back(n);
  }
  EXPECT_EQ(paged, made);
}

// Members of the millisecond form (as an earlier version wrote them) are
// moved to the nanosecond form at their posting's create_time, once; a
// page token made over the old members resumes after its item.
TEST_F(BillingIndexOrderTest, MillisecondMembersAreMigratedAndOldPageTokensResume) {
  const std::vector<std::string> made = ElevenInOneMillisecond();
  ASSERT_EQ(made.size(), 11u);
  ASSERT_TRUE(billing_->MigrateIndexMembers().ok());  // nothing of the old form yet
  EXPECT_EQ(*billing_->MigrateIndexMembers(), 0);
  // The indexes as the earlier version wrote them.
  int rewritten = 0;
  for (const char* kind : {"posting", "charge", "deposit", "payment"}) {
    auto members = pool_->Command({"ZRANGE", keys::Index(kind), "0", "-1"});
    ASSERT_TRUE(members.ok());
    for (const auto& m : members->elements) {
      const size_t bar = m.str.find('|');
      ASSERT_EQ(bar, 19u) << m.str;
      const int64_t ns = std::stoll(m.str.substr(0, bar));
      const std::string old = absl::StrFormat("%015d|%s", ns / 1000000, m.str.substr(bar + 1));
      ASSERT_TRUE(pool_->Command({"ZREM", keys::Index(kind), m.str}).ok());
      ASSERT_TRUE(pool_->Command({"ZADD", keys::Index(kind), "0", old}).ok());
      ++rewritten;
    }
  }
  ASSERT_GE(rewritten, 12);  // the top-up and the eleven corrections
  // A settlement of January, indexed "<period>|<time>|<id>".
  Issue(kLab);  // lab owes owner the corrections' amounts
  auto settled = ComputeJanuary();
  ASSERT_TRUE(settled.ok()) << settled.status();
  auto smembers = pool_->Command({"ZRANGE", keys::Index("settlement"), "0", "-1"});
  ASSERT_TRUE(smembers.ok());
  ASSERT_EQ(smembers->elements.size(), 1u);
  const std::string smember = smembers->elements[0].str;
  ASSERT_EQ(smember.substr(0, 8), "2027-01|");
  ASSERT_EQ(smember.find('|', 8), 27u) << smember;
  const int64_t sns = std::stoll(smember.substr(8, 19));
  ASSERT_TRUE(pool_->Command({"ZREM", keys::Index("settlement"), smember}).ok());
  ASSERT_TRUE(pool_->Command({"ZADD", keys::Index("settlement"), "0",
                              absl::StrFormat("2027-01|%015d|%s", sns / 1000000, smember.substr(28))})
                  .ok());
  ++rewritten;
  // Listed by name inside the millisecond; a page of five ends at c2 (c1,
  // c10, c11, ... by name, after the top-up's own kind filtered out).
  std::string token;
  const std::vector<std::string> first = Corrections(5, "", &token);
  ASSERT_EQ(first, (std::vector<std::string>{made[0], made[9], made[10], made[1], made[2]}));
  ASSERT_FALSE(token.empty());

  EXPECT_EQ(*billing_->MigrateIndexMembers(), rewritten);
  EXPECT_EQ(*billing_->MigrateIndexMembers(), 0);  // once
  EXPECT_EQ(Corrections(), made);
  auto members = pool_->Command({"ZRANGE", keys::Index("posting"), "0", "-1"});
  ASSERT_TRUE(members.ok());
  for (const auto& m : members->elements) EXPECT_EQ(m.str.find('|'), 19u) << m.str;
  smembers = pool_->Command({"ZRANGE", keys::Index("settlement"), "0", "-1"});
  ASSERT_TRUE(smembers.ok());
  ASSERT_EQ(smembers->elements.size(), 1u);
  EXPECT_EQ(smembers->elements[0].str, smember);  // back at its create_time, to the nanosecond
  // The old token resumes after its item (c3) in the order of now.
  EXPECT_EQ(Corrections(100, token),
            (std::vector<std::string>{made[3], made[4], made[5], made[6], made[7], made[8], made[9], made[10]}));
}

// Two settlements of one period (a recomputation supersedes the first),
// indexed "<period>|<ms>|<id>" by an earlier version: a page token made over
// the old members resumes after its settlement once they are migrated,
// not at the period's start (which would list the first one again).
TEST_F(BillingIndexOrderTest, OldSettlementPageTokensResumeAfterTheirSettlement) {
  ElevenInOneMillisecond();
  Issue(kLab);  // lab owes owner the corrections' amounts
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 3), absl::UTCTimeZone()));
  auto first = ComputeJanuary();
  ASSERT_TRUE(first.ok()) << first.status();
  clock_.Set(absl::FromCivil(absl::CivilDay(2027, 2, 4), absl::UTCTimeZone()));
  auto second = ComputeJanuary();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_NE(first->name(), second->name());
  auto smembers = pool_->Command({"ZRANGE", keys::Index("settlement"), "0", "-1"});
  ASSERT_TRUE(smembers.ok());
  ASSERT_EQ(smembers->elements.size(), 2u);
  std::vector<std::string> fresh;
  for (const auto& m : smembers->elements) {
    ASSERT_EQ(m.str.substr(0, 8), "2027-01|");
    ASSERT_EQ(m.str.find('|', 8), 27u) << m.str;
    const int64_t ns = std::stoll(m.str.substr(8, 19));
    fresh.push_back(m.str);
    ASSERT_TRUE(pool_->Command({"ZREM", keys::Index("settlement"), m.str}).ok());
    ASSERT_TRUE(pool_->Command({"ZADD", keys::Index("settlement"), "0",
                                absl::StrFormat("2027-01|%015d|%s", ns / 1000000, m.str.substr(28))})
                    .ok());
  }
  v1::ListSettlementsRequest ls;
  ls.set_page_size(1);
  auto page1 = billing_->ListSettlements(root_, ls);
  ASSERT_TRUE(page1.ok()) << page1.status();
  ASSERT_EQ(page1->settlements_size(), 1);
  EXPECT_EQ(page1->settlements(0).name(), first->name());
  ASSERT_FALSE(page1->next_page_token().empty());

  EXPECT_EQ(*billing_->MigrateIndexMembers(), 2);
  smembers = pool_->Command({"ZRANGE", keys::Index("settlement"), "0", "-1"});
  ASSERT_TRUE(smembers.ok());
  ASSERT_EQ(smembers->elements.size(), 2u);
  EXPECT_EQ(smembers->elements[0].str, fresh[0]);
  EXPECT_EQ(smembers->elements[1].str, fresh[1]);

  ls.set_page_size(10);
  ls.set_page_token(page1->next_page_token());
  auto page2 = billing_->ListSettlements(root_, ls);
  ASSERT_TRUE(page2.ok()) << page2.status();
  ASSERT_EQ(page2->settlements_size(), 1);
  EXPECT_EQ(page2->settlements(0).name(), second->name());
  EXPECT_TRUE(page2->next_page_token().empty());
}

}  // namespace
}  // namespace labshare::billing
