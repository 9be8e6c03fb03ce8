#include "services/booking/inventory_client.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"

namespace labshare::booking {
namespace {

absl::Status Downstream(const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
      s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return MakeError(absl::StatusCode::kUnavailable, "INVENTORY_UNAVAILABLE",
                     "the inventory service cannot be reached; retry the request");
  }
  return FromGrpcStatus(s);
}

// The innermost CacheOnly of this thread, if any.
thread_local InventoryClient::CacheOnly* t_cache_only = nullptr;

constexpr char kPagePrefix[] = "Instruments?";

}  // namespace

InventoryClient::CacheOnly::CacheOnly() : outer_(t_cache_only) { t_cache_only = this; }
InventoryClient::CacheOnly::~CacheOnly() { t_cache_only = outer_; }
bool InventoryClient::CacheOnly::missed() const { return missed_; }

absl::Status InventoryClient::MayCall() {
  if (t_cache_only == nullptr) return absl::OkStatus();
  for (CacheOnly* scope = t_cache_only; scope != nullptr; scope = scope->outer_) scope->missed_ = true;
  return MakeError(absl::StatusCode::kUnavailable, "INVENTORY_UNAVAILABLE",
                   "the inventory service cannot be reached; retry the request");
}

InventoryClient::InventoryClient(std::shared_ptr<grpc::Channel> channel, const Clock* clock, absl::Duration ttl,
                                 absl::Duration page_ttl)
    : stub_(inv::InventoryService::NewStub(std::move(channel))),
      clock_(clock),
      ttl_(ttl),
      page_ttl_(std::min(ttl, page_ttl)) {}

std::unique_ptr<grpc::ClientContext> InventoryClient::Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return ctx;
}

absl::StatusOr<InventoryClient::Any> InventoryClient::Cached(
    const std::string& key, const std::function<absl::StatusOr<Any>()>& fetch) {
  const absl::Time now = clock_->Now();
  uint64_t generation = 0;
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    auto it = cache_.find(key);
    const absl::Duration ttl = absl::StartsWith(key, kPagePrefix) ? page_ttl_ : ttl_;
    if (it != cache_.end() && now - it->second.fetched < ttl) return it->second.message;
    generation = generation_;
  }
  LS_RETURN_IF_ERROR(MayCall());
  LS_ASSIGN_OR_RETURN(Any message, fetch());
  std::lock_guard<std::shared_mutex> lock(mu_);
  // An invalidation while fetching may concern what was fetched: use it
  // once, keep it not.
  if (generation != generation_) return message;
  if (!absl::StartsWith(key, kPagePrefix)) {
    cache_.insert_or_assign(key, Entry{message, now});
    return message;
  }
  const size_t bytes = PageBytes(key, message);
  if (key.size() > kMaxPageKeyBytes || bytes > kMaxCachedPageBytes / 16) return message;
  if (auto it = cache_.find(key); it != cache_.end()) {  // another thread's, as fresh
    page_bytes_ -= PageBytes(key, it->second.message);
    --pages_;
    cache_.erase(it);
  }
  if (pages_ >= kMaxCachedPages || page_bytes_ + bytes > kMaxCachedPageBytes) ForgetPagesLocked();
  cache_.emplace(key, Entry{message, now});
  ++pages_;
  page_bytes_ += bytes;
  return message;
}

size_t InventoryClient::PageBytes(const std::string& key, const Any& page) {
  return key.size() + (page == nullptr ? 0 : page->ByteSizeLong());
}

void InventoryClient::ForgetPagesLocked() {
  for (auto it = cache_.begin(); it != cache_.end();) {
    if (absl::StartsWith(it->first, kPagePrefix)) {
      cache_.erase(it++);
    } else {
      ++it;
    }
  }
  pages_ = 0;
  page_bytes_ = 0;
}

