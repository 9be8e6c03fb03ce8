// The mail queue's Lua steps on a real redis-server: one mail per id,
// claims by several senders at once (each mail to one), the end of an
// attempt only by its claimer, in-flight mails of a dead sender to the dead
// letters as DELIVERY_UNCERTAIN (its own at restart; anyone's once stale),
// schedules fired once by several claimers, digests, and replay.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/error.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "common/proto_util.h"
#include "services/notify/notify_mail_kinds.h"
#include "services/notify/notify_mail_module.h"
#include "services/notify/notify_mail_queue.h"
#include "services/notify/notify_metrics.h"
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
  // The MailDeadLettered events on the outbox, oldest first.
  std::vector<v1::NotifyEvent> DeadLetteredEvents() {
    std::vector<v1::NotifyEvent> out;
    auto r = pool_->Command({"XRANGE", "{notify}:outbox", "-", "+"});
    if (!r.ok()) return out;
    for (const auto& entry : r->elements) {
      const auto& f = entry.elements[1].elements;
      for (size_t i = 0; i + 1 < f.size(); i += 2) {
        v1::NotifyEvent ev;
        if (f[i].str == "payload" && ev.ParseFromString(f[i + 1].str) && ev.has_mail_dead_lettered()) {
          out.push_back(ev);
        }
      }
    }
    return out;
  }
  // n dead letters "legacy0".. written the way the version before the
  // indexes did (message and "dead" only): organizations/lab, REJECTED,
  // dead at kDomain + i ms, in "dead" at kWall + i * wall_step.
  void WriteLegacyDeadLetters(int n, absl::Duration wall_step) {
    for (int i = 0; i < n; ++i) {
      const std::string id = absl::StrCat("legacy", i);
      ASSERT_TRUE(pool_->Command({"HSET", std::string(kMailPrefix) + "msg:" + id, "state", "DEAD", "org",
                                  "organizations/lab", "reason", "REJECTED", "dead_ms",
                                  absl::StrCat(absl::ToUnixMillis(kDomain) + i), "kind", "BOOKING_CONFIRMED"})
                      .ok());
      ASSERT_TRUE(pool_->Command({"ZADD", std::string(kMailPrefix) + "dead",
                                  absl::StrCat(absl::ToUnixMillis(kWall + i * wall_step)), id})
                      .ok());
    }
  }
  // A mail module's context on this Redis: the domain clock clock_ (from
  // kDomain) and the wall clock wall_ (from kWall).
  NotifyContext Context() {
    NotifyContext c;
    c.redis = pool_.get();
    c.clock = &clock_;
    c.wall = &wall_;
    return c;
  }
  // A module (the test's own) sending as "me" whose every mail dies at its
  // one attempt: the SMTP relay is nobody.
  MailModule& DeadLetteringModule(std::unique_ptr<People> people) {
    NotifyContext c = Context();
    c.consumer = "me";
    MailOptions options;
    options.smtp.server = "127.0.0.1:1";  // nothing listens: the one attempt fails
    options.smtp.timeout = absl::Seconds(2);
    options.max_attempts = 1;
    module_ = std::make_unique<MailModule>(c, options, std::move(people));
    return *module_;
  }
  std::unique_ptr<RedisServer> server_;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<MailQueue> queue_;
  FakeClock clock_{kDomain}, wall_{kWall};
  std::unique_ptr<MailModule> module_;
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

// A running sender whose claim's answer was lost (a storage stall longer
// than the command timeout: the claim ran in Redis after the client gave
// up) finds the message SENDING under its own name, never given to the mail
// server: its periodic check queues it again instead of making it an
// uncertain dead letter. A message it did give the mail server (its outcome
// not recorded) stays uncertain; another process's stale claim too.
TEST_F(MailQueueTest, ARunningSendersStrandedClaimIsQueuedAgainNotDeadLettered) {
  for (const char* id : {"a", "b", "c"}) {
    ASSERT_TRUE(queue_->Enqueue(id, Mail("ana", id), false, kDomain, kWall, kDomain).ok());
  }
  auto first = queue_->Claim("me", kWall, 1);
  ASSERT_TRUE(first.ok() && first->size() == 1u);
  auto second = queue_->Claim("me", kWall, 1);
  ASSERT_TRUE(second.ok() && second->size() == 1u);
  auto theirs = queue_->Claim("other", kWall, 1);
  ASSERT_TRUE(theirs.ok() && theirs->size() == 1u);
  const std::string stranded = (*first)[0], sent = (*second)[0], other = (*theirs)[0];
  ASSERT_EQ(Card("due"), 0);
  const long long events_before = OutboxLen();

  const std::set<std::string> handed = {sent};
  auto recovered = queue_->RecoverInFlight("me", kWall + absl::Minutes(10), kWall + absl::Minutes(21), kDomain,
                                           &handed);
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  EXPECT_EQ(*recovered, 2);  // the one handed to the mail server and the other's stale claim
  auto back = queue_->Load(stranded);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back)["state"], "QUEUED");
  EXPECT_EQ((*back).count("owner"), 0u);
  EXPECT_EQ(Card("due"), 1);
  EXPECT_EQ((*queue_->Load(sent))["state"], "DEAD");
  EXPECT_EQ((*queue_->Load(sent))["reason"], "DELIVERY_UNCERTAIN");
  EXPECT_EQ((*queue_->Load(other))["state"], "DEAD");
  EXPECT_EQ(Card("inflight"), 0);
  EXPECT_EQ(OutboxLen(), events_before + 2);  // a MailDeadLettered each; none for the one queued again
  // It is claimed and sent like any other.
  auto again = queue_->Claim("me", kWall + absl::Minutes(21), 1);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0], stranded);
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
  for (const auto& row : *dead) {
    const v1::DeadLetter d = DeadLetterFromFields(row.id, row.fields);
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
  const std::string id = dead->front().id;
  ASSERT_TRUE(queue_->Finish(id, owner[id], MailQueue::Outcome::kSent, kWall, kWall, "",
                             v1::DeadLetter::REASON_UNSPECIFIED, "", absl::Hours(1), kDomain)
                  .ok());
  EXPECT_EQ((*queue_->Load(id))["state"], "DEAD");
  // Replay: queued again, attempts from zero; the same request_id again
  // answers the same; a second replay with another id is refused.
  auto replayed = queue_->Replay(id, "users/admin", "r1", kWall, kDomain);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ((*queue_->Load(id))["state"], "QUEUED");
  EXPECT_EQ((*queue_->Load(id))["attempts"], "0");
  EXPECT_EQ(replayed->attempts(), 0);
  EXPECT_EQ(replayed->replayed_by(), "users/admin");
  auto again = queue_->Replay(id, "users/admin", "r1", kWall, kDomain);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), replayed->SerializeAsString());
  auto other = queue_->Replay(id, "users/admin", "r2", kWall, kDomain);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrorReason(other.status()), "NOT_A_DEAD_LETTER");
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
  const v1::DeadLetter& d = *replayed;
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
  NotifyContext c = Context();
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

