// The mail queue's Lua steps on a real redis-server: one mail per id,
// claims by several senders at once (each mail to one), the end of an
// attempt only by its claimer, in-flight mails of a dead sender to the dead
// letters as DELIVERY_UNCERTAIN (its own at restart; anyone's once stale),
// schedules fired once by several claimers, digests, and replay.
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/error.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "common/clock.h"
#include "common/proto_util.h"
#include "services/notify/notify_mail_module.h"
#include "services/notify/notify_mail_queue.h"
#include "tests/support/redis_server.h"

namespace labshare::notify {
namespace {

using labshare::testing::RedisServer;

const absl::Time kWall = absl::FromUnixSeconds(1800000000);
const absl::Time kDomain = absl::FromUnixSeconds(1803859200);

class MailQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = RedisServer::Start();
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    RedisOptions o = server_->options();
    o.pool_size = 8;
    pool_ = std::make_unique<RedisPool>(o);
    queue_ = std::make_unique<MailQueue>(pool_.get());
  }
  Fields Mail(const std::string& user, const std::string& subject) {
    return {{"kind", "BOOKING_CONFIRMED"}, {"user", "users/" + user}, {"org", "organizations/lab"},
            {"email", user + "@lab.test"}, {"name", user}, {"subject", subject}, {"text", "t"}, {"html", "h"},
            {"unsub", ""}, {"event", "e1"}, {"lang", "en"}, {"tz", "UTC"}};
  }
  int64_t Card(const std::string& key) {
    auto r = pool_->Command({"ZCARD", std::string(kMailPrefix) + key});
    return r.ok() ? r->integer : -1;
  }
  long long OutboxLen() {
    auto r = pool_->Command({"XLEN", "{notify}:outbox"});
    return r.ok() ? r->integer : -1;
  }
  std::unique_ptr<RedisServer> server_;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<MailQueue> queue_;
};

TEST_F(MailQueueTest, OneMailPerIdAndEachClaimedByOneSender) {
  for (int i = 0; i < 50; ++i) {
    const std::string id = absl::StrCat("m", i);
    auto first = queue_->Enqueue(id, Mail("ana", id), false, kDomain, kWall, kDomain);
    ASSERT_TRUE(first.ok());
    EXPECT_TRUE(*first);
    auto again = queue_->Enqueue(id, Mail("ana", "other"), false, kDomain, kWall, kDomain);
    ASSERT_TRUE(again.ok());
    EXPECT_FALSE(*again);
  }
  EXPECT_EQ(Card("due"), 50);
  absl::Mutex mu;
  std::multiset<std::string> claimed;
  std::vector<std::thread> senders;
  for (int t = 0; t < 4; ++t) {
    senders.emplace_back([&, t] {
      for (;;) {
        auto ids = queue_->Claim(absl::StrCat("sender-", t), kWall, 1);
        ASSERT_TRUE(ids.ok());
        if (ids->empty()) return;
        absl::MutexLock lock(&mu);
        claimed.insert(ids->begin(), ids->end());
      }
    });
  }
  for (auto& s : senders) s.join();
  EXPECT_EQ(claimed.size(), 50u);
  EXPECT_EQ(std::set<std::string>(claimed.begin(), claimed.end()).size(), 50u);
  EXPECT_EQ(Card("inflight"), 50);
  auto f = queue_->Load("m0");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)["state"], "SENDING");
  EXPECT_EQ((*f)["attempts"], "1");
  EXPECT_EQ((*f)["subject"], "m0");  // the first enqueue's
}

TEST_F(MailQueueTest, OnlyTheClaimerEndsAnAttemptAndRetriesWaitTheirTurn) {
  ASSERT_TRUE(queue_->Enqueue("m", Mail("ana", "s"), false, kDomain, kWall, kDomain).ok());
  auto ids = queue_->Claim("a", kWall, 10);
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 1u);
  // Another sender's word changes nothing.
  ASSERT_TRUE(queue_->Finish("m", "b", MailQueue::Outcome::kSent, kWall, kWall, "", v1::DeadLetter::REASON_UNSPECIFIED,
                             "", absl::Hours(1), kDomain)
                  .ok());
  EXPECT_EQ((*queue_->Load("m"))["state"], "SENDING");
  // A retry in a minute: not claimable before.
  ASSERT_TRUE(queue_->Finish("m", "a", MailQueue::Outcome::kRetry, kWall, kWall + absl::Minutes(1), "451 later",
                             v1::DeadLetter::REASON_UNSPECIFIED, "", absl::Hours(1), kDomain)
                  .ok());
  EXPECT_TRUE(queue_->Claim("a", kWall + absl::Seconds(59), 10)->empty());
  ASSERT_EQ(queue_->Claim("a", kWall + absl::Minutes(1), 10)->size(), 1u);
  EXPECT_EQ((*queue_->Load("m"))["attempts"], "2");
  ASSERT_TRUE(queue_->Finish("m", "a", MailQueue::Outcome::kSent, kWall, kWall, "", v1::DeadLetter::REASON_UNSPECIFIED,
                             "", absl::Hours(1), kDomain)
                  .ok());
  EXPECT_EQ((*queue_->Load("m"))["state"], "SENT");
  EXPECT_EQ(Card("inflight"), 0);
  auto ttl = pool_->Command({"TTL", std::string(kMailPrefix) + "msg:m"});
  EXPECT_EQ(ttl->integer, 3600);
}

