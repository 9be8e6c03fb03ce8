#include "services/booking/booking_lists.h"

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/page_token.h"
#include "common/proto_util.h"
#include "services/booking/booking_common.h"

namespace labshare::booking {
namespace {

std::string OrgId(const std::string& name) { return name.empty() ? "" : IdOf(name); }

// Distinct non-empty organisation ids of the given names, in order.
std::vector<std::string> Orgs(std::initializer_list<const std::string*> names) {
  std::vector<std::string> out;
  for (const std::string* n : names) {
    const std::string id = OrgId(*n);
    if (!id.empty() && std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
  }
  return out;
}

bool Before(const ListingEntry& a, const ListingEntry& b) {
  return a.ms != b.ms ? a.ms < b.ms : a.id < b.id;
}

// Entries each source is asked for in a batch of `want`: all of them from a
// single source; from several, a share (twice the even split, at least 8)
// instead of `want` each, and MergePages keeps only what is certainly in
// order (a page of 50 over 16 partitions reads about 130 entries, not 816).
int PerSource(int want, size_t sources) {
  if (sources <= 1) return want;
  const int even = static_cast<int>((static_cast<size_t>(want) + sources - 1) / sources);
  return std::min(want, std::max(8, 2 * even));
}

// One batch merged: in list order, without duplicates, at most `want`, and
// nothing after the last entry of a source that may hold more (it answered
// a full `per`): its unread entries could come before those. *more: some
// source may hold entries after the returned ones.
std::vector<ListingEntry> MergePages(std::vector<std::vector<ListingEntry>> pages, int per, int want,
                                     bool descending, bool* more) {
  auto in_order = [descending](const ListingEntry* a, const ListingEntry* b) {
    return descending ? Before(*b, *a) : Before(*a, *b);
  };
  // Sorted as pointers (about 130 entries a page of 50): no entry moves
  // until the page is known.
  std::vector<ListingEntry*> order;
  const ListingEntry* cutoff = nullptr;
  *more = false;
  for (auto& page : pages) {
    if (!page.empty() && static_cast<int>(page.size()) == per) {
      *more = true;
      if (cutoff == nullptr || in_order(&page.back(), cutoff)) cutoff = &page.back();
    }
    for (auto& e : page) order.push_back(&e);
  }
  std::sort(order.begin(), order.end(), in_order);
  auto same = [](const ListingEntry* a, const ListingEntry* b) { return a->ms == b->ms && a->id == b->id; };
  order.erase(std::unique(order.begin(), order.end(), same), order.end());
  if (cutoff != nullptr) order.erase(std::upper_bound(order.begin(), order.end(), cutoff, in_order), order.end());
  if (static_cast<int>(order.size()) > want) {
    order.resize(static_cast<size_t>(want));  // beyond this, another source may come first
    *more = true;
  }
  std::vector<ListingEntry> merged;
  merged.reserve(order.size());
  for (ListingEntry* e : order) merged.push_back(std::move(*e));
  return merged;
}

absl::StatusOr<std::optional<ListingEntry>> ParsePosition(const std::string& after) {
  if (after.empty()) return std::optional<ListingEntry>();
  const size_t bar = after.find('|');
  ListingEntry e;
  if (bar == std::string::npos || bar + 1 >= after.size() || !absl::SimpleAtoi(after.substr(0, bar), &e.ms)) {
    return InvalidField("page_token",
                        "not a token from the previous page of this same query; start again without page_token",
                        "INVALID_PAGE_TOKEN");
  }
  e.id = after.substr(bar + 1);
  return std::optional<ListingEntry>(std::move(e));
}

}  // namespace

std::vector<std::string> BookingListingKeys(int p, const v1::Booking& b, const std::string& operator_org) {
  std::vector<std::string> out = {keys::ListAll(p, 'b')};
  if (!b.user().empty()) out.push_back(keys::ListBy(p, 'b', "user", IdOf(b.user())));
  std::vector<std::string> orgs = Orgs({&b.instrument_owner(), &operator_org, &b.payer_organization()});
  for (const auto& share : b.cost_shares()) {
    const std::string id = OrgId(share.organization());
    if (!id.empty() && std::find(orgs.begin(), orgs.end(), id) == orgs.end()) orgs.push_back(id);
  }
  for (const auto& org : orgs) out.push_back(keys::ListBy(p, 'b', "org", org));
  return out;
}

std::vector<std::string> LeaseListingKeys(int p, const v1::Lease& l, const std::string& operator_org) {
  std::vector<std::string> out = {keys::ListAll(p, 'l')};
  for (const auto& org : Orgs({&l.instrument_owner(), &operator_org, &l.lessee_organization()})) {
    out.push_back(keys::ListBy(p, 'l', "org", org));
  }
  return out;
}

std::vector<IndexOp> OrderListingOps(int p, const v1::ServiceOrder& o, const std::string& operator_org) {
  const std::string member = keys::IndexMember(Ms(FromProto(o.create_time())), IdOf(o.name()));
  std::vector<IndexOp> out = {{keys::ListAll(p, 'o'), member, false},
                              {keys::ListBy(p, 'o', "instr", IdOf(o.instrument())), member, false}};
  for (const auto& org : Orgs({&o.instrument_owner(), &operator_org, &o.client_organization()})) {
    out.push_back({keys::ListBy(p, 'o', "org", org), member, false});
  }
  return out;
}

std::vector<ListingSource> EveryPartition(char kind, const std::string& dimension, const std::string& id,
                                          bool lex) {
  std::vector<ListingSource> out;
  for (int p = 0; p < kPartitions; ++p) {
    out.push_back({p, dimension.empty() ? keys::ListAll(p, kind) : keys::ListBy(p, kind, dimension, id), lex});
  }
  return out;
}

absl::StatusOr<bool> ParseOrderBy(const std::string& order_by, absl::string_view field_name,
                                  bool default_descending) {
  const std::string f(field_name);
  if (order_by.empty()) return default_descending;
  if (order_by == f || order_by == f + " asc") return false;
  if (order_by == f + " desc") return true;
  return InvalidField("order_by", absl::StrCat("use \"", f, "\", \"", f, " asc\" or \"", f, " desc\""));
}

absl::Status CheckPageSize(int32_t page_size) {
  if (page_size >= 0) return absl::OkStatus();
  return InvalidField("page_size", absl::StrCat("must not be negative: 0 for the default (", kDefaultPageSize,
                                                "), at most ", kMaxPageSize, " per page"));
}

ListScope ScopeOf(const Principal& p) {
  ListScope s;
  s.all = p.HasAnyRole({Role::kConsortiumAdmin, Role::kAuditor, Role::kService});
  s.lab_user = p.HasRole(Role::kLabUser);
  s.billing = p.HasRole(Role::kMemberBillingAdmin);
  s.staff = p.HasRole(Role::kFacilityStaff);
  s.self = "users/" + p.user_id;
  s.org = ActorOrganization(p);
  return s;
}

absl::StatusOr<std::string> RunListing(const BookingStore& store, const ListQuery& q,
                                       const std::function<absl::StatusOr<bool>(std::string& data)>& take) {
  LS_ASSIGN_OR_RETURN(std::optional<ListingEntry> cursor, ParsePosition(q.after));
  // The smallest candidate (one round trip of ZCARDs when there is a choice).
  std::vector<ListingSource> sources;
  if (q.candidates.size() == 1) {
    sources = q.candidates.front();
  } else if (!q.candidates.empty()) {
    std::vector<ListingSource> all;
    for (const auto& c : q.candidates) all.insert(all.end(), c.begin(), c.end());
    LS_ASSIGN_OR_RETURN(std::vector<int64_t> sizes, store.ListingSizes(all));
    size_t at = 0, best = 0;
    int64_t best_size = std::numeric_limits<int64_t>::max();
    for (size_t i = 0; i < q.candidates.size(); ++i) {
      int64_t size = 0;
      for (size_t j = 0; j < q.candidates[i].size() && at < sizes.size(); ++j) size += sizes[at++];
      if (size < best_size) {
        best_size = size;
        best = i;
      }
    }
    sources = q.candidates[best];
  }
  int64_t lo = q.lo_ms;
  if (q.widen_by_span) {
    LS_ASSIGN_OR_RETURN(std::vector<int64_t> spans, store.ListingSpans());
    const int64_t span = spans.empty() ? 0 : *std::max_element(spans.begin(), spans.end());
    lo = lo - span;
  }
  auto position = [](const ListingEntry& e) { return keys::IndexMember(e.ms, e.id); };
  int kept = 0, scanned = 0;
  while (true) {
    const int want = std::min(std::max(q.page_size - kept + 1, 16), kListScanBudget - scanned);
    const int per = PerSource(want, sources.size());
    LS_ASSIGN_OR_RETURN(auto pages, store.ListingPages(sources, q.descending, lo, q.hi_ms, cursor, per));
    bool more = false;  // some source may hold entries after this batch
    std::vector<ListingEntry> merged = MergePages(std::move(pages), per, want, q.descending, &more);
    // Documents in chunks of what the page still needs.
    size_t i = 0;
    while (i < merged.size()) {
      if (kept == q.page_size) return position(*cursor);
      const size_t n = std::min(merged.size() - i, static_cast<size_t>(std::max(q.page_size - kept, 1)));
      std::vector<std::string> doc_keys;
      for (size_t j = i; j < i + n; ++j) doc_keys.push_back(q.doc_key(merged[j].partition, merged[j].id));
      LS_ASSIGN_OR_RETURN(auto docs, store.docs().GetMany(doc_keys));
      for (size_t j = 0; j < n; ++j, ++i) {
        if (kept == q.page_size) return position(*cursor);
        ++scanned;
        cursor = merged[i];
        if (j >= docs.size() || !docs[j]) continue;  // not of this kind (a booking that is no lease)
        LS_ASSIGN_OR_RETURN(bool took, take(docs[j]->data));
        if (took) ++kept;
      }
    }
    if (!more) return std::string();
    if (kept == q.page_size || scanned >= kListScanBudget) return position(*cursor);
  }
}

namespace {

// RunListing's loop as a chain of callbacks: the same steps in the same
// order, each one read on the pipeline.
class ListingRun : public std::enable_shared_from_this<ListingRun> {
 public:
  ListingRun(const BookingStore& store, ListQuery q, std::function<absl::StatusOr<bool>(std::string&)> take,
             std::function<void(absl::StatusOr<std::string>)> done)
      : store_(store), q_(std::move(q)), take_(std::move(take)), done_(std::move(done)) {}