// ------------------------------------------------------------ dead letters

// A dead letter of `org` for `reason` that died at `dead` (domain clock).
void MakeDead(MailQueue* q, const std::string& id, const std::string& org, v1::DeadLetter::Reason reason,
              absl::Time dead, const std::string& kind = "BOOKING_CONFIRMED") {
  Fields f = {{"kind", kind}, {"user", "users/ana"}, {"org", org}, {"email", "ana@lab.test"}, {"name", "ana"},
              {"subject", id}, {"text", "t"}, {"html", "h"}, {"unsub", ""}, {"event", "e-" + id},
              {"lang", "en"}, {"tz", "UTC"}};
  ASSERT_TRUE(q->Enqueue(id, f, false, kDomain, kWall, kDomain).ok());
  auto claimed = q->Claim("s", kWall, 1);
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(*claimed, std::vector<std::string>{id});
  ASSERT_TRUE(q->Finish(id, "s", MailQueue::Outcome::kDead, kWall, kWall, "550 no", reason, "payload", absl::Hours(1),
                        dead)
                  .ok());
}

std::vector<std::string> Ids(const std::vector<MailQueue::DeadRow>& rows) {
  std::vector<std::string> ids;
  for (const auto& r : rows) ids.push_back(r.id);
  return ids;
}

// Calls of one Redis command since the last CONFIG RESETSTAT.
int64_t Calls(RedisPool* pool, const std::string& command) {
  auto info = pool->Command({"INFO", "commandstats"});
  if (!info.ok()) return -1;
  const std::string key = "cmdstat_" + command + ":calls=";
  const size_t at = info->str.find(key);
  if (at == std::string::npos) return 0;
  return std::stoll(info->str.substr(at + key.size()));
}

TEST_F(MailQueueTest, DeadLetterPagesComeFromIndexesNewestFirstAndCostAPage) {
  // 100 dead letters of another organisation, older and newer, around 3 of
  // "lab" (two REJECTED, one RETRIES_EXHAUSTED).
  for (int i = 0; i < 50; ++i) {
    MakeDead(queue_.get(), absl::StrCat("old", i), "organizations/big", v1::DeadLetter::REJECTED,
             kDomain + absl::Seconds(i));
  }
  MakeDead(queue_.get(), "a", "organizations/lab", v1::DeadLetter::REJECTED, kDomain + absl::Minutes(10));
  MakeDead(queue_.get(), "b", "organizations/lab", v1::DeadLetter::RETRIES_EXHAUSTED, kDomain + absl::Minutes(11));
  MakeDead(queue_.get(), "c", "organizations/lab", v1::DeadLetter::REJECTED, kDomain + absl::Minutes(11));
  for (int i = 0; i < 50; ++i) {
    MakeDead(queue_.get(), absl::StrCat("new", i), "organizations/big", v1::DeadLetter::REJECTED,
             kDomain + absl::Minutes(20) + absl::Seconds(i));
  }
  ASSERT_TRUE(pool_->Command({"CONFIG", "RESETSTAT"}).ok());
  auto first = queue_->ListDead("", 1, "organizations/lab", v1::DeadLetter::REASON_UNSPECIFIED);
  ASSERT_TRUE(first.ok()) << first.status();
  // Newest first; equal times by id, descending.
  EXPECT_EQ(Ids(*first), (std::vector<std::string>{"c", "b"}));
  // One page read the page (and one more), not 103 messages.
  EXPECT_EQ(Calls(pool_.get(), "hgetall"), 2);
  auto second = queue_->ListDead((*first)[0].cursor, 1, "organizations/lab", v1::DeadLetter::REASON_UNSPECIFIED);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(Ids(*second), (std::vector<std::string>{"b", "a"}));
  auto rejected = queue_->ListDead("", 5, "organizations/lab", v1::DeadLetter::REJECTED);
  EXPECT_EQ(Ids(*rejected), (std::vector<std::string>{"c", "a"}));
  auto all_rejected = queue_->ListDead("", 2, "", v1::DeadLetter::REJECTED);
  EXPECT_EQ(Ids(*all_rejected), (std::vector<std::string>{"new49", "new48", "new47"}));
  // A cursor whose dead letter left meanwhile (replayed) still pages on.
  ASSERT_TRUE(queue_->Replay("b", "users/admin", "r1", kWall, kDomain).ok());
  auto after_b = queue_->ListDead((*second)[0].cursor, 5, "organizations/lab", v1::DeadLetter::REASON_UNSPECIFIED);
  EXPECT_EQ(Ids(*after_b), (std::vector<std::string>{"a"}));
  // The replayed one is in no index.
  EXPECT_EQ(Ids(*queue_->ListDead("", 5, "organizations/lab", v1::DeadLetter::RETRIES_EXHAUSTED)),
            std::vector<std::string>{});
  EXPECT_EQ(Card("dl:all"), 102);
}

