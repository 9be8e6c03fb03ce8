#include "common/doc_store.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "tests/support/redis_server.h"

namespace labshare {
namespace {

class DocStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = testing::SharedRedisServer();
    ASSERT_NE(server_, nullptr);
    testing::FlushAll(*server_);
    pool_ = std::make_unique<RedisPool>(server_->options());
    store_ = std::make_unique<DocStore>(pool_.get());
  }
  long long Int(const std::vector<std::string>& cmd) { return pool_->Command(cmd)->integer; }

  Mutation Create(const std::string& key, const std::string& data, const std::string& idem = "") {
    Mutation m;
    m.idempotency_key = idem;
    m.fingerprint = "fp-" + data;
    m.response = "resp-" + data;
    m.writes.push_back({key, data, 0});
    m.index_ops.push_back({"{t}:index", key});
    m.appends.push_back({"{t}:history", data});
    m.outbox_key = "{t}:outbox";
    m.event_type = "test.Created";
    m.event_payload = data;
    return m;
  }

  testing::RedisServer* server_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<DocStore> store_;
};

TEST_F(DocStoreTest, CommitWritesDocumentIndexHistoryAndEventTogether) {
  auto out = store_->Commit(Create("{t}:a", std::string("bin\0ary", 7)));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->kind, CommitOutcome::Kind::kApplied);
  EXPECT_FALSE(out->stream_id.empty());
  auto doc = store_->Get("{t}:a");
  ASSERT_TRUE(doc.ok());
  ASSERT_TRUE(doc->has_value());
  EXPECT_EQ((*doc)->data, std::string("bin\0ary", 7));
  EXPECT_EQ((*doc)->version, 1);
  EXPECT_EQ(*store_->IndexRange("{t}:index", "", 10), std::vector<std::string>{"{t}:a"});
  EXPECT_EQ(Int({"LLEN", "{t}:history"}), 1);
  EXPECT_EQ(Int({"XLEN", "{t}:outbox"}), 1);
}

TEST_F(DocStoreTest, ConflictWritesNothing) {
  ASSERT_TRUE(store_->Commit(Create("{t}:a", "one")).ok());
  Mutation second = Create("{t}:b", "two");
  second.writes.push_back({"{t}:a", "stale", 0});  // expects absent, but exists
  auto out = store_->Commit(second);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->kind, CommitOutcome::Kind::kConflict);
  EXPECT_EQ(out->conflict_key, "{t}:a");
  EXPECT_FALSE(store_->Get("{t}:b")->has_value());
  EXPECT_EQ((*store_->Get("{t}:a"))->data, "one");
  EXPECT_EQ(Int({"ZCARD", "{t}:index"}), 1);
  EXPECT_EQ(Int({"LLEN", "{t}:history"}), 1);
  EXPECT_EQ(Int({"XLEN", "{t}:outbox"}), 1);
}

TEST_F(DocStoreTest, CompareAndSetFollowsVersions) {
  ASSERT_TRUE(store_->Commit(Create("{t}:a", "v1")).ok());
  Mutation update;
  update.writes.push_back({"{t}:a", "v2", 1});
  EXPECT_EQ(store_->Commit(update)->kind, CommitOutcome::Kind::kApplied);
  EXPECT_EQ((*store_->Get("{t}:a"))->version, 2);
  EXPECT_EQ(store_->Commit(update)->kind, CommitOutcome::Kind::kConflict);  // still expects 1
}

TEST_F(DocStoreTest, SameRequestReplaysAndOtherContentIsReused) {
  auto first = store_->Commit(Create("{t}:a", "one", "{t}:idem:1"));
  EXPECT_EQ(first->kind, CommitOutcome::Kind::kApplied);
  auto again = store_->Commit(Create("{t}:a", "one", "{t}:idem:1"));
  EXPECT_EQ(again->kind, CommitOutcome::Kind::kReplayed);
  EXPECT_EQ(again->response, "resp-one");
  auto other = store_->Commit(Create("{t}:z", "zzz", "{t}:idem:1"));
  EXPECT_EQ(other->kind, CommitOutcome::Kind::kRequestReused);
  EXPECT_EQ(Int({"XLEN", "{t}:outbox"}), 1);
  EXPECT_EQ(*store_->FindReplay("{t}:idem:1", "fp-one"), std::optional<std::string>("resp-one"));
  EXPECT_EQ(ErrorReason(store_->FindReplay("{t}:idem:1", "fp-other").status()), "REQUEST_ID_REUSED");
  EXPECT_EQ(*store_->FindReplay("{t}:idem:2", "fp-one"), std::nullopt);
}