TEST_F(MailQueueTest, InFlightMailsOfADeadSenderBecomeUncertainDeadLetters) {
  for (const char* id : {"mine", "theirs-late", "theirs-early"}) {
    ASSERT_TRUE(queue_->Enqueue(id, Mail("ana", id), false, kDomain, kWall, kDomain).ok());
  }
  ASSERT_EQ(queue_->Claim("me", kWall, 1)->size(), 1u);                            // "mine" (first due)
  ASSERT_EQ(queue_->Claim("other", kWall, 1)->size(), 1u);                         // "theirs-early"? order by id
  ASSERT_EQ(queue_->Claim("other", kWall + absl::Minutes(20), 1)->size(), 1u);
  // Which is which: by claim time.
  std::map<std::string, std::string> owner;
  for (const char* id : {"mine", "theirs-late", "theirs-early"}) owner[id] = (*queue_->Load(id))["owner"];
  const long long events_before = OutboxLen();
  // At restart, "me" recovers its own only.
  auto own = queue_->RecoverInFlight("me", absl::InfinitePast(), kWall + absl::Minutes(21), kDomain);
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ(*own, 1);
  // Later, claims older than the timeout of anyone.
  auto stale = queue_->RecoverInFlight("me", kWall + absl::Minutes(10), kWall + absl::Minutes(21), kDomain);
  ASSERT_TRUE(stale.ok());
  EXPECT_EQ(*stale, 1);
  EXPECT_EQ(Card("inflight"), 1);  // the fresh claim stays
  EXPECT_EQ(Card("dead"), 2);
  EXPECT_EQ(OutboxLen(), events_before + 2);  // one MailDeadLettered each
  auto dead = queue_->ListDead("", 10, "", v1::DeadLetter::DELIVERY_UNCERTAIN);
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->size(), 2u);
  for (const auto& [id, f] : *dead) {
    const v1::DeadLetter d = DeadLetterFromFields(id, f);
    EXPECT_EQ(d.reason(), v1::DeadLetter::DELIVERY_UNCERTAIN);
    EXPECT_EQ(d.attempts(), 1);
  }
  // The outbox entry is a MailDeadLettered.
  auto last = pool_->Command({"XREVRANGE", "{notify}:outbox", "+", "-", "COUNT", "1"});
  v1::NotifyEvent ev;
  ASSERT_TRUE(ev.ParseFromString(last->elements[0].elements[1].elements[3].str));
  EXPECT_EQ(ev.payload_case(), v1::NotifyEvent::kMailDeadLettered);
  EXPECT_EQ(ev.header().actor(), "services/notify");
  // A late word of the dead sender changes nothing.
  const std::string id = dead->front().first;
  ASSERT_TRUE(queue_->Finish(id, owner[id], MailQueue::Outcome::kSent, kWall, kWall, "",
                             v1::DeadLetter::REASON_UNSPECIFIED, "", absl::Hours(1), kDomain)
                  .ok());
  EXPECT_EQ((*queue_->Load(id))["state"], "DEAD");
  // Replay: queued again, attempts from zero; the same request_id again
  // answers the same; a second replay with another id is refused.
  auto replayed = queue_->Replay(id, "users/admin", "r1", kWall, kDomain);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ((*replayed)["state"], "QUEUED");
  EXPECT_EQ((*replayed)["attempts"], "0");
  EXPECT_TRUE(queue_->Replay(id, "users/admin", "r1", kWall, kDomain).ok());
  auto other = queue_->Replay(id, "users/admin", "r2", kWall, kDomain);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(queue_->Replay("nope", "users/admin", "r3", kWall, kDomain).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(MailQueueTest, SchedulesFireOnceAmongSeveralClaimersAndStaleClaimsComeBack) {
  StreamEvent e{"1-0", "labshare.booking.v1.BookingEvent", "payload"};
  std::vector<std::pair<std::string, absl::Time>> add;
  for (int i = 0; i < 40; ++i) add.emplace_back(absl::StrCat("BOOKING_REMINDER|bookings/b", i), kDomain + absl::Minutes(i));
  ASSERT_TRUE(queue_->ApplySchedule("ev1", e, add, {}).ok());
  // The same event again (a redelivery) changes nothing, even after a removal.
  ASSERT_TRUE(queue_->ApplySchedule("ev2", e, {}, {"BOOKING_REMINDER|bookings/b39"}).ok());
  ASSERT_TRUE(queue_->ApplySchedule("ev1", e, add, {}).ok());
  EXPECT_EQ(Card("sched"), 39);
  absl::Mutex mu;
  std::multiset<std::string> fired;
  std::vector<std::thread> claimers;
  for (int t = 0; t < 3; ++t) {
    claimers.emplace_back([&] {
      for (;;) {
        auto f = queue_->ClaimSchedules(kDomain + absl::Minutes(19), kWall, kWall - absl::Minutes(2), 2);
        ASSERT_TRUE(f.ok());
        if (f->empty()) return;
        absl::MutexLock lock(&mu);
        for (const auto& x : *f) {
          fired.insert(x.member);
          EXPECT_EQ(x.event.payload, "payload");
        }
      }
    });
  }
  for (auto& c : claimers) c.join();
  EXPECT_EQ(fired.size(), 20u);  // minutes 0..19
  EXPECT_EQ(std::set<std::string>(fired.begin(), fired.end()).size(), 20u);
  // Finished ones go; one claimer died before finishing b0: it comes back
  // once its claim is stale, and only then.
  for (const auto& m : fired) {
    if (m != "BOOKING_REMINDER|bookings/b0") {
      ASSERT_TRUE(queue_->FinishSchedule(m).ok());
    }
  }
  EXPECT_TRUE(queue_->ClaimSchedules(kDomain + absl::Minutes(19), kWall + absl::Minutes(1), kWall - absl::Seconds(1), 10)
                  ->empty());
  auto again = queue_->ClaimSchedules(kDomain + absl::Minutes(19), kWall + absl::Minutes(3), kWall + absl::Seconds(1), 10);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].member, "BOOKING_REMINDER|bookings/b0");
  EXPECT_EQ((*again)[0].fire, kDomain);
}