TEST_F(MailQueueTest, DeadLettersPastTheRetentionGoInBoundedStepsAndCannotBeReplayed) {
  MakeDead(queue_.get(), "d1", "organizations/lab", v1::DeadLetter::REJECTED, kDomain);
  MakeDead(queue_.get(), "d2", "organizations/lab", v1::DeadLetter::RETRIES_EXHAUSTED, kDomain + absl::Hours(1));
  MakeDead(queue_.get(), "d3", "organizations/x", v1::DeadLetter::REJECTED, kDomain + absl::Hours(2));
  MakeDead(queue_.get(), "d4", "organizations/lab", v1::DeadLetter::REJECTED, kDomain + absl::Hours(3));
  const long long events = OutboxLen();
  // Cut-off after d3: at most 2 per step, oldest first.
  const absl::Time cutoff = kDomain + absl::Hours(2) + absl::Milliseconds(1);
  EXPECT_EQ(*queue_->PruneDead(cutoff, 2), 2);
  EXPECT_TRUE(queue_->Load("d1")->empty());
  EXPECT_TRUE(queue_->Load("d2")->empty());
  EXPECT_FALSE(queue_->Load("d3")->empty());
  EXPECT_EQ(*queue_->PruneDead(cutoff, 2), 1);
  EXPECT_EQ(*queue_->PruneDead(cutoff, 2), 0);
  EXPECT_EQ(Ids(*queue_->ListDead("", 10, "", v1::DeadLetter::REASON_UNSPECIFIED)), std::vector<std::string>{"d4"});
  EXPECT_EQ(Card("dl:all"), 1);
  EXPECT_EQ(Card("dead"), 1);
  EXPECT_EQ(Card("dl:o:organizations/lab"), 1);
  EXPECT_EQ(Card("dl:r:REJECTED"), 1);
  EXPECT_EQ(Card("dl:r:RETRIES_EXHAUSTED"), 0);
  EXPECT_EQ(Card("dl:or:organizations/x|REJECTED"), 0);
  EXPECT_EQ(OutboxLen(), events);
  auto replay = queue_->Replay("d2", "users/admin", "r1", kWall, kDomain);
  EXPECT_EQ(replay.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrorReason(replay.status()), "DEAD_LETTER_NOT_FOUND");
}

TEST_F(MailQueueTest, TheModuleRemovesDeadLettersByTheDomainClockAndItsRetention) {
  clock_.Set(kDomain + absl::Hours(24 * 90));
  NotifyContext c = Context();
  MakeDead(queue_.get(), "old", "organizations/lab", v1::DeadLetter::REJECTED, kDomain - absl::Seconds(1));
  MakeDead(queue_.get(), "young", "organizations/lab", v1::DeadLetter::REJECTED, kDomain);
  MailOptions forever;
  forever.dead_letter_retention = absl::ZeroDuration();
  EXPECT_EQ(*MailModule(c, forever, std::make_unique<NoPeople>()).PruneDeadLetters(), 0);
  // The default: 90 days.
  EXPECT_EQ(*MailModule(c, MailOptions(), std::make_unique<NoPeople>()).PruneDeadLetters(), 1);
  EXPECT_TRUE(queue_->Load("old")->empty());
  EXPECT_FALSE(queue_->Load("young")->empty());
}

TEST_F(MailQueueTest, DeadLettersFromBeforeTheIndexesAreIndexedOnce) {
  ASSERT_NO_FATAL_FAILURE(WriteLegacyDeadLetters(5, absl::ZeroDuration()));
  EXPECT_TRUE(queue_->ListDead("", 10, "", v1::DeadLetter::REASON_UNSPECIFIED)->empty());
  ASSERT_TRUE(queue_->IndexDeadLetters(2).ok());
  EXPECT_EQ(Ids(*queue_->ListDead("", 10, "organizations/lab", v1::DeadLetter::REJECTED)),
            (std::vector<std::string>{"legacy4", "legacy3", "legacy2", "legacy1", "legacy0"}));
  // The migration is done once: a dead letter an older replica writes
  // later without the indexes is left to the repair walk.
  ASSERT_TRUE(pool_->Command({"ZREM", std::string(kMailPrefix) + "dl:all", absl::StrCat(absl::ToUnixMillis(kDomain),
                                                                                      "|legacy0")})
                  .ok());
  ASSERT_TRUE(queue_->IndexDeadLetters(2).ok());
  EXPECT_EQ(Card("dl:all"), 4);
  ASSERT_TRUE(pool_->Command({"HSET", std::string(kMailPrefix) + "msg:late", "state", "DEAD", "org",
                              "organizations/lab", "reason", "REJECTED", "dead_ms",
                              absl::StrCat(absl::ToUnixMillis(kDomain) + 9), "kind", "BOOKING_CONFIRMED"})
                  .ok());
  ASSERT_TRUE(
      pool_->Command({"ZADD", std::string(kMailPrefix) + "dead", absl::StrCat(absl::ToUnixMillis(kWall) + 1), "late"})
          .ok());
  std::string cursor;
  int steps = 0;
  do {
    auto next = queue_->IndexDeadStep(cursor, 2, false);
    ASSERT_TRUE(next.ok()) << next.status();
    cursor = *next;
    ++steps;
  } while (!cursor.empty() && steps < 10);
  EXPECT_EQ(steps, 2);  // legacy0-1; then the rest of their score (legacy2-4) and late, the end
  EXPECT_EQ(Ids(*queue_->ListDead("", 10, "organizations/lab", v1::DeadLetter::REJECTED)),
            (std::vector<std::string>{"late", "legacy4", "legacy3", "legacy2", "legacy1", "legacy0"}));
}

TEST_F(MailQueueTest, StaleAndDuplicateIndexEntriesNeitherEndAPageNorShowUp) {
  const std::string p = kMailPrefix;
  const int64_t ms = absl::ToUnixMillis(kDomain);
  auto dead = [&](const std::string& id, int64_t at, const std::string& org) {
    ASSERT_TRUE(pool_->Command({"HSET", p + "msg:" + id, "state", "DEAD", "org", org, "reason", "REJECTED", "dead_ms",
                                absl::StrCat(at), "kind", "BOOKING_CONFIRMED"})
                    .ok());
    ASSERT_TRUE(pool_->Command({"ZADD", p + "dead", absl::StrCat(absl::ToUnixMillis(kWall)), id}).ok());
  };
  dead("a", ms + 1, "organizations/lab");
  dead("b", ms + 2, "organizations/lab");
  dead("c", ms + 3, "organizations/lab");
  dead("z", ms + 6, "organizations/other");
  ASSERT_TRUE(queue_->IndexDeadLetters().ok());
  ASSERT_TRUE(pool_->Command({"HSET", p + "msg:x", "state", "QUEUED", "org", "organizations/lab"}).ok());
  const std::string index = p + "dl:o:organizations/lab";
  for (const auto& stale : {absl::StrCat(ms + 5, "|x"), absl::StrCat(ms + 4, "|b"), absl::StrCat(ms + 6, "|z")}) {
    ASSERT_TRUE(pool_->Command({"ZADD", index, "0", stale}).ok());
  }
  auto first = queue_->ListDead("", 1, "organizations/lab", v1::DeadLetter::REASON_UNSPECIFIED);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(Ids(*first), (std::vector<std::string>{"c", "b"}));  // the page and the next one's first
  EXPECT_EQ(Card("dl:o:organizations/lab"), 3);                   // x, the second b and z removed
  auto second = queue_->ListDead((*first)[0].cursor, 2, "organizations/lab", v1::DeadLetter::REASON_UNSPECIFIED);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(Ids(*second), (std::vector<std::string>{"b", "a"}));
}