TEST_F(DocStoreTest, IndexRangeResumesAfterMember) {
  for (const char* k : {"{t}:c", "{t}:a", "{t}:b"}) ASSERT_TRUE(store_->Commit(Create(k, k)).ok());
  EXPECT_EQ(*store_->IndexRange("{t}:index", "{t}:a", 10),
            (std::vector<std::string>{"{t}:b", "{t}:c"}));
  EXPECT_EQ(*store_->IndexRange("{t}:index", "", 1), std::vector<std::string>{"{t}:a"});
}

TEST_F(DocStoreTest, GuardsAreCheckedAndNotWritten) {
  ASSERT_TRUE(store_->Commit(Create("{t}:a", "one")).ok());  // {t}:a at 1, {t}:index has 1 member
  Mutation m = Create("{t}:b", "two");
  m.guards.push_back({"{t}:a", 1});
  m.guards.push_back({"{t}:index", 1, /*count=*/true});
  auto out = store_->Commit(m);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->kind, CommitOutcome::Kind::kApplied);
  EXPECT_EQ((*store_->Get("{t}:a"))->version, 1);  // guarded, not written
  for (const DocGuard& stale : {DocGuard{"{t}:a", 2}, DocGuard{"{t}:index", 1, true}, DocGuard{"{t}:none", 1}}) {
    Mutation late = Create("{t}:c", "three");
    late.guards.push_back(stale);
    out = store_->Commit(late);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->kind, CommitOutcome::Kind::kConflict) << stale.key;
    EXPECT_EQ(out->conflict_key, stale.key);
    EXPECT_FALSE((*store_->Get("{t}:c")).has_value());
  }
  EXPECT_EQ(Int({"XLEN", "{t}:outbox"}), 2);
}

TEST_F(DocStoreTest, FurtherEventsFollowTheFirstInOneStep) {
  Mutation m = Create("{t}:a", "one", "{t}:idem:1");
  m.more_events = {{"test.Moved", "x"}, {"test.Moved", "y"}};
  ASSERT_EQ(store_->Commit(m)->kind, CommitOutcome::Kind::kApplied);
  auto v = pool_->Command({"XRANGE", "{t}:outbox", "-", "+"});
  ASSERT_TRUE(v.ok());
  std::vector<std::string> got;
  for (const auto& e : v->elements) got.push_back(e.elements[1].elements[1].str + ":" + e.elements[1].elements[3].str);
  EXPECT_EQ(got, (std::vector<std::string>{"test.Created:one", "test.Moved:x", "test.Moved:y"}));
  EXPECT_EQ(store_->Commit(m)->kind, CommitOutcome::Kind::kReplayed);  // nothing published again
  EXPECT_EQ(Int({"XLEN", "{t}:outbox"}), 3);
}

// Increments land after the writes, with or without events (their count
// follows the further events, which only a step with an event sends); a
// counter that would leave int64, or a field that holds no integer, fails
// the step before its first write.
TEST_F(DocStoreTest, IncrementsMoveCountersOnlyWhenEveryOneStaysAnInteger) {
  Mutation m = Create("{t}:a", "one");
  m.more_events = {{"test.Moved", "x"}};
  m.increments = {{"{t}:c", "f", 5}, {"{t}:c", "f", -2}, {"{t}:c", "g", 7}};
  ASSERT_EQ(store_->Commit(m)->kind, CommitOutcome::Kind::kApplied);
  EXPECT_EQ(pool_->Command({"HGET", "{t}:c", "f"})->str, "3");
  EXPECT_EQ(pool_->Command({"HGET", "{t}:c", "g"})->str, "7");
  Mutation quiet;  // no event, no idempotency record
  quiet.writes.push_back({"{t}:b", "two", 0});
  quiet.increments = {{"{t}:c", "g", 1}};
  ASSERT_EQ(store_->Commit(quiet)->kind, CommitOutcome::Kind::kApplied);
  EXPECT_EQ(pool_->Command({"HGET", "{t}:c", "g"})->str, "8");
  EXPECT_EQ(Int({"XLEN", "{t}:outbox"}), 2);

  ASSERT_TRUE(pool_->Command({"HSET", "{t}:c", "big", "9223372036854775800", "text", "x"}).ok());
  for (const HashIncrement& bad : {HashIncrement{"{t}:c", "big", 8}, HashIncrement{"{t}:c", "text", 1}}) {
    Mutation over = Create("{t}:d", "four");
    over.increments = {{"{t}:c", "f", 1}, bad};
    EXPECT_FALSE(store_->Commit(over).ok()) << bad.field;
    EXPECT_FALSE((*store_->Get("{t}:d")).has_value()) << bad.field;
    EXPECT_EQ(pool_->Command({"HGET", "{t}:c", "f"})->str, "3") << bad.field;
  }
  // Two increments of one field are summed before the check.
  Mutation pair = Create("{t}:d", "four");
  pair.increments = {{"{t}:c", "big", 7}, {"{t}:c", "big", 1}};
  EXPECT_FALSE(store_->Commit(pair).ok());
  EXPECT_EQ(Int({"XLEN", "{t}:outbox"}), 2);
}