  void Start() {
    auto cursor = ParsePosition(q_.after);
    if (!cursor.ok()) return done_(cursor.status());
    cursor_ = *std::move(cursor);
    if (q_.candidates.size() == 1) {
      sources_ = q_.candidates.front();
      return Span();
    }
    if (q_.candidates.empty()) return Span();
    std::vector<ListingSource> all;
    for (const auto& c : q_.candidates) all.insert(all.end(), c.begin(), c.end());
    store_.ListingSizesAsync(std::move(all), [self = shared_from_this()](absl::StatusOr<std::vector<int64_t>> sizes) {
      if (!sizes.ok()) return self->done_(sizes.status());
      size_t at = 0, best = 0;
      int64_t best_size = std::numeric_limits<int64_t>::max();
      for (size_t i = 0; i < self->q_.candidates.size(); ++i) {
        int64_t size = 0;
        for (size_t j = 0; j < self->q_.candidates[i].size() && at < sizes->size(); ++j) size += (*sizes)[at++];
        if (size < best_size) {
          best_size = size;
          best = i;
        }
      }
      self->sources_ = self->q_.candidates[best];
      self->Span();
    });
  }

 private:
  std::string Position() const { return keys::IndexMember(cursor_->ms, cursor_->id); }

  void Span() {
    lo_ = q_.lo_ms;
    if (!q_.widen_by_span) return Batch();
    store_.ListingSpansAsync([self = shared_from_this()](absl::StatusOr<std::vector<int64_t>> spans) {
      if (!spans.ok()) return self->done_(spans.status());
      const int64_t span = spans->empty() ? 0 : *std::max_element(spans->begin(), spans->end());
      self->lo_ -= span;
      self->Batch();
    });
  }