TEST_F(MailQueueTest, PruningRemovesAStaleEntryFromEveryIndex) {
  const std::string p = kMailPrefix;
  // Replayed, its entries left behind (as an older version could).
  ASSERT_TRUE(
      pool_->Command({"HSET", p + "msg:q", "state", "QUEUED", "org", "organizations/lab", "reason", "REJECTED"}).ok());
  const std::string member = "0000000000001|q";
  for (const std::string k : {"dl:all", "dl:o:organizations/lab", "dl:r:REJECTED", "dl:or:organizations/lab|REJECTED"}) {
    ASSERT_TRUE(pool_->Command({"ZADD", p + k, "0", member}).ok());
  }
  EXPECT_EQ(*queue_->PruneDead(kDomain, 10), 0);
  for (const std::string k : {"dl:all", "dl:o:organizations/lab", "dl:r:REJECTED", "dl:or:organizations/lab|REJECTED"}) {
    EXPECT_EQ(Card(k), 0) << k;
  }
}

TEST_F(MailQueueTest, AReplayBetweenMigrationStepsSkipsNoDeadLetter) {
  ASSERT_NO_FATAL_FAILURE(WriteLegacyDeadLetters(5, absl::Milliseconds(1)));
  int calls = 0;
  ASSERT_TRUE(queue_
                  ->IndexDeadLetters(2,
                                     [&] {
                                       // After legacy0 and legacy1: legacy0 replayed (leaves "dead").
                                       if (calls++ == 0) {
                                         ASSERT_TRUE(
                                             queue_->Replay("legacy0", "users/admin", "r1", kWall, kDomain).ok());
                                       }
                                     })
                  .ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(Ids(*queue_->ListDead("", 10, "organizations/lab", v1::DeadLetter::REJECTED)),
            (std::vector<std::string>{"legacy4", "legacy3", "legacy2", "legacy1"}));
}

// ------------------------------------------------------------ metrics

std::string Scrape(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
  if (write(fd, req.data(), req.size()) < 0) return "";
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

TEST_F(MailQueueTest, MailFiguresAreOnTheMetricsPage) {
  FakeClock wall(kWall + absl::Seconds(90));
  NotifyMetrics metrics(pool_.get(), &wall);
  MailQueue q(pool_.get(), &metrics);
  auto served = Metrics::Create("notify", "127.0.0.1:0");
  ASSERT_TRUE(served.ok()) << served.status();
  Fields reminder = Mail("bo", "r");
  reminder["kind"] = "BOOKING_REMINDER";
  ASSERT_TRUE(*q.Enqueue("sent", Mail("ana", "s"), false, kDomain, kWall, kDomain));
  ASSERT_TRUE(*q.Enqueue("retried", Mail("cy", "s"), false, kDomain, kWall + absl::Seconds(1), kDomain));
  ASSERT_TRUE(*q.Enqueue("dead", reminder, false, kDomain, kWall + absl::Seconds(2), kDomain));
  ASSERT_TRUE(*q.Enqueue("waiting", reminder, false, kDomain, kWall + absl::Seconds(30), kDomain));
  EXPECT_FALSE(*q.Enqueue("sent", Mail("ana", "s"), false, kDomain, kWall, kDomain));  // not counted twice
  ASSERT_EQ(q.Claim("s", kWall + absl::Seconds(2), 3)->size(), 3u);
  const auto ok = v1::DeadLetter::REASON_UNSPECIFIED;
  ASSERT_TRUE(q.Finish("sent", "s", MailQueue::Outcome::kSent, kWall, kWall, "", ok, "", absl::Hours(1), kDomain).ok());
  ASSERT_TRUE(q.Finish("retried", "s", MailQueue::Outcome::kRetry, kWall, kWall + absl::Hours(1), "451", ok, "",
                       absl::Hours(1), kDomain)
                  .ok());
  ASSERT_TRUE(q.Finish("dead", "s", MailQueue::Outcome::kDead, kWall, kWall, "550", v1::DeadLetter::REJECTED, "p",
                       absl::Hours(1), kDomain)
                  .ok());
  // Another sender's late word is no second outcome.
  ASSERT_TRUE(q.Finish("sent", "x", MailQueue::Outcome::kSent, kWall, kWall, "", ok, "", absl::Hours(1), kDomain).ok());
  const std::string page = Scrape((*served)->port());
  for (const char* line : {
           "labshare_notify_mail_queued_total{kind=\"BOOKING_CONFIRMED\"} 2\n",
           "labshare_notify_mail_queued_total{kind=\"BOOKING_REMINDER\"} 2\n",
           "labshare_notify_mail_sent_total{kind=\"BOOKING_CONFIRMED\"} 1\n",
           "labshare_notify_mail_failed_total{kind=\"BOOKING_CONFIRMED\"} 1\n",
           "labshare_notify_mail_failed_total{kind=\"BOOKING_REMINDER\"} 1\n",
           "labshare_notify_mail_retries_total{kind=\"BOOKING_CONFIRMED\"} 1\n",
           "labshare_notify_mail_dead_lettered_total{kind=\"BOOKING_REMINDER\",reason=\"REJECTED\"} 1\n",
           "labshare_notify_mail_dead_letters_removed_total 0\n",
           // "retried" (due in an hour) and "waiting" (due 60 s ago).
           "labshare_notify_mail_queue_depth 2\n",
           "labshare_notify_mail_oldest_due_age_seconds 60\n",
           "labshare_notify_mail_in_flight 0\n",
           "labshare_notify_mail_dead_letters{reason=\"REJECTED\"} 1\n",
           "labshare_notify_mail_dead_letters{reason=\"DELIVERY_UNCERTAIN\"} 0\n",
           "labshare_notify_webhook_queue_depth 0\n",
           "labshare_notify_webhook_dead_letters 0\n",
           "labshare_notify_scrape_errors 0\n",
       }) {
    EXPECT_TRUE(absl::StrContains(page, line)) << line << " not in\n" << page;
  }
  EXPECT_TRUE(absl::StrContains(page, "# TYPE labshare_notify_mail_sent_total counter\n"));
  ASSERT_EQ(*q.PruneDead(kDomain + absl::Seconds(1), 10), 1);
  EXPECT_TRUE(absl::StrContains(Scrape((*served)->port()), "labshare_notify_mail_dead_letters_removed_total 1\n"));
}

// ------------------------------------------------------------ addresses

class TwoPeople final : public People {
 public:
  // zone: what inventory answers for the zone of every instrument's facility.
  explicit TwoPeople(std::string zone = "") : zone_(std::move(zone)) {}
  absl::StatusOr<Person> User(const std::string& name) override {
    if (name == "users/ana") return Person{name, "Ana", "ana@lab.test", "organizations/lab", false};
    if (name == "users/eve") {
      return Person{name, "Eve", "eve@lab.test\r\nBcc: all@evil.test", "organizations/lab", false};
    }
    return absl::NotFoundError("no");
  }
  absl::StatusOr<std::vector<Person>> WithRole(const std::string&, Role) override { return std::vector<Person>(); }
  std::string InstrumentName(const std::string& name) override { return name; }
  std::string InstrumentZone(const std::string&) override { return zone_; }
  absl::StatusOr<std::pair<absl::Time, absl::Time>> Window(const std::string&) override {
    return absl::NotFoundError("no");
  }

 private:
  std::string zone_;
};

StreamEvent Confirmed(const std::string& event_id, const std::string& user, const std::string& trace_id = "") {
  labshare::booking::v1::BookingEvent e;
  e.mutable_header()->set_event_id(event_id);
  e.mutable_header()->set_trace_id(trace_id);
  auto* b = e.mutable_booking_created()->mutable_booking();
  b->set_name("bookings/" + event_id);
  b->set_instrument("instruments/tem");
  b->set_instrument_owner("organizations/owner");
  b->set_mode(labshare::type::v1::ON_SITE);
  b->set_user(user);
  b->set_state(labshare::booking::v1::Booking::CONFIRMED);
  *b->mutable_reserved_interval()->mutable_start_time() = ToProto(kDomain + absl::Hours(48));
  *b->mutable_reserved_interval()->mutable_end_time() = ToProto(kDomain + absl::Hours(49));
  return StreamEvent{"1-0", "labshare.booking.v1.BookingEvent", e.SerializeAsString()};
}

TEST_F(MailQueueTest, AnAddressThatCouldInjectHeadersIsRefusedWhenTheMailWouldBeQueued) {
  NotifyMetrics metrics(pool_.get(), &wall_);
  NotifyContext c = Context();
  c.metrics = &metrics;
  MailModule m(c, MailOptions(), std::make_unique<TwoPeople>());
  const long long events = OutboxLen();
  ASSERT_TRUE(m.HandleEvent(Confirmed("e-ana", "users/ana")).ok());
  ASSERT_TRUE(m.HandleEvent(Confirmed("e-eve", "users/eve")).ok());
  // Ana's is queued; Eve's is no mail to send but a REJECTED dead letter,
  // with its event, that staff see.
  EXPECT_EQ(Card("due"), 1);
  EXPECT_EQ(OutboxLen(), events + 1);
  auto dead = m.queue().ListDead("", 10, "", v1::DeadLetter::REASON_UNSPECIFIED);
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->size(), 1u);
  const v1::DeadLetter d = DeadLetterFromFields((*dead)[0].id, (*dead)[0].fields);
  EXPECT_EQ(d.recipient(), "users/eve");
  EXPECT_EQ(d.reason(), v1::DeadLetter::REJECTED);
  EXPECT_EQ(d.attempts(), 0);
  EXPECT_EQ(d.last_error(), "invalid recipient address (contains a space, line break or control character); not sent");
  EXPECT_EQ(FromProto(d.dead_time()), kDomain);
  auto last = pool_->Command({"XREVRANGE", "{notify}:outbox", "+", "-", "COUNT", "1"});
  v1::NotifyEvent ev;
  ASSERT_TRUE(ev.ParseFromString(last->elements[0].elements[1].elements[3].str));
  EXPECT_EQ(ev.mail_dead_lettered().dead_letter().name(), d.name());
  const std::string page = metrics.Render();
  EXPECT_TRUE(absl::StrContains(page, "labshare_notify_mail_queued_total{kind=\"BOOKING_CONFIRMED\"} 1\n")) << page;
  EXPECT_TRUE(absl::StrContains(
      page, "labshare_notify_mail_dead_lettered_total{kind=\"BOOKING_CONFIRMED\",reason=\"REJECTED\"} 1\n"));
  // Redelivered: nothing new.
  ASSERT_TRUE(m.HandleEvent(Confirmed("e-eve", "users/eve")).ok());
  EXPECT_EQ(OutboxLen(), events + 1);
  // Nothing to claim but Ana's.
  auto claimed = m.queue().Claim("s", kWall, 10);
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*m.queue().Load((*claimed)[0]))["user"], "users/ana");
}