TEST_F(MailQueueTest, AnOlderEventProcessedLaterNeverUndoesANewerOne) {
  StreamEvent e{"1-0", "labshare.booking.v1.BookingEvent", "payload"};
  const std::string m = "BOOKING_REMINDER|bookings/b1";
  const absl::Time v1 = kDomain, v2 = kDomain + absl::Seconds(1), v3 = kDomain + absl::Seconds(2);
  // Cancelled at v2, then the confirmation of v1 arrives: stays cancelled.
  ASSERT_TRUE(queue_->ApplySchedule("cancel", e, {}, {m}, v2).ok());
  ASSERT_TRUE(queue_->ApplySchedule("confirm", e, {{m, kDomain + absl::Hours(1)}}, {}, v1).ok());
  EXPECT_EQ(Card("sched"), 0);
  auto ver = pool_->Command({"GET", std::string(kMailPrefix) + "schedver:" + m});
  ASSERT_TRUE(ver.ok());
  EXPECT_EQ(ver->str, absl::StrCat(absl::ToUnixMicros(v2)));
  // A newer one (moved at v3) applies; then the v2 removal again (another
  // event id) does not.
  ASSERT_TRUE(queue_->ApplySchedule("moved", e, {{m, kDomain + absl::Hours(2)}}, {}, v3).ok());
  ASSERT_TRUE(queue_->ApplySchedule("cancel-old", e, {}, {m}, v2).ok());
  EXPECT_EQ(Card("sched"), 1);
  auto score = pool_->Command({"ZSCORE", std::string(kMailPrefix) + "sched", m});
  ASSERT_TRUE(score.ok());
  EXPECT_EQ(score->str, absl::StrCat(absl::ToUnixMillis(kDomain + absl::Hours(2))));
  // Without a version (unknown): applied in processing order, as before.
  ASSERT_TRUE(queue_->ApplySchedule("unversioned", e, {}, {m}).ok());
  EXPECT_EQ(Card("sched"), 0);
}