  void Batch() {
    want_ = std::min(std::max(q_.page_size - kept_ + 1, 16), kListScanBudget - scanned_);
    per_ = PerSource(want_, sources_.size());
    store_.ListingPagesAsync(
        sources_, q_.descending, lo_, q_.hi_ms, cursor_, per_,
        [self = shared_from_this()](absl::StatusOr<std::vector<std::vector<ListingEntry>>> pages) {
          if (!pages.ok()) return self->done_(pages.status());
          self->Merge(*std::move(pages));
        });
  }

  void Merge(std::vector<std::vector<ListingEntry>> pages) {
    merged_ = MergePages(std::move(pages), per_, want_, q_.descending, &more_);
    i_ = 0;
    Docs();
  }

  // Documents in chunks of what the page still needs.
  void Docs() {
    if (i_ >= merged_.size()) {
      if (!more_) return done_(std::string());
      if (kept_ == q_.page_size || scanned_ >= kListScanBudget) return done_(Position());
      return Batch();
    }
    if (kept_ == q_.page_size) return done_(Position());
    const size_t n = std::min(merged_.size() - i_, static_cast<size_t>(std::max(q_.page_size - kept_, 1)));
    std::vector<std::string> doc_keys;
    for (size_t j = i_; j < i_ + n; ++j) doc_keys.push_back(q_.doc_key(merged_[j].partition, merged_[j].id));
    store_.GetDocsAsync(std::move(doc_keys),
                        [self = shared_from_this(), n](absl::StatusOr<std::vector<std::optional<StoredDoc>>> docs) {
                          if (!docs.ok()) return self->done_(docs.status());
                          if (!self->q_.offload) return self->Take(*docs, n);
                          auto d = std::make_shared<std::vector<std::optional<StoredDoc>>>(*std::move(docs));
                          absl::Status offloaded = self->q_.offload([self, d, n] { self->Take(*d, n); });
                          if (!offloaded.ok()) self->done_(offloaded);
                        });
  }