// ------------------------------------------------------------ unsubscribe links

TEST_F(MailQueueTest, UnsubscribeLinksExpireAfterTheirValidity) {
  NotifyContext c = Context();
  MailOptions o;
  EXPECT_EQ(o.unsubscribe_validity, absl::Hours(24 * 365));
  MailModule m(c, o, std::make_unique<TwoPeople>());
  auto token = m.UnsubscribeToken("ana", v1::BOOKING_REMINDER);
  ASSERT_TRUE(token.ok()) << token.status();
  std::string user;
  Kind kind = v1::NOTIFICATION_KIND_UNSPECIFIED;
  // Fresh mail: one click works.
  EXPECT_EQ(*m.CheckUnsubscribeToken(*token, &user, &kind), MailModule::TokenCheck::kValid);
  EXPECT_EQ(user, "ana");
  EXPECT_EQ(kind, v1::BOOKING_REMINDER);
  clock_.Set(kDomain + absl::Hours(24 * 365) - absl::Seconds(1));
  EXPECT_EQ(*m.CheckUnsubscribeToken(*token, &user, &kind), MailModule::TokenCheck::kValid);
  clock_.Set(kDomain + absl::Hours(24 * 365));
  EXPECT_EQ(*m.CheckUnsubscribeToken(*token, &user, &kind), MailModule::TokenCheck::kExpired);
  EXPECT_FALSE(*m.ParseUnsubscribeToken(*token, &user, &kind));
  // The expiry is signed: moving it on breaks the signature.
  std::pair<std::string, std::string> parts = absl::StrSplit(*token, absl::MaxSplits('.', 1));
  std::string payload;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(parts.first, &payload));
  const std::string later = absl::StrCat("ana:BOOKING_REMINDER:", absl::ToUnixSeconds(kDomain) + 10 * 365 * 86400);
  EXPECT_EQ(*m.CheckUnsubscribeToken(absl::StrCat(absl::WebSafeBase64Escape(later), ".", parts.second), &user, &kind),
            MailModule::TokenCheck::kInvalid);
  // Not of a link's form at all (Unsubscribe: INVALID_FIELD, not "unknown").
  for (const std::string& bad : {std::string("%%%.zz"), "." + parts.second, parts.first + ".zz",
                                 parts.first + "." + std::string(64, 'G')}) {
    EXPECT_EQ(*m.CheckUnsubscribeToken(bad, &user, &kind), MailModule::TokenCheck::kMalformed) << bad;
  }
}