size_t InventoryClient::Invalidate(const inv::InventoryEvent& event) {
  std::vector<std::string> keys;
  switch (event.payload_case()) {
    case inv::InventoryEvent::kOrganizationChanged:
      keys.push_back("Organization:" + event.organization_changed().organization().name());
      break;
    case inv::InventoryEvent::kMembershipChanged:
      keys.push_back("Organization:" + event.membership_changed().organization().name());
      break;
    case inv::InventoryEvent::kUserChanged:
      keys.push_back("User:" + event.user_changed().user().name());
      break;
    case inv::InventoryEvent::kFacilityChanged:
      keys.push_back("Facility:" + event.facility_changed().facility().name());
      break;
    case inv::InventoryEvent::kInstrumentChanged:
      keys.push_back("Instrument:" + event.instrument_changed().instrument().name());
      break;
    case inv::InventoryEvent::kRateCreated:
      keys.push_back("Rates:" + event.rate_created().instrument());
      break;
    case inv::InventoryEvent::kQualificationChanged:
      keys.push_back("Qualification:" + event.qualification_changed().qualification().name());
      break;
    case inv::InventoryEvent::kMaintenanceWindowChanged:
      keys.push_back("Windows:" + event.maintenance_window_changed().instrument());
      break;
    case inv::InventoryEvent::PAYLOAD_NOT_SET:
      break;
  }
  std::lock_guard<std::shared_mutex> lock(mu_);
  ++generation_;
  if (keys.empty()) {  // an event this version does not know: forget everything
    const size_t n = cache_.size();
    cache_.clear();
    pages_ = 0;
    page_bytes_ = 0;
    return n;
  }
  size_t n = 0;
  // An instrument's change may move it into or out of any cached page.
  if (event.payload_case() == inv::InventoryEvent::kInstrumentChanged) {
    n += pages_;
    ForgetPagesLocked();
  }
  for (const auto& k : keys) n += cache_.erase(k);
  return n;
}

void InventoryClient::InvalidateAll() {
  std::lock_guard<std::shared_mutex> lock(mu_);
  ++generation_;
  cache_.clear();
  pages_ = 0;
  page_bytes_ = 0;
}

namespace {
template <typename T>
std::shared_ptr<const T> As(const std::shared_ptr<const google::protobuf::Message>& m) {
  return std::static_pointer_cast<const T>(m);
}
}  // namespace

#define LABSHARE_CACHED_GET(Method, Type, Req)                                                    \
  absl::StatusOr<InventoryClient::Shared<inv::Type>> InventoryClient::Method(const std::string& name) { \
    LS_ASSIGN_OR_RETURN(Any m, Cached(#Type ":" + name, [&]() -> absl::StatusOr<Any> {           \
      inv::Req req;                                                                               \
      req.set_name(name);                                                                         \
      auto resp = std::make_shared<inv::Type>();                                                  \
      auto ctx = Context();                                                                       \
      grpc::Status s = stub_->Get##Type(ctx.get(), req, resp.get());                              \
      if (!s.ok()) return Downstream(s);                                                          \
      return Any(std::move(resp));                                                                \
    }));                                                                                          \
    return As<inv::Type>(m);                                                                      \
  }                                                                                               \
  absl::StatusOr<inv::Type> InventoryClient::Get##Type(const std::string& name) {                 \
    LS_ASSIGN_OR_RETURN(auto shared, Method(name));                                               \
    return *shared;                                                                               \
  }
LABSHARE_CACHED_GET(Instrument, Instrument, GetInstrumentRequest)
LABSHARE_CACHED_GET(Facility, Facility, GetFacilityRequest)
LABSHARE_CACHED_GET(User, User, GetUserRequest)
LABSHARE_CACHED_GET(Organization, Organization, GetOrganizationRequest)
#undef LABSHARE_CACHED_GET

absl::StatusOr<InventoryClient::Shared<inv::Qualification>> InventoryClient::Qualification(
    const std::string& instrument, const std::string& user) {
  const std::string name =
      absl::StrCat(instrument, "/qualifications/", user.substr(user.find('/') + 1));
  LS_ASSIGN_OR_RETURN(Any m, Cached("Qualification:" + name, [&]() -> absl::StatusOr<Any> {
    inv::GetQualificationRequest req;
    req.set_name(name);
    auto resp = std::make_shared<inv::Qualification>();
    auto ctx = Context();
    grpc::Status s = stub_->GetQualification(ctx.get(), req, resp.get());
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) return Any();
    if (!s.ok()) return Downstream(s);
    return Any(std::move(resp));
  }));
  return As<inv::Qualification>(m);
}

absl::StatusOr<std::optional<inv::Qualification>> InventoryClient::FindQualification(
    const std::string& instrument, const std::string& user) {
  LS_ASSIGN_OR_RETURN(auto q, Qualification(instrument, user));
  if (q == nullptr) return std::optional<inv::Qualification>();
  return std::optional<inv::Qualification>(*q);
}

absl::StatusOr<InventoryClient::Shared<inv::ListRatesResponse>> InventoryClient::Rates(
    const std::string& instrument) {
  LS_ASSIGN_OR_RETURN(Any m, Cached("Rates:" + instrument, [&]() -> absl::StatusOr<Any> {
    auto all = std::make_shared<inv::ListRatesResponse>();
    inv::ListRatesRequest req;
    req.set_parent(instrument);
    req.set_page_size(500);
    do {
      inv::ListRatesResponse page;
      auto ctx = Context();
      grpc::Status s = stub_->ListRates(ctx.get(), req, &page);
      if (!s.ok()) return Downstream(s);
      for (auto& r : *page.mutable_rates()) *all->add_rates() = std::move(r);
      req.set_page_token(page.next_page_token());
    } while (!req.page_token().empty());
    return Any(std::move(all));
  }));
  return As<inv::ListRatesResponse>(m);
}