TEST_F(MailQueueTest, DigestsCollectAUsersMailsOnceDue) {
  const absl::Time due = kDomain + absl::Hours(1);
  ASSERT_TRUE(queue_->Enqueue("d1", Mail("bo", "first"), true, due, kWall, kDomain).ok());
  ASSERT_TRUE(queue_->Enqueue("d2", Mail("bo", "second"), true, due + absl::Hours(5), kWall, kDomain).ok());  // NX: keeps 1 h
  ASSERT_TRUE(queue_->Enqueue("n1", Mail("cy", "now"), false, due, kWall, kDomain).ok());
  EXPECT_EQ(Card("due"), 1);
  EXPECT_EQ(*queue_->MakeDigests(due - absl::Seconds(1), kWall, 10), 0);
  EXPECT_EQ(*queue_->MakeDigests(due, kWall, 10), 1);
  EXPECT_EQ(*queue_->MakeDigests(due, kWall, 10), 0);  // once
  EXPECT_EQ(Card("due"), 2);
  auto d = queue_->Load(absl::StrCat("dg-bo-", absl::ToUnixMillis(due)));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*d)["kind"], "DIGEST");
  EXPECT_EQ((*d)["parts"], "d1,d2");
  EXPECT_EQ((*d)["email"], "bo@lab.test");
  EXPECT_EQ((*queue_->Load("d1"))["state"], "IN_DIGEST");
}

TEST_F(MailQueueTest, SettingsCompareAndSetAndRequestIds) {
  ASSERT_TRUE(*queue_->PutSettings("ana", {{"language", "en"}, {"etag", "e1"}}, "", "users/ana", "rq", "fp", "x"));
  EXPECT_FALSE(*queue_->PutSettings("ana", {{"language", "en"}, {"etag", "e2"}}, "", "users/ana", "rq", "fp", "x"));  // again
  EXPECT_EQ(queue_->PutSettings("ana", {{"etag", "e3"}}, "e1", "users/ana", "rq", "other", "x").status().code(),
            absl::StatusCode::kFailedPrecondition);  // REQUEST_ID_REUSED
  EXPECT_EQ(queue_->PutSettings("ana", {{"etag", "e3"}}, "stale", "users/ana", "", "", "x").status().code(),
            absl::StatusCode::kAborted);
  // The caller's etag, when given, must be the current one (after the
  // request_id check: a retry answers the same).
  auto mismatch = queue_->PutSettings("ana", {{"etag", "e4"}}, "e1", "users/ana", "", "", "x", "old");
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrorReason(mismatch.status()), "ETAG_MISMATCH");
  EXPECT_FALSE(*queue_->PutSettings("ana", {{"etag", "e5"}}, "e1", "users/ana", "rq", "fp", "x", "old"));  // a retry
  EXPECT_EQ((*queue_->Settings("ana"))["etag"], "e1");
  EXPECT_EQ(OutboxLen(), 1);
  auto key1 = queue_->UnsubscribeKey();
  auto key2 = queue_->UnsubscribeKey();
  ASSERT_TRUE(key1.ok());
  EXPECT_EQ(key1->size(), 32u);
  EXPECT_EQ(*key1, *key2);
}

TEST_F(MailQueueTest, RequestIdsAreEachActingUsersOwn) {
  ASSERT_TRUE(*queue_->PutSettings("ana", {{"language", "en"}, {"etag", "e1"}}, "", "users/ana", "rq", "fp", "x"));
  // Bo's own "rq" (another request): not REQUEST_ID_REUSED.
  auto bo = queue_->PutSettings("bo", {{"language", "zh-CN"}, {"etag", "b1"}}, "", "users/bo", "rq", "fp-bo", "x");
  ASSERT_TRUE(bo.ok()) << bo.status();
  EXPECT_TRUE(*bo);
  EXPECT_EQ((*queue_->Settings("bo"))["etag"], "b1");
  // Ana's "rq" for something else still is.
  auto ana = queue_->PutSettings("ana", {{"etag", "e2"}}, "e1", "users/ana", "rq", "fp-2", "x");
  EXPECT_EQ(ErrorReason(ana.status()), "REQUEST_ID_REUSED");
}