// A token as the version before expiries made it: "<user>:<kind>", signed.
std::string LegacyUnsubscribeToken(const std::string& key, const std::string& payload) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(payload.data()),
       payload.size(), mac, &len);
  return absl::StrCat(absl::WebSafeBase64Escape(payload), ".",
                      absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(mac), 16)));
}

TEST_F(MailQueueTest, UnsubscribeLinksFromBeforeExpiriesExpireOneValidityAfterTheUpgrade) {
  NotifyContext c = Context();
  MailModule m(c, MailOptions(), std::make_unique<TwoPeople>());
  // A token as the previous version made it: "<user>:<kind>", signed.
  auto key = queue_->UnsubscribeKey();
  ASSERT_TRUE(key.ok());
  const std::string legacy = LegacyUnsubscribeToken(*key, "ana:BOOKING_CONFIRMED");
  std::string user;
  Kind kind;
  EXPECT_EQ(*m.CheckUnsubscribeToken(legacy, &user, &kind), MailModule::TokenCheck::kValid);
  EXPECT_EQ(kind, v1::BOOKING_CONFIRMED);
  // Another replica started later agrees on the same deadline.
  clock_.Set(kDomain + absl::Hours(24 * 300));
  MailModule later(c, MailOptions(), std::make_unique<TwoPeople>());
  EXPECT_EQ(*later.CheckUnsubscribeToken(legacy, &user, &kind), MailModule::TokenCheck::kValid);
  clock_.Set(kDomain + absl::Hours(24 * 365));
  EXPECT_EQ(*later.CheckUnsubscribeToken(legacy, &user, &kind), MailModule::TokenCheck::kExpired);
  EXPECT_EQ(*m.CheckUnsubscribeToken(legacy, &user, &kind), MailModule::TokenCheck::kExpired);
}

TEST_F(MailQueueTest, AnOldUnsubscribeLinkFirstUsedMoreThanOneValidityAfterTheStartIsExpired) {
  NotifyContext c = Context();
  MailModule m(c, MailOptions(), std::make_unique<TwoPeople>());
  ASSERT_TRUE(m.RecordUpgradeStart().ok());  // what Start does
  auto key = queue_->UnsubscribeKey();
  ASSERT_TRUE(key.ok());
  const std::string legacy = LegacyUnsubscribeToken(*key, "ana:BOOKING_CONFIRMED");
  // First clicked two years after the start, on a replica started since.
  clock_.Set(kDomain + absl::Hours(24 * 730));
  MailModule later(c, MailOptions(), std::make_unique<TwoPeople>());
  ASSERT_TRUE(later.RecordUpgradeStart().ok());
  std::string user;
  Kind kind;
  EXPECT_EQ(*later.CheckUnsubscribeToken(legacy, &user, &kind), MailModule::TokenCheck::kExpired);
  EXPECT_EQ(*m.CheckUnsubscribeToken(legacy, &user, &kind), MailModule::TokenCheck::kExpired);
}

// A mail's dead letter is told with the trace id of the event that caused
// the mail, whichever way it died: refused before queueing, given up by its
// sender, or left in flight by a sender that stopped.
TEST_F(MailQueueTest, MailDeadLetteredCarriesTheTraceIdOfTheEventThatCausedTheMail) {
  MailModule& m = DeadLetteringModule(std::make_unique<TwoPeople>());
  ASSERT_TRUE(m.HandleEvent(Confirmed("e-eve", "users/eve", "trace-eve")).ok());
  ASSERT_TRUE(m.HandleEvent(Confirmed("e-ana", "users/ana", "trace-ana")).ok());
  auto sent = m.SendDue();
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_EQ(*sent, 1);

  Fields left = Mail("bo", "left in flight");
  left["trace"] = "trace-bo";
  ASSERT_TRUE(queue_->Enqueue("bo-1", left, false, kDomain, kWall, kDomain).ok());
  ASSERT_EQ(queue_->Claim("me", kWall, 1)->size(), 1u);
  ASSERT_EQ(*queue_->RecoverInFlight("me", absl::InfinitePast(), kWall, kDomain), 1);

  std::map<std::string, std::string> trace_of;  // recipient -> trace id
  for (const v1::NotifyEvent& ev : DeadLetteredEvents()) {
    trace_of[ev.mail_dead_lettered().dead_letter().recipient()] = ev.header().trace_id();
    EXPECT_EQ(ev.header().actor(), "services/notify");
  }
  EXPECT_EQ(trace_of, (std::map<std::string, std::string>{
                          {"users/ana", "trace-ana"}, {"users/eve", "trace-eve"}, {"users/bo", "trace-bo"}}));
}

// ------------------------------------------------------------ audit of 2026-12-06 (notify)

namespace bl = labshare::billing::v1;