absl::StatusOr<std::vector<inv::Rate>> InventoryClient::ListRates(const std::string& instrument) {
  LS_ASSIGN_OR_RETURN(auto all, Rates(instrument));
  return std::vector<inv::Rate>(all->rates().begin(), all->rates().end());
}

absl::StatusOr<InventoryClient::Shared<inv::ListMaintenanceWindowsResponse>> InventoryClient::Windows(
    const std::string& instrument) {
  LS_ASSIGN_OR_RETURN(Any m, Cached("Windows:" + instrument, [&]() -> absl::StatusOr<Any> {
    auto all = std::make_shared<inv::ListMaintenanceWindowsResponse>();
    inv::ListMaintenanceWindowsRequest req;
    req.set_parent(instrument);
    req.set_page_size(500);
    do {
      inv::ListMaintenanceWindowsResponse page;
      auto ctx = Context();
      grpc::Status s = stub_->ListMaintenanceWindows(ctx.get(), req, &page);
      if (!s.ok()) return Downstream(s);
      for (auto& w : *page.mutable_maintenance_windows()) *all->add_maintenance_windows() = std::move(w);
      req.set_page_token(page.next_page_token());
    } while (!req.page_token().empty());
    return Any(std::move(all));
  }));
  return As<inv::ListMaintenanceWindowsResponse>(m);
}

absl::StatusOr<std::vector<inv::MaintenanceWindow>> InventoryClient::ListMaintenanceWindows(
    const std::string& instrument) {
  LS_ASSIGN_OR_RETURN(auto all, Windows(instrument));
  return std::vector<inv::MaintenanceWindow>(all->maintenance_windows().begin(),
                                             all->maintenance_windows().end());
}

absl::StatusOr<inv::ListInstrumentsResponse> InventoryClient::ListInstruments(
    const inv::ListInstrumentsRequest& request) {
  inv::ListInstrumentsResponse resp;
  LS_RETURN_IF_ERROR(MayCall());  // not cached: under CacheOnly, a miss
  auto ctx = Context();
  grpc::Status s = stub_->ListInstruments(ctx.get(), request, &resp);
  if (!s.ok()) return Downstream(s);
  return resp;
}

absl::StatusOr<InventoryClient::Shared<inv::ListInstrumentsResponse>> InventoryClient::Instruments(
    const inv::ListInstrumentsRequest& request) {
  LS_ASSIGN_OR_RETURN(Any m, Cached(kPagePrefix + SerializeDeterministic(request), [&]() -> absl::StatusOr<Any> {
    LS_ASSIGN_OR_RETURN(auto page, ListInstruments(request));
    return Any(std::make_shared<inv::ListInstrumentsResponse>(std::move(page)));
  }));
  return As<inv::ListInstrumentsResponse>(m);
}

absl::StatusOr<inv::MaintenanceWindow> InventoryClient::GetMaintenanceWindow(const std::string& name) {
  LS_RETURN_IF_ERROR(MayCall());  // not cached: under CacheOnly, a miss
  inv::GetMaintenanceWindowRequest req;
  req.set_name(name);
  inv::MaintenanceWindow resp;
  auto ctx = Context();
  grpc::Status s = stub_->GetMaintenanceWindow(ctx.get(), req, &resp);
  if (!s.ok()) return Downstream(s);
  std::lock_guard<std::shared_mutex> lock(mu_);
  ++generation_;
  cache_.erase("Windows:" + name.substr(0, name.find("/maintenanceWindows/")));
  return resp;
}

absl::Status InventoryClient::RecordQualificationUse(const std::string& instrument,
                                                     const std::string& user, absl::Time use_start,
                                                     absl::Time use_time, const std::string& request_id) {
  LS_RETURN_IF_ERROR(MayCall());  // not cached: under CacheOnly, a miss
  inv::RecordQualificationUseRequest req;
  req.set_name(absl::StrCat(instrument, "/qualifications/", user.substr(user.find('/') + 1)));
  *req.mutable_use_time() = ToProto(use_time);
  // A session that began while the qualification was valid renews it,
  // also when it lapsed during the session.
  *req.mutable_use_start_time() = ToProto(std::min(use_start, use_time));
  req.set_request_id(request_id);
  inv::Qualification resp;
  auto ctx = Context();
  grpc::Status s = stub_->RecordQualificationUse(ctx.get(), req, &resp);
  if (s.error_code() == grpc::StatusCode::NOT_FOUND) return absl::OkStatus();  // none needed
  return s.ok() ? absl::OkStatus() : Downstream(s);
}

}  // namespace labshare::booking
