// storage-bench: keys and bytes per booking, per event and per audit entry,
// measured on a real redis-server (the README's "Scale-out" numbers).
//
// Runs the real CreateBooking (BookingService over gRPC, inventory service,
// the booking store's Lua step through the pipeline: everything one
// CreateBooking writes: document, calendar entries, listing indexes,
// idempotency record, outbox entry), then appends every booking event to the
// real audit trail (AuditChain::Append, signed heads, as the usage service
// does). Each phase: every key is read with MEMORY USAGE <key> SAMPLES 0
// before and after, keys are grouped by their shape (ids replaced by <id>),
// and INFO memory's used_memory is compared (the allocator's view, overhead
// of the main dictionary included). Prints tables; asserts only that every
// step succeeded.
//
//   storage-bench [--gtest_filter=...]   env STORAGE_BENCH_BOOKINGS (default 2000)
#include <cstdio>
#include <cstdlib>
#include <map>
#include <regex>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/events.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_service.h"
#include "services/usage/audit_chain.h"
#include "tests/billing/direct_inventory.h"
#include "tests/booking/booking_fixture.h"

namespace labshare::booking {
namespace {

struct KeyInfo {
  int64_t bytes = 0;
};
using Snapshot = std::map<std::string, KeyInfo>;

int64_t UsedMemory(RedisPool& pool) {
  auto info = pool.Command({"INFO", "memory"});
  if (!info.ok()) return 0;
  const std::string& s = info->str;
  const size_t at = s.find("used_memory:");
  return at == std::string::npos ? 0 : std::stoll(s.substr(at + 12));
}

Snapshot Take(RedisPool& pool) {
  Snapshot out;
  std::string cursor = "0";
  do {
    auto r = pool.Command({"SCAN", cursor, "COUNT", "1000"});
    if (!r.ok() || r->elements.size() != 2) break;
    cursor = r->elements[0].str;
    for (const auto& k : r->elements[1].elements) {
      auto m = pool.Command({"MEMORY", "USAGE", k.str, "SAMPLES", "0"});
      out[k.str].bytes = m.ok() ? m->integer : 0;
    }
  } while (cursor != "0");
  return out;
}

// "{bk:7}:booking:b-9f..." -> "{bk:P}:booking:<id>"; numbers and ids go.
std::string Shape(const std::string& key) {
  static const std::regex bk(R"(\{bk:[0-9]+\})");
  static const std::regex seq(R"((audit:entry:)[0-9]+)");
  std::string s = std::regex_replace(key, bk, "{bk:P}");
  s = std::regex_replace(s, seq, "$1<seq>");
  std::vector<std::string> parts = absl::StrSplit(s, ':');
  // Known fixed words stay; the last part of a per-item key is an id.
  static const std::vector<std::string> per_item = {"booking", "cl", "cal", "calend", "bystart", "idem", "entry",
                                                     "user", "org", "instr", "event", "actor", "request",
                                                     "resource", "charge", "posting", "acct"};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    for (const auto& w : per_item) {
      if (parts[i] == w && i + 1 < parts.size() && parts[i + 1] != "all") {
        // Everything after the word is the id (ids may contain ':').
        parts.resize(i + 1);
        static const std::map<std::string, std::string> label = {
            {"cl", "<instr>"}, {"cal", "<instr>"}, {"calend", "<instr>"}, {"bystart", "<instr>"}, {"instr", "<instr>"},
            {"idem", "<method>:<request_id>"}, {"user", "<user>"}, {"org", "<org>"}, {"entry", "<seq>"},
            {"actor", "<actor>"}, {"request", "<request_id>"}, {"resource", "<name>"}, {"event", "<event_id>"},
            {"acct", "<account>"}};
        auto it = label.find(w);
        parts.push_back(it == label.end() ? "<id>" : it->second);
        return absl::StrJoin(parts, ":");
      }
    }
  }
  return s;
}

struct Row {
  int64_t new_keys = 0;
  int64_t grown_keys = 0;
  int64_t bytes = 0;
  std::string slot_tag;
};

std::map<std::string, Row> Diff(const Snapshot& before, const Snapshot& after) {
  std::map<std::string, Row> rows;
  for (const auto& [k, v] : after) {
    auto it = before.find(k);
    const int64_t delta = v.bytes - (it == before.end() ? 0 : it->second.bytes);
    if (it != before.end() && delta == 0) continue;
    Row& r = rows[Shape(k)];
    if (it == before.end()) {
      ++r.new_keys;
    } else {
      ++r.grown_keys;
    }
    r.bytes += delta;
  }
  return rows;
}

void Print(const char* title, const std::map<std::string, Row>& rows, int64_t items, int64_t used_delta) {
  std::printf("\n%s (%lld items)\n", title, static_cast<long long>(items));
  std::printf("  %-44s %10s %10s %14s\n", "key shape", "new keys", "grown", "bytes/item");
  int64_t total = 0;
  double keys = 0;
  for (const auto& [shape, r] : rows) {
    std::printf("  %-44s %10lld %10lld %14.1f\n", shape.c_str(), static_cast<long long>(r.new_keys),
                static_cast<long long>(r.grown_keys), static_cast<double>(r.bytes) / static_cast<double>(items));
    total += r.bytes;
    keys += static_cast<double>(r.new_keys);
  }
  std::printf("  %-44s %10.2f %10s %14.1f\n", "TOTAL (MEMORY USAGE; new keys per item)",
              keys / static_cast<double>(items), "", static_cast<double>(total) / static_cast<double>(items));
  std::printf("  %-44s %10s %10s %14.1f\n", "INFO used_memory delta", "", "",
              static_cast<double>(used_delta) / static_cast<double>(items));
  std::printf("RESULT %s: keys_per_item=%.2f memory_usage_bytes_per_item=%.1f used_memory_bytes_per_item=%.1f\n",
              title, keys / static_cast<double>(items), static_cast<double>(total) / static_cast<double>(items),
              static_cast<double>(used_delta) / static_cast<double>(items));
}

class StorageBench : public BookingServiceTest {};

TEST_F(StorageBench, PerBookingEventAndAuditEntry) {
  const char* env = getenv("STORAGE_BENCH_BOOKINGS");
  const int n = env != nullptr ? std::max(1, atoi(env)) : 2000;

  // ---- slots
  std::printf("\nHash tags and their Redis Cluster slots (RedisKeySlot)\n");
  std::vector<std::string> tags;
  for (int p = 0; p < kPartitions; ++p) tags.push_back(keys::Tag(p));
  for (const char* t : {"{booking}", "{bk:ids}", "{billing}", "{usage}", "{inventory}"}) tags.emplace_back(t);
  for (const auto& t : tags) std::printf("  %-12s slot %5d\n", t.c_str(), RedisKeySlot(t + ":x"));

  // Billing in process, consuming the booking outboxes with its group as
  // the service does.
  labshare::billing::testing::DirectInventory reader(inv_manager_.get());
  labshare::billing::BillingStore billing_store(pool_.get());
  labshare::billing::BillingManager billing(&billing_store, &reader, &clock_,
                                            *labshare::billing::LoadBillingTimeZone("Asia/Shanghai"),
                                            testing::TestPageTokens());
  std::vector<std::unique_ptr<EventConsumer>> consumers;
  for (int p = 0; p < kPartitions; ++p) {
    ConsumerOptions o;
    o.stream = keys::Outbox(p);
    o.group = labshare::billing::kBookingEventsGroup;
    o.consumer = "storage-bench";
    o.block = absl::ZeroDuration();
    consumers.push_back(std::make_unique<EventConsumer>(pool_.get(), o));
    ASSERT_TRUE(consumers.back()->EnsureGroup().ok());
  }
  auto drain = [&]() {
    for (int round = 0; round < 100; ++round) {
      int n = 0;
      for (auto& c : consumers) {
        auto applied = c->PollOnce([&](const StreamEvent& e) { return billing.ApplyBookingEvent(e); });
        EXPECT_TRUE(applied.ok()) << applied.status();
        n += applied.ok() ? *applied : 0;
      }
      if (n == 0) return;
    }
  };
  auto billing_events = [&]() { return pool_->Command({"XLEN", "{billing}:outbox"})->integer; };

  // ---- bookings: one hour each (+30 min buffer), 16 a day; the clock moves
  // on by 30 days every 480 bookings (the member horizon is 60 days).
  Snapshot s0 = Take(*pool_);
  const int64_t m0 = UsedMemory(*pool_);
  const absl::Time first_day = day_;
  int created = 0;
  for (int k = 0; k < n; ++k) {
    const int in_window = k % 480;
    if (k > 0 && in_window == 0) {
      clock_.Advance(absl::Hours(24 * 30));
      day_ = absl::FromUnixSeconds((absl::ToUnixSeconds(clock_.Now()) / 86400 + 2) * 86400);
      // The qualification lapses after 90 days without a check-in: renew it.
      iv::GrantQualificationRequest g;
      g.set_instrument("instruments/tem");
      g.set_user("users/ana");
      Inv(&iv::InventoryService::Stub::GrantQualification, g);
    }
    const absl::Duration from = absl::Hours(24 * (in_window / 16)) + absl::Minutes(90) * (in_window % 16);
    v1::Booking b;
    grpc::Status s = Book(from, from + absl::Hours(1), &b, absl::StrFormat("req-%08d", k));
    ASSERT_TRUE(s.ok()) << k << ": " << s.error_message();
    ++created;
  }
  day_ = first_day;
  Snapshot s1 = Take(*pool_);  // replaced by the state after the life phase
  const int64_t m1 = UsedMemory(*pool_);
  auto booking_rows = Diff(s0, s1);
  Print("per booking (CreateBooking)", booking_rows, created, m1 - m0);
  // The same, once outbox retention has trimmed the creations' entries
  // (common/outbox_trim.cc: after every group has them and the window has
  // passed): the streams are saved (DUMP), trimmed to nothing (XTRIM MAXLEN
  // 0; the key and its groups stay), measured, and put back (RESTORE), so
  // the phases below still see every event. used_memory: the drop the
  // trims alone caused (DUMP's replies grow the connection's buffers).
  {
    std::vector<std::pair<std::string, std::string>> saved;
    for (int p = 0; p < kPartitions; ++p) {
      auto d = pool_->Command({"DUMP", keys::Outbox(p)});
      ASSERT_TRUE(d.ok());
      if (!d->is_nil()) saved.emplace_back(keys::Outbox(p), d->str);
    }
    const int64_t before_trim = UsedMemory(*pool_);
    for (const auto& [key, dump] : saved) {
      ASSERT_TRUE(pool_->Command({"XTRIM", key, "MAXLEN", "0"}).ok());
    }
    const int64_t after_trim = UsedMemory(*pool_);
    Snapshot t1 = Take(*pool_);
    Print("per booking (CreateBooking), outbox trimmed", Diff(s0, t1), created,
          m1 - m0 - (before_trim - after_trim));
    for (const auto& [key, dump] : saved) {
      auto r = pool_->Command({"RESTORE", key, "0", dump, "REPLACE"});
      ASSERT_TRUE(r.ok() && !r->is_error()) << key;
    }
  }

  // Billing reads the creations (a CONFIRMED booking bills nothing yet).
  drain();

  // ---- a booking's whole life: created, checked in at its start, checked
  // out 50 minutes later (COMPLETED): n / 10 more bookings (at most 480).
  const int life = std::min(480, std::max(10, n / 10));
  clock_.Advance(absl::Hours(24 * 60));
  {
    iv::GrantQualificationRequest g;
    g.set_instrument("instruments/tem");
    g.set_user("users/ana");
    Inv(&iv::InventoryService::Stub::GrantQualification, g);
  }
  day_ = absl::FromUnixSeconds((absl::ToUnixSeconds(clock_.Now()) / 86400 + 2) * 86400);
  const int64_t events_before_life = [&] {
    int64_t e = 0;
    for (int p = 0; p < kPartitions; ++p) e += pool_->Command({"XLEN", keys::Outbox(p)})->integer;
    return e;
  }();
  Snapshot l0 = Take(*pool_);
  const int64_t lm0 = UsedMemory(*pool_);
  std::vector<v1::Booking> lived;
  for (int k = 0; k < life; ++k) {
    const absl::Duration from = absl::Hours(24 * (k / 16)) + absl::Minutes(90) * (k % 16);
    v1::Booking b;
    grpc::Status s = Book(from, from + absl::Hours(1), &b, absl::StrFormat("life-%08d", k));
    ASSERT_TRUE(s.ok()) << k << ": " << s.error_message();
    lived.push_back(b);
  }
  for (const auto& b : lived) {
    clock_.Set(FromProto(b.reserved_interval().start_time()));
    v1::CheckInRequest in;
    in.set_name(b.name());
    in.set_request_id("in-" + b.name());
    v1::Booking out;
    grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::CheckIn, in, &out, ana_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    clock_.Advance(absl::Minutes(50));
    v1::CheckOutRequest co;
    co.set_name(b.name());
    co.set_request_id("out-" + b.name());
    s = Call(stub_.get(), &v1::BookingService::Stub::CheckOut, co, &out, ana_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(out.state(), v1::Booking::COMPLETED);
  }
  Snapshot l1 = Take(*pool_);
  const int64_t lm1 = UsedMemory(*pool_);
  int64_t events_after_life = 0;
  for (int p = 0; p < kPartitions; ++p) events_after_life += pool_->Command({"XLEN", keys::Outbox(p)})->integer;
  Print("per booking, whole life (create, check-in, check-out; booking and inventory)", Diff(l0, l1), life,
        lm1 - lm0);
  std::printf("  booking events per life: %.2f\n",
              static_cast<double>(events_after_life - events_before_life) / life);

  // ---- billing of those lives: charges, postings, ledger, its events
  const int64_t be0 = billing_events();
  const int64_t bm0 = UsedMemory(*pool_);
  drain();
  Snapshot l2 = Take(*pool_);
  const int64_t bm1 = UsedMemory(*pool_);
  Print("per booking, billing of a completed booking (billing consumer)", Diff(l1, l2), life, bm1 - bm0);
  std::printf("  billing events per completed booking: %.2f\n",
              static_cast<double>(billing_events() - be0) / life);
  s1 = std::move(l2);

  // ---- events: the booking outbox streams alone
  int64_t events = 0, stream_bytes = 0, payload_bytes = 0;
  std::vector<StreamEvent> all;
  for (int p = 0; p < kPartitions; ++p) {
    auto v = pool_->Command({"XRANGE", keys::Outbox(p), "-", "+"});
    ASSERT_TRUE(v.ok());
    for (const auto& entry : v->elements) {
      StreamEvent e;
      e.stream_id = entry.elements[0].str;
      const auto& f = entry.elements[1].elements;
      for (size_t i = 0; i + 1 < f.size(); i += 2) {
        if (f[i].str == "type") e.type = f[i + 1].str;
        if (f[i].str == "payload") e.payload = f[i + 1].str;
      }
      payload_bytes += static_cast<int64_t>(e.payload.size());
      all.push_back(std::move(e));
    }
    auto it = s1.find(keys::Outbox(p));
    if (it != s1.end()) stream_bytes += it->second.bytes;
  }
  events = static_cast<int64_t>(all.size());
  ASSERT_GT(events, 0);
  std::printf("\nper event (outbox stream entry, {bk:P}:outbox)\n");
  std::printf("  events %lld (%.2f per booking), payload %.1f bytes on average, stream MEMORY USAGE %.1f bytes/event\n",
              static_cast<long long>(events), static_cast<double>(events) / created,
              static_cast<double>(payload_bytes) / static_cast<double>(events),
              static_cast<double>(stream_bytes) / static_cast<double>(events));
  std::printf("RESULT per event: payload_bytes=%.1f stream_bytes_per_event=%.1f\n",
              static_cast<double>(payload_bytes) / static_cast<double>(events),
              static_cast<double>(stream_bytes) / static_cast<double>(events));

  // ---- audit entries: every booking event appended to the audit trail
  std::string pem;
  if (FILE* f = popen("openssl genpkey -algorithm ed25519 2>/dev/null", "r")) {
    char buf[512];
    size_t got = 0;
    while ((got = fread(buf, 1, sizeof(buf), f)) > 0) pem.append(buf, got);
    pclose(f);
  }
  auto key = labshare::usage::AuditSigningKey::FromPrivateKeyPem(pem);
  labshare::usage::AuditChainOptions options;
  options.clock = &clock_;
  if (key.ok()) options.signing_key = *key;
  labshare::usage::AuditChain chain(pool_.get(), testing::TestPageTokens(), options);
  const int64_t m2 = UsedMemory(*pool_);
  for (const auto& e : all) {
    auto r = chain.Append("booking", e);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  int64_t others = 0;
  for (const char* stream : {"{inventory}:outbox", "{billing}:outbox"}) {
    auto v = pool_->Command({"XRANGE", stream, "-", "+"});
    ASSERT_TRUE(v.ok());
    for (const auto& entry : v->elements) {
      StreamEvent e;
      e.stream_id = entry.elements[0].str;
      const auto& f = entry.elements[1].elements;
      for (size_t i = 0; i + 1 < f.size(); i += 2) {
        if (f[i].str == "type") e.type = f[i + 1].str;
        if (f[i].str == "payload") e.payload = f[i + 1].str;
      }
      auto r = chain.Append(stream[1] == 'i' ? "inventory" : "billing", e);
      ASSERT_TRUE(r.ok()) << r.status();
      ++others;
    }
  }
  events += others;
  Snapshot s3 = Take(*pool_);
  const int64_t m3 = UsedMemory(*pool_);
  Print("per audit entry (usage's audit trail)", Diff(s1, s3), events, m3 - m2);
  std::printf("  (head signed: %s)\n", options.signing_key ? "yes" : "no");
}

}  // namespace
}  // namespace labshare::booking