// Billing admins by organisation, as inventory answers: an organisation it
// does not know is NOT_FOUND, a name that is no organisation
// INVALID_ARGUMENT, "organizations/down" an inventory that cannot answer.
class BillingPeople final : public People {
 public:
  absl::StatusOr<Person> User(const std::string& name) override { return absl::NotFoundError(name); }
  absl::StatusOr<std::vector<Person>> WithRole(const std::string& org, Role) override {
    asked.push_back(org);
    if (!absl::StartsWith(org, "organizations/")) return absl::InvalidArgumentError("not an organization: " + org);
    if (org == "organizations/gone") return absl::NotFoundError(org);
    if (org == "organizations/down") return absl::UnavailableError("inventory: connection refused");
    const std::string id(absl::StripPrefix(org, "organizations/"));
    return std::vector<Person>{{"users/adm-" + id, "Admin", "adm@" + id + ".test", org, false}};
  }
  std::string InstrumentName(const std::string& name) override { return name; }
  std::string InstrumentZone(const std::string&) override { return ""; }
  absl::StatusOr<std::pair<absl::Time, absl::Time>> Window(const std::string&) override {
    return absl::NotFoundError("no");
  }
  std::vector<std::string> asked;
};

StreamEvent Billing(const bl::BillingEvent& e) {
  return StreamEvent{"1-0", "labshare.billing.v1.BillingEvent", e.SerializeAsString()};
}