  void Take(std::vector<std::optional<StoredDoc>>& docs, size_t n) {
    for (size_t j = 0; j < n; ++j, ++i_) {
      if (kept_ == q_.page_size) return done_(Position());
      ++scanned_;
      cursor_ = merged_[i_];
      if (j >= docs.size() || !docs[j]) continue;  // not of this kind (a booking that is no lease)
      absl::StatusOr<bool> took = take_(docs[j]->data);
      if (!took.ok()) return done_(took.status());
      if (*took) ++kept_;
    }
    Docs();
  }

  const BookingStore& store_;
  const ListQuery q_;
  const std::function<absl::StatusOr<bool>(std::string&)> take_;
  const std::function<void(absl::StatusOr<std::string>)> done_;
  std::optional<ListingEntry> cursor_;
  std::vector<ListingSource> sources_;
  int64_t lo_ = 0;
  int kept_ = 0, scanned_ = 0, want_ = 0, per_ = 0;
  std::vector<ListingEntry> merged_;
  bool more_ = false;
  size_t i_ = 0;
};

}  // namespace

void RunListingAsync(const BookingStore& store, ListQuery q,
                     std::function<absl::StatusOr<bool>(std::string& data)> take,
                     std::function<void(absl::StatusOr<std::string>)> done) {
  std::make_shared<ListingRun>(store, std::move(q), std::move(take), std::move(done))->Start();
}

absl::StatusOr<bool> OwnsOrOperates::operator()(const std::string& instrument) {
  if (org_.empty()) return false;
  auto it = known_.find(instrument);
  if (it != known_.end()) return it->second;
  auto in = inventory_->Instrument(instrument);
  if (!in.ok() && in.status().code() != absl::StatusCode::kNotFound) return in.status();
  const bool yes = in.ok() && ((*in)->owner_organization() == org_ || (*in)->operator_organization() == org_);
  known_[instrument] = yes;
  return yes;
}

absl::StatusOr<int64_t> MigrateListings(
    const BookingStore& store, const std::function<absl::StatusOr<std::string>(const std::string&)>& operator_of) {
  std::map<std::string, std::string> operators;  // instrument -> operator organisation, asked once each
  auto operator_once = [&](const std::string& instrument) -> absl::StatusOr<std::string> {
    auto it = operators.find(instrument);
    if (it != operators.end()) return it->second;
    LS_ASSIGN_OR_RETURN(std::string op, operator_of(instrument));
    operators[instrument] = op;
    return op;
  };
  const std::string done = "{booking}:migrated:lists";
  LS_ASSIGN_OR_RETURN(RedisValue marker, store.docs().pool()->Command({"EXISTS", done}));
  if (marker.integer == 1) return 0;
  int64_t indexed = 0;
  std::vector<int64_t> spans(kPartitions, 0);
  // "{bk:<p>}:<kind>:<id>" -> p, or -1 when not one of ours.
  auto partition_of = [](const std::string& key, absl::string_view kind, std::string* id) {
    const size_t close = key.find('}');
    int p = -1;
    if (key.rfind("{bk:", 0) != 0 || close == std::string::npos || !absl::SimpleAtoi(key.substr(4, close - 4), &p) ||
        p < 0 || p >= kPartitions) {
      return -1;
    }
    const std::string prefix = absl::StrCat(":", kind, ":");
    if (key.compare(close + 1, prefix.size(), prefix) != 0) return -1;
    *id = key.substr(close + 1 + prefix.size());
    return p;
  };
  for (absl::string_view kind : {"booking", "lease", "order"}) {
    std::string cursor = "0";
    do {
      LS_ASSIGN_OR_RETURN(auto step, store.ScanKeys(cursor, absl::StrCat("{bk:*}:", kind, ":*")));
      cursor = step.first;
      std::vector<std::string> doc_keys;
      std::vector<int> parts;
      for (const auto& key : step.second) {
        std::string id;
        const int p = partition_of(key, kind, &id);
        if (p < 0) continue;
        doc_keys.push_back(key);
        parts.push_back(p);
      }
      if (doc_keys.empty()) continue;
      LS_ASSIGN_OR_RETURN(auto docs, store.docs().GetMany(doc_keys));
      std::vector<std::pair<ListingSource, ListingEntry>> adds;
      for (size_t i = 0; i < docs.size() && i < doc_keys.size(); ++i) {
        if (!docs[i]) continue;
        const int p = parts[i];
        std::vector<std::string> index_keys;
        ListingEntry entry;
        entry.partition = p;
        bool lex = false;
        if (kind == "booking") {
          v1::Booking b;
          if (!b.ParseFromString(docs[i]->data) || b.name().empty()) continue;
          LS_ASSIGN_OR_RETURN(std::string op, operator_once(b.instrument()));
          index_keys = BookingListingKeys(p, b, op);
          entry.id = IdOf(b.name());
          entry.ms = Ms(FromProto(b.reserved_interval().start_time()));
          const int64_t span = CeilMs(FromProto(b.blocked_interval().end_time())) - entry.ms;
          spans[static_cast<size_t>(p)] = std::max(spans[static_cast<size_t>(p)], span);
        } else if (kind == "lease") {
          v1::Lease l;
          if (!l.ParseFromString(docs[i]->data) || l.name().empty()) continue;
          LS_ASSIGN_OR_RETURN(std::string op, operator_once(l.instrument()));
          index_keys = LeaseListingKeys(p, l, op);
          entry.id = IdOf(l.name());
          entry.ms = Ms(FromProto(l.term().start_time()));
        } else {
          v1::ServiceOrder o;
          if (!o.ParseFromString(docs[i]->data) || o.name().empty()) continue;
          LS_ASSIGN_OR_RETURN(std::string op, operator_once(o.instrument()));
          for (const auto& ix : OrderListingOps(p, o, op)) index_keys.push_back(ix.key);
          entry.id = IdOf(o.name());
          entry.ms = Ms(FromProto(o.create_time()));
          lex = true;
        }
        for (auto& k : index_keys) adds.push_back({ListingSource{p, std::move(k), lex}, entry});
        ++indexed;
      }
      LS_RETURN_IF_ERROR(store.AddListings(adds));
    } while (cursor != "0");
  }
  for (int p = 0; p < kPartitions; ++p) {
    if (spans[static_cast<size_t>(p)] > 0) LS_RETURN_IF_ERROR(store.RaiseListingSpan(p, spans[static_cast<size_t>(p)]));
  }
  LS_RETURN_IF_ERROR(store.docs().pool()->Command({"SET", done, "1"}).status());
  return indexed;
}

namespace {

// The index writes that take one document's entries from `before` (the
// keys the old operator gave it) to `after`.
void Refile(const std::vector<std::string>& before, const std::vector<std::string>& after,
            const std::string& member, int64_t score, std::vector<RefileOp>* ops) {
  auto in = [](const std::vector<std::string>& keys, const std::string& k) {
    return std::find(keys.begin(), keys.end(), k) != keys.end();
  };
  for (const auto& k : after) {
    if (!in(before, k)) ops->push_back({k, member, score, false});
  }
  for (const auto& k : before) {
    if (!in(after, k)) ops->push_back({k, member, score, true});
  }
}

std::vector<std::string> KeysOf(const std::vector<IndexOp>& ops) {
  std::vector<std::string> out;
  for (const auto& op : ops) out.push_back(op.key);
  return out;
}

// The member an entry of the instrument's booking ('b') or order ('o')
// index has in the other listing indexes of its kind.
std::string MemberOf(char kind, const ListingEntry& e) {
  return kind == 'o' ? keys::IndexMember(e.ms, e.id) : e.id;
}

// One batch's writes: `entries` of the instrument's booking index (kind
// 'b': each booking and, when it is one, its lease) or order index ('o').
// `froms`: the operators the entries may be filed under now (the record's,
// and the target of a re-filing that stopped part-way; without a record,
// those FiledUnder finds).
absl::StatusOr<std::vector<RefileOp>> RefileBatch(const BookingStore& store, int p, char kind,
                                                  const std::vector<ListingEntry>& entries,
                                                  const std::vector<std::string>& froms, const std::string& to) {
  std::vector<std::string> doc_keys;
  for (const auto& e : entries) {
    if (kind == 'b') {
      doc_keys.push_back(keys::Booking(p, e.id));
      doc_keys.push_back(keys::Lease(p, e.id));
    } else {
      doc_keys.push_back(keys::Order(p, e.id));
    }
  }
  LS_ASSIGN_OR_RETURN(auto docs, store.docs().GetMany(doc_keys));
  if (docs.size() != doc_keys.size()) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected document read");
  }
  std::vector<RefileOp> ops;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (!docs[i]) continue;  // no lease of this booking
    for (const std::string& from : froms) {
      if (kind == 'o') {
        v1::ServiceOrder o;
        if (!o.ParseFromString(docs[i]->data) || o.name().empty()) continue;
        const std::string member = keys::IndexMember(Ms(FromProto(o.create_time())), IdOf(o.name()));
        Refile(KeysOf(OrderListingOps(p, o, from)), KeysOf(OrderListingOps(p, o, to)), member, 0, &ops);
      } else if (i % 2 == 0) {
        v1::Booking b;
        if (!b.ParseFromString(docs[i]->data) || b.name().empty()) continue;
        Refile(BookingListingKeys(p, b, from), BookingListingKeys(p, b, to), IdOf(b.name()),
               Ms(FromProto(b.reserved_interval().start_time())), &ops);
      } else {
        v1::Lease l;
        if (!l.ParseFromString(docs[i]->data) || l.name().empty()) continue;
        Refile(LeaseListingKeys(p, l, from), LeaseListingKeys(p, l, to), IdOf(l.name()),
               Ms(FromProto(l.term().start_time())), &ops);
      }
    }
  }
  return ops;
}

// Without a record: of the `candidates` (organisation names), those whose
// "org" index of the batch's kind holds any of its entries, after "" (the
// keys every operator gives a document: the new operator's are added).
absl::StatusOr<std::vector<std::string>> FiledUnder(const BookingStore& store, int p, char kind,
                                                    const std::vector<ListingEntry>& entries,
                                                    const std::vector<std::string>& candidates) {
  std::vector<std::string> members;
  for (const auto& e : entries) members.push_back(MemberOf(kind, e));
  std::vector<std::pair<std::string, std::vector<std::string>>> sets;
  for (const auto& org : candidates) {
    for (char k : kind == 'o' ? std::string("o") : std::string("bl")) {
      sets.push_back({keys::ListBy(p, k, "org", OrgId(org)), members});
    }
  }
  LS_ASSIGN_OR_RETURN(std::vector<bool> hold, store.HoldAny(sets));
  std::vector<std::string> out = {""};
  for (size_t i = 0; i < sets.size(); ++i) {
    const std::string& org = candidates[i / (kind == 'o' ? 1 : 2)];
    if (hold[i] && std::find(out.begin(), out.end(), org) == out.end()) out.push_back(org);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::vector<std::string>>> ListingOrgs(const BookingStore& store, int partition) {
  std::vector<std::vector<std::string>> out(kPartitions);
  const std::string pattern = absl::StrCat(partition < 0 ? "{bk:*}" : keys::Tag(partition), ":ls:?:org:*");
  std::string cursor = "0";
  do {
    LS_ASSIGN_OR_RETURN(auto step, store.ScanKeys(cursor, pattern));
    cursor = step.first;
    for (const auto& key : step.second) {
      // "{bk:<p>}:ls:<kind>:org:<org id>"
      const size_t close = key.find('}');
      int p = -1;
      if (key.rfind("{bk:", 0) != 0 || close == std::string::npos || !absl::SimpleAtoi(key.substr(4, close - 4), &p) ||
          p < 0 || p >= kPartitions || key.size() <= close + 11 || key.compare(close + 1, 4, ":ls:") != 0 ||
          key.compare(close + 6, 5, ":org:") != 0) {
        continue;
      }
      const std::string org = "organizations/" + key.substr(close + 11);
      auto& orgs = out[static_cast<size_t>(p)];
      if (std::find(orgs.begin(), orgs.end(), org) == orgs.end()) orgs.push_back(org);
    }
  } while (cursor != "0");
  return out;
}

absl::StatusOr<int64_t> RefileOperator(const BookingStore& store, const std::string& instrument_id, int64_t etag,
                                       const std::string& operator_org, const RefileOptions& options) {
  using Outcome = BookingStore::RefileOutcome;
  using Phase = BookingStore::RefilePhase;
  const int p = keys::Partition(instrument_id);
  const int batch = std::max(options.batch, 1);
  int steps = 0;
  auto step = [&](const ListingOperator& seen, const std::vector<RefileOp>& ops,
                  Phase phase) -> absl::StatusOr<Outcome> {
    if (options.max_steps > 0 && steps == options.max_steps) {
      return MakeError(absl::StatusCode::kUnavailable, "STORAGE_UNAVAILABLE", "re-filing stopped (test)");
    }
    ++steps;
    return store.RefileStep(p, instrument_id, seen, operator_org, etag, ops, phase);
  };
  const ListingSource sources[] = {{p, keys::ByInstrument(p, instrument_id), false},
                                   {p, keys::ListBy(p, 'o', "instr", instrument_id), true}};
  // A record that moved meanwhile (another replica handled a later event,
  // or the same one): read it again and start over.
  for (int attempt = 0; attempt < 5; ++attempt) {
    LS_ASSIGN_OR_RETURN(ListingOperator seen, store.GetListingOperator(p, instrument_id));
    if (seen.known && seen.etag >= etag) return 0;
    int64_t looked = 0;
    bool moved = false;
    // A re-filing towards another operator that stopped part-way left some
    // entries under its target: they are re-filed from both.
    const bool half_done = seen.known && seen.next_etag != 0 && seen.next_org != seen.org;
    std::vector<std::string> froms = {seen.org};
    if (half_done) froms.push_back(seen.next_org);
    // Only the etag moves (nothing half done towards another operator).
    const bool same = seen.known && seen.org == operator_org && (!half_done || seen.next_org == operator_org);
    if (!same) {
      // From here on a create from an operator read earlier is refused,
      // so none lands behind the scan.
      LS_ASSIGN_OR_RETURN(Outcome outcome, step(seen, {}, Phase::kAnnounce));
      if (outcome == Outcome::kDone) return 0;
      if (outcome == Outcome::kMoved) continue;
    }
    // Without a record (data of a version before the records) the operators
    // the entries are filed under are found in the partition's "org"
    // indexes: every organisation that has one, and every operator another
    // re-filing announced (read after this one's announcement, so whatever
    // such a re-filing wrote before is seen; after it, that one writes no
    // more, or this one does not: the later change wins).
    // With a record: the operators other re-filings announced since it was
    // last completed (read after this one's announcement, as below). An
    // earlier one that moved entries to its target stops at this one's
    // announcement, maybe part-way, and this one takes them from there.
    if (seen.known && !same) {
      LS_ASSIGN_OR_RETURN(ListingOperator now, store.GetListingOperator(p, instrument_id));
      for (auto& org : now.announced) {
        if (org != operator_org && std::find(froms.begin(), froms.end(), org) == froms.end()) froms.push_back(org);
      }
    }
    std::vector<std::string> candidates;
    if (!seen.known) {
      LS_ASSIGN_OR_RETURN(ListingOperator now, store.GetListingOperator(p, instrument_id));
      if (now.known) continue;  // completed meanwhile
      if (options.orgs != nullptr) {
        candidates = (*options.orgs)[static_cast<size_t>(p)];
      } else {
        LS_ASSIGN_OR_RETURN(auto orgs, ListingOrgs(store, p));
        candidates = std::move(orgs[static_cast<size_t>(p)]);
      }
      for (auto& org : now.announced) {
        if (std::find(candidates.begin(), candidates.end(), org) == candidates.end()) candidates.push_back(org);
      }
    }
    for (size_t s = 0; s < 2 && !same && !moved; ++s) {
      const char kind = s == 0 ? 'b' : 'o';
      std::optional<ListingEntry> after;
      while (true) {
        LS_ASSIGN_OR_RETURN(auto pages, store.ListingPages({sources[s]}, false, std::numeric_limits<int64_t>::min(),
                                                           std::numeric_limits<int64_t>::max(), after, batch));
        if (pages.empty() || pages[0].empty()) break;
        const std::vector<ListingEntry>& entries = pages[0];
        std::vector<std::string> filed = froms;
        if (!seen.known) {
          LS_ASSIGN_OR_RETURN(filed, FiledUnder(store, p, kind, entries, candidates));
        }
        LS_ASSIGN_OR_RETURN(std::vector<RefileOp> ops, RefileBatch(store, p, kind, entries, filed, operator_org));
        looked += static_cast<int64_t>(entries.size());
        LS_ASSIGN_OR_RETURN(Outcome outcome, step(seen, ops, Phase::kBatch));
        if (outcome == Outcome::kDone) return looked;
        if (outcome == Outcome::kMoved) {
          moved = true;
          break;
        }
        if (static_cast<int>(entries.size()) < batch) break;
        after = entries.back();
      }
    }
    if (moved) continue;
    LS_ASSIGN_OR_RETURN(Outcome outcome, step(seen, {}, Phase::kFinish));
    if (outcome != Outcome::kMoved) return looked;
  }
  return MakeError(absl::StatusCode::kAborted, "CONCURRENT_MODIFICATION",
                   "the instrument's listing operator kept moving; the event is retried");
}

absl::StatusOr<int64_t> RefileStaleOperators(
    const BookingStore& store,
    const std::function<absl::StatusOr<std::optional<CurrentOperator>>(const std::string&)>& current,
    const RefileOptions& options) {
  const std::string done = "{booking}:migrated:refile";
  LS_ASSIGN_OR_RETURN(RedisValue marker, store.docs().pool()->Command({"EXISTS", done}));
  if (marker.integer == 1) return 0;
  std::set<std::string> instruments;
  for (const std::string& index : {std::string(":bystart:"), std::string(":ls:o:instr:")}) {
    std::string cursor = "0";
    do {
      LS_ASSIGN_OR_RETURN(auto step, store.ScanKeys(cursor, absl::StrCat("{bk:*}", index, "*")));
      cursor = step.first;
      for (const auto& key : step.second) {
        // "{bk:<p>}<index><instrument id>", p the id's partition.
        const size_t close = key.find('}');
        if (key.rfind("{bk:", 0) != 0 || close == std::string::npos ||
            key.compare(close + 1, index.size(), index) != 0) {
          continue;
        }
        std::string id = key.substr(close + 1 + index.size());
        if (!id.empty() && key.compare(0, close + 1, keys::Tag(keys::Partition(id))) == 0) {
          instruments.insert(std::move(id));
        }
      }
    } while (cursor != "0");
  }
  LS_ASSIGN_OR_RETURN(auto orgs, ListingOrgs(store));
  RefileOptions with = options;
  with.orgs = &orgs;
  int64_t refiled = 0;
  for (const std::string& id : instruments) {
    LS_ASSIGN_OR_RETURN(std::optional<CurrentOperator> now, current(id));
    if (!now || now->etag <= 0) continue;  // gone, or no etag to file it at
    LS_ASSIGN_OR_RETURN(ListingOperator seen, store.GetListingOperator(keys::Partition(id), id));
    const bool half_done = seen.known && seen.next_etag != 0 && seen.next_org != seen.org;
    if (seen.known && seen.org == now->org && !half_done) continue;
    LS_RETURN_IF_ERROR(RefileOperator(store, id, now->etag, now->org, with).status());
    ++refiled;
  }
  LS_RETURN_IF_ERROR(store.docs().pool()->Command({"SET", done, "1"}).status());
  return refiled;
}

}  // namespace labshare::booking