TEST_F(MailQueueTest, DeadLetterTimesAreDomainTimes) {
  ASSERT_TRUE(queue_->Enqueue("x", Mail("ana", "s"), false, kDomain, kWall, kDomain).ok());
  ASSERT_EQ(queue_->Claim("a", kWall, 1)->size(), 1u);
  ASSERT_TRUE(queue_->Finish("x", "a", MailQueue::Outcome::kDead, kWall + absl::Minutes(1), kWall, "550 no",
                             v1::DeadLetter::REJECTED, "payload", absl::Hours(1), kDomain + absl::Minutes(1))
                  .ok());
  auto replayed = queue_->Replay("x", "users/admin", "r1", kWall + absl::Minutes(2), kDomain + absl::Minutes(2));
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  const v1::DeadLetter d = DeadLetterFromFields("x", *replayed);
  EXPECT_EQ(FromProto(d.create_time()), kDomain);
  EXPECT_EQ(FromProto(d.dead_time()), kDomain + absl::Minutes(1));
  EXPECT_EQ(FromProto(d.replay_time()), kDomain + absl::Minutes(2));
  // Sending order stays on the wall clock.
  EXPECT_TRUE(queue_->Claim("a", kWall + absl::Minutes(2) - absl::Milliseconds(1), 1)->empty());
  EXPECT_EQ(queue_->Claim("a", kWall + absl::Minutes(2), 1)->size(), 1u);
}

TEST_F(MailQueueTest, ADigestWhoseFirstPartExpiredStillGoesOutWithTheRest) {
  const absl::Time due = kDomain + absl::Hours(1);
  ASSERT_TRUE(queue_->Enqueue("d1", Mail("bo", "first"), true, due, kWall, kDomain).ok());
  ASSERT_TRUE(queue_->Enqueue("d2", Mail("bo", "second"), true, due, kWall, kDomain).ok());
  ASSERT_TRUE(pool_->Command({"DEL", std::string(kMailPrefix) + "msg:d1"}).ok());
  auto made = queue_->MakeDigests(due, kWall, 10);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(*made, 1);
  auto d = queue_->Load(absl::StrCat("dg-bo-", absl::ToUnixMillis(due)));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*d)["parts"], "d2");
  EXPECT_EQ((*d)["email"], "bo@lab.test");
  EXPECT_EQ((*d)["create_ms"], absl::StrCat(absl::ToUnixMillis(due)));
  // Every part gone: nothing made, nothing left behind.
  ASSERT_TRUE(queue_->Enqueue("e1", Mail("cy", "x"), true, due, kWall, kDomain).ok());
  ASSERT_TRUE(pool_->Command({"DEL", std::string(kMailPrefix) + "msg:e1"}).ok());
  EXPECT_EQ(*queue_->MakeDigests(due, kWall, 10), 0);
  EXPECT_EQ(Card("digests"), 0);
  EXPECT_TRUE((*queue_->Load("dg-cy-" + absl::StrCat(absl::ToUnixMillis(due)))).empty());
}

class NoPeople final : public People {
 public:
  absl::StatusOr<Person> User(const std::string&) override { return absl::NotFoundError("no"); }
  absl::StatusOr<std::vector<Person>> WithRole(const std::string&, Role) override { return std::vector<Person>(); }
  std::string InstrumentName(const std::string& name) override { return name; }
  std::string InstrumentZone(const std::string&) override { return ""; }
  absl::StatusOr<std::pair<absl::Time, absl::Time>> Window(const std::string&) override {
    return absl::NotFoundError("no");
  }
};

TEST_F(MailQueueTest, AnUnreadableUnsubscribeKeyIsUnavailableNotABadLink) {
  FakeClock clock(kDomain), wall(kWall);
  NotifyContext c;
  c.redis = pool_.get();
  c.clock = &clock;
  c.wall = &wall;
  MailModule m(c, MailOptions(), std::make_unique<NoPeople>());
  auto token = m.UnsubscribeToken("ana", v1::BOOKING_REMINDER);
  ASSERT_TRUE(token.ok()) << token.status();
  std::string user;
  Kind kind;
  EXPECT_TRUE(*m.ParseUnsubscribeToken(*token, &user, &kind));
  EXPECT_EQ(user, "ana");
  EXPECT_FALSE(*m.ParseUnsubscribeToken(*token + "0", &user, &kind));
  // A new module (no cached key) while Redis is down.
  RedisOptions o = server_->options();
  o.wait_timeout = absl::Milliseconds(300);
  server_->Kill9();
  RedisPool down(o);
  c.redis = &down;
  MailModule fresh(c, MailOptions(), std::make_unique<NoPeople>());
  auto parsed = fresh.ParseUnsubscribeToken(*token, &user, &kind);
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kUnavailable) << parsed.status();
  EXPECT_EQ(ErrorReason(parsed.status()), "STORAGE_UNAVAILABLE");
}

}  // namespace
}  // namespace labshare::notify