// The recipients of the mails queued (due), sorted, with their kinds.
std::vector<std::string> Queued(RedisPool* pool, MailQueue* q) {
  std::vector<std::string> out;
  auto ids = pool->Command({"ZRANGE", std::string(kMailPrefix) + "due", "0", "-1"});
  if (!ids.ok()) return out;
  for (const auto& id : ids->elements) {
    Fields f = *q->Load(id.str);
    out.push_back(f["user"] + " " + f["kind"]);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// notify.proto: PAYMENT_RECEIVED goes to the payee's billing admins, and
// the payer's when the payer is an organisation. A payment from a subsidy
// pool used to ask inventory for the pool's billing admins, which refuses
// the name (INVALID_ARGUMENT): the event failed, stayed pending and was
// retried for ever. Now the pool is no recipient, and a recipient lookup
// that can never succeed (NOT_FOUND, INVALID_ARGUMENT) is nobody: the event
// is done. One that may succeed later (UNAVAILABLE) still fails it.
TEST_F(MailQueueTest, APaymentFromASubsidyPoolMailsThePayeesBillingAdminsAndIsDone) {
  NotifyContext c = Context();
  auto people = std::make_unique<BillingPeople>();
  BillingPeople* asked = people.get();
  MailModule m(c, MailOptions(), std::move(people));
  bl::BillingEvent pay;
  pay.mutable_header()->set_event_id("pay-1");
  *pay.mutable_header()->mutable_event_time() = ToProto(kDomain);
  auto* p = pay.mutable_payment_recorded()->mutable_payment();
  p->set_name("payments/p1");
  p->set_payer("subsidyPools/p1");
  p->set_payee("organizations/owner");
  p->mutable_amount()->set_currency_code("CNY");
  p->mutable_amount()->set_amount_minor(500000);
  absl::Status handled = m.HandleEvent(Billing(pay));
  ASSERT_TRUE(handled.ok()) << handled;
  EXPECT_EQ(asked->asked, std::vector<std::string>{"organizations/owner"});
  EXPECT_EQ(Queued(pool_.get(), &m.queue()), std::vector<std::string>{"users/adm-owner PAYMENT_RECEIVED"});

  // Notices for recipients inventory refuses or does not know: done, no mail.
  for (const std::string org : {"subsidyPools/p2", "organizations/gone"}) {
    bl::BillingEvent inv;
    inv.mutable_header()->set_event_id("inv-" + org);
    *inv.mutable_header()->mutable_event_time() = ToProto(kDomain);
    inv.mutable_invoice_issued()->mutable_invoice()->set_name("invoices/i1");
    inv.mutable_invoice_issued()->mutable_invoice()->set_payer_organization(org);
    handled = m.HandleEvent(Billing(inv));
    EXPECT_TRUE(handled.ok()) << org << ": " << handled;
  }
  EXPECT_EQ(Card("due"), 1);
  // Inventory unreachable: the event fails (redelivered later).
  bl::BillingEvent down;
  down.mutable_header()->set_event_id("inv-down");
  *down.mutable_header()->mutable_event_time() = ToProto(kDomain);
  down.mutable_invoice_issued()->mutable_invoice()->set_payer_organization("organizations/down");
  EXPECT_EQ(m.HandleEvent(Billing(down)).code(), absl::StatusCode::kUnavailable);
}

// notify.proto: a booking made within the lead time gets its reminder at
// once (it used to be dropped unmailed as more than --schedule_grace late);
// the same reminder scheduled again by a later event of the booking (its
// confirmation after approval) is not sent twice.
TEST_F(MailQueueTest, ABookingMadeWithinTheLeadTimeGetsItsReminderAtOnceAndOnce) {
  NotifyContext c = Context();
  MailOptions o;
  o.interpret.reminder_lead = absl::Hours(24);
  MailModule m(c, o, std::make_unique<TwoPeople>());
  labshare::booking::v1::BookingEvent e;
  e.mutable_header()->set_event_id("made");
  *e.mutable_header()->mutable_event_time() = ToProto(kDomain);
  auto* b = e.mutable_booking_created()->mutable_booking();
  b->set_name("bookings/soon");
  b->set_instrument("instruments/tem");
  b->set_mode(labshare::type::v1::ON_SITE);
  b->set_user("users/ana");
  b->set_state(labshare::booking::v1::Booking::CONFIRMED);
  *b->mutable_reserved_interval()->mutable_start_time() = ToProto(kDomain + absl::Hours(3));
  *b->mutable_reserved_interval()->mutable_end_time() = ToProto(kDomain + absl::Hours(4));
  ASSERT_TRUE(m.HandleEvent(StreamEvent{"1-0", "labshare.booking.v1.BookingEvent", e.SerializeAsString()}).ok());
  clock_.Advance(absl::Seconds(1));
  auto fired = m.FireSchedules();
  ASSERT_TRUE(fired.ok()) << fired.status();
  EXPECT_EQ(*fired, 1);
  EXPECT_EQ(Queued(pool_.get(), &m.queue()),
            (std::vector<std::string>{"users/ana BOOKING_CONFIRMED", "users/ana BOOKING_REMINDER"}));
  // Scheduled again by another event of the booking: fired, no second mail.
  labshare::booking::v1::BookingEvent again;
  again.mutable_header()->set_event_id("confirmed");
  *again.mutable_header()->mutable_event_time() = ToProto(clock_.Now());
  *again.mutable_booking_confirmed()->mutable_booking() = *b;
  again.mutable_booking_confirmed()->set_via_approval(true);
  ASSERT_TRUE(m.HandleEvent(StreamEvent{"2-0", "labshare.booking.v1.BookingEvent", again.SerializeAsString()}).ok());
  EXPECT_EQ(*m.FireSchedules(), 1);
  EXPECT_EQ(Card("due"), 2);
}

// DeadLetter.subject is the mail's subject: a digest that dies shows the
// subject it was sent with (it used to show "digest"); its event_id is
// "digest:{user id}:{due time, Unix ms}" (notify.proto).
TEST_F(MailQueueTest, ADeadDigestShowsTheSubjectItWasSentWith) {
  MailModule& m = DeadLetteringModule(std::make_unique<TwoPeople>());
  const absl::Time due = kDomain + absl::Hours(1);
  ASSERT_TRUE(queue_->Enqueue("d1", Mail("bo", "first"), true, due, kWall, kDomain).ok());
  ASSERT_TRUE(queue_->Enqueue("d2", Mail("bo", "second"), true, due, kWall, kDomain).ok());
  clock_.Set(due);
  ASSERT_EQ(*m.MakeDigests(), 1);
  auto sent = m.SendDue();
  ASSERT_TRUE(sent.ok()) << sent.status();
  auto dead = m.queue().ListDead("", 10, "", v1::DeadLetter::REASON_UNSPECIFIED);
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->size(), 1u);
  const v1::DeadLetter d = DeadLetterFromFields((*dead)[0].id, (*dead)[0].fields);
  EXPECT_EQ(d.kind(), v1::DIGEST);
  EXPECT_EQ(d.subject(), "LabShare daily digest: 2 notifications");
  EXPECT_EQ(d.event_id(), absl::StrCat("digest:bo:", absl::ToUnixMillis(due)));
  ASSERT_FALSE(DeadLetteredEvents().empty());
  EXPECT_EQ(DeadLetteredEvents().back().mail_dead_lettered().dead_letter().subject(),
            "LabShare daily digest: 2 notifications");
}

// A digest carries its real subject from the moment it is made (it used to
// carry "digest" until its first attempt): one whose sender stopped between
// claiming and sending dies showing it, in the recipient's language; a dead
// digest stored with the placeholder by an older version shows it too.
TEST_F(MailQueueTest, ADigestHasItsSubjectFromTheMomentItIsMade) {
  const absl::Time due = kDomain + absl::Hours(1);
  Fields zh = Mail("cy", "third");
  zh["lang"] = "zh-CN";
  ASSERT_TRUE(queue_->Enqueue("d1", Mail("bo", "first"), true, due, kWall, kDomain).ok());
  ASSERT_TRUE(queue_->Enqueue("d2", Mail("bo", "second"), true, due, kWall, kDomain).ok());
  ASSERT_TRUE(queue_->Enqueue("d3", zh, true, due, kWall, kDomain).ok());
  ASSERT_EQ(*queue_->MakeDigests(due, kWall, 10), 2);
  const std::string bo = absl::StrCat("dg-bo-", absl::ToUnixMillis(due));
  const std::string cy = absl::StrCat("dg-cy-", absl::ToUnixMillis(due));
  EXPECT_EQ((*queue_->Load(bo))["subject"], "LabShare daily digest: 2 notifications");
  EXPECT_EQ((*queue_->Load(cy))["subject"], "LabShare 每日摘要：1 条通知");
  // The subject the send renders is the one stored.
  RenderContext en;
  en.language = "en";
  EXPECT_EQ(RenderDigest({{"first", "t", "h"}, {"second", "t", "h"}}, en).subject,
            (*queue_->Load(bo))["subject"]);

  // Claimed, then the sender is gone: DELIVERY_UNCERTAIN with the subject.
  ASSERT_EQ(queue_->Claim("gone", kWall, 10)->size(), 2u);
  ASSERT_EQ(*queue_->RecoverInFlight("gone", absl::InfinitePast(), kWall, kDomain), 2);
  std::map<std::string, std::string> subject_of;  // recipient -> subject
  for (const v1::NotifyEvent& ev : DeadLetteredEvents()) {
    subject_of[ev.mail_dead_lettered().dead_letter().recipient()] = ev.mail_dead_lettered().dead_letter().subject();
  }
  EXPECT_EQ(subject_of, (std::map<std::string, std::string>{{"users/bo", "LabShare daily digest: 2 notifications"},
                                                            {"users/cy", "LabShare 每日摘要：1 条通知"}}));
  auto dead = queue_->ListDead("", 10, "", v1::DeadLetter::REASON_UNSPECIFIED);
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->size(), 2u);
  for (const auto& row : *dead) {
    EXPECT_NE(DeadLetterFromFields(row.id, row.fields).subject(), "digest") << row.id;
  }

  // A dead digest an older version stored with the placeholder.
  Fields old = Mail("bo", "digest");
  old["kind"] = "DIGEST";
  old["parts"] = "p1,p2,p3";
  EXPECT_EQ(DeadLetterFromFields("dg-old", old).subject(), "LabShare daily digest: 3 notifications");
  old["lang"] = "zh-CN";
  EXPECT_EQ(DeadLetterFromFields("dg-old", old).subject(), "LabShare 每日摘要：3 条通知");
}

// notify.proto: a mail is in the recipient's zone, else the facility's,
// else --default_time_zone. A facility zone that is no IANA name (stored
// before inventory checked: "localtime") counts as none.
TEST_F(MailQueueTest, AFacilityZoneThatIsNoIanaNameCountsAsNone) {
  MailModule m(Context(), MailOptions(), std::make_unique<TwoPeople>("localtime"));
  ASSERT_TRUE(m.HandleEvent(Confirmed("e-ana", "users/ana")).ok());
  auto claimed = m.queue().Claim("s", kWall, 10);
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*m.queue().Load((*claimed)[0]))["tz"], "Asia/Shanghai");
  // An IANA one is the mail's zone.
  MailModule berlin(Context(), MailOptions(), std::make_unique<TwoPeople>("Europe/Berlin"));
  ASSERT_TRUE(berlin.HandleEvent(Confirmed("e-ana-2", "users/ana")).ok());
  claimed = berlin.queue().Claim("s", kWall, 10);
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*berlin.queue().Load((*claimed)[0]))["tz"], "Europe/Berlin");
}

}  // namespace
}  // namespace labshare::notify