// keep_first_answer: a document holding its own request's record (field f)
// without an answer (no r) keeps its state before the write as r; one that
// has r, or no record, is written as usual.
TEST_F(DocStoreTest, KeepFirstAnswerStoresTheStateBeforeTheFirstRewrite) {
  ASSERT_TRUE(pool_->Command({"HSET", "{t}:own", "v", "1", "d", "first", "f", "fp"}).ok());
  ASSERT_TRUE(pool_->Command({"HSET", "{t}:plain", "v", "1", "d", "plain"}).ok());
  for (const char* next : {"second", "third"}) {
    Mutation m;
    m.writes = {{"{t}:own", next, std::string(next) == "second" ? 1 : 2}, {"{t}:plain", next, std::string(next) == "second" ? 1 : 2}};
    m.keep_first_answer = {"{t}:own", "{t}:plain"};
    ASSERT_EQ(store_->Commit(m)->kind, CommitOutcome::Kind::kApplied) << next;
  }
  EXPECT_EQ(pool_->Command({"HGET", "{t}:own", "r"})->str, "first");
  EXPECT_EQ(pool_->Command({"HGET", "{t}:own", "d"})->str, "third");
  EXPECT_EQ(Int({"HEXISTS", "{t}:plain", "r"}), 0);
}

// A count guard with a minimum score counts only the members from there.
TEST_F(DocStoreTest, ACountGuardFromAScoreIgnoresEarlierMembers) {
  ASSERT_TRUE(pool_->Command({"ZADD", "{t}:z", "10", "a", "20", "b", "30", "c"}).ok());
  Mutation m = Create("{t}:a", "one");
  m.guards.push_back({"{t}:z", 2, /*count=*/true, 20});
  ASSERT_EQ(store_->Commit(m)->kind, CommitOutcome::Kind::kApplied);
  ASSERT_TRUE(pool_->Command({"ZADD", "{t}:z", "5", "early"}).ok());
  Mutation again = Create("{t}:b", "two");
  again.guards.push_back({"{t}:z", 2, true, 20});
  ASSERT_EQ(store_->Commit(again)->kind, CommitOutcome::Kind::kApplied);
  ASSERT_TRUE(pool_->Command({"ZADD", "{t}:z", "25", "late"}).ok());
  Mutation stale = Create("{t}:c", "three");
  stale.guards.push_back({"{t}:z", 2, true, 20});
  auto out = store_->Commit(stale);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->kind, CommitOutcome::Kind::kConflict);
  EXPECT_FALSE((*store_->Get("{t}:c")).has_value());
}

// A scored index op adds its member at that score (moving one already
// there), one without a score at 0 as before; removal takes it off. With
// only a guard (a document's version) and index ops, the step writes
// nothing else and nothing when the guard fails.
TEST_F(DocStoreTest, ScoredIndexOpsMoveMembersAndHonourGuards) {
  Mutation m;
  m.index_ops.push_back({"{t}:due", "o1", false, 1798761600123});
  m.index_ops.push_back({"{t}:due", "o2"});
  m.guards.push_back({"{t}:doc", 0});
  ASSERT_EQ(store_->Commit(m)->kind, CommitOutcome::Kind::kApplied);
  EXPECT_EQ(pool_->Command({"ZSCORE", "{t}:due", "o1"})->str, "1798761600123");
  EXPECT_EQ(pool_->Command({"ZSCORE", "{t}:due", "o2"})->str, "0");
  Mutation move;
  move.index_ops.push_back({"{t}:due", "o1", false, 5});
  move.guards.push_back({"{t}:doc", 0});
  ASSERT_EQ(store_->Commit(move)->kind, CommitOutcome::Kind::kApplied);
  EXPECT_EQ(pool_->Command({"ZSCORE", "{t}:due", "o1"})->str, "5");
  ASSERT_TRUE(store_->Commit(Create("{t}:doc", "d")).ok());  // the guarded document now exists
  Mutation drop;
  drop.index_ops.push_back({"{t}:due", "o1", true});
  drop.guards.push_back({"{t}:doc", 0});
  EXPECT_EQ(store_->Commit(drop)->kind, CommitOutcome::Kind::kConflict);
  EXPECT_EQ(Int({"ZCARD", "{t}:due"}), 2);
  drop.guards = {{"{t}:doc", 1}};
  ASSERT_EQ(store_->Commit(drop)->kind, CommitOutcome::Kind::kApplied);
  EXPECT_TRUE(pool_->Command({"ZSCORE", "{t}:due", "o1"})->is_nil());
  EXPECT_EQ(Int({"XLEN", "{t}:outbox"}), 1);  // Create's event only
}

}  // namespace
}  // namespace labshare
