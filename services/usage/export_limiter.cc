#include "services/usage/export_limiter.h"

#include "absl/strings/str_cat.h"
#include "common/error.h"

namespace labshare::usage {

ExportSlot::~ExportSlot() {
  if (limiter_ != nullptr) limiter_->Release(caller_);
}

void ExportLimiter::SetLimits(int max_total, int max_per_caller) {
  absl::MutexLock l(&mu_);
  max_total_ = max_total;
  max_per_caller_ = max_per_caller;
}

absl::StatusOr<ExportSlot> ExportLimiter::Acquire(const std::string& caller) {
  absl::MutexLock l(&mu_);
  int& mine = per_caller_[caller];
  if (mine >= max_per_caller_) {
    if (mine == 0) per_caller_.erase(caller);
    return MakeError(absl::StatusCode::kResourceExhausted, "EXPORT_LIMIT",
                     absl::StrCat("you already have ", max_per_caller_,
                                  " exports running (the limit per caller); finish or cancel one, then retry"),
                     {{"limit", std::to_string(max_per_caller_)}, {"scope", "caller"}});
  }
  if (total_ >= max_total_) {
    if (mine == 0) per_caller_.erase(caller);
    return MakeError(absl::StatusCode::kResourceExhausted, "EXPORT_LIMIT",
                     absl::StrCat("the server is running its maximum of ", max_total_,
                                  " concurrent exports; retry in a moment"),
                     {{"limit", std::to_string(max_total_)}, {"scope", "server"}});
  }
  ++mine;
  ++total_;
  return ExportSlot(this, caller);
}

void ExportLimiter::Release(const std::string& caller) {
  absl::MutexLock l(&mu_);
  --total_;
  auto it = per_caller_.find(caller);
  if (it != per_caller_.end() && --it->second <= 0) per_caller_.erase(it);
}

int ExportLimiter::active() const {
  absl::MutexLock l(&mu_);
  return total_;
}

int ExportLimiter::active(const std::string& caller) const {
  absl::MutexLock l(&mu_);
  auto it = per_caller_.find(caller);
  return it == per_caller_.end() ? 0 : it->second;
}

bool ExportLimiter::AwaitActiveAtMost(int n, absl::Duration timeout) const {
  absl::MutexLock l(&mu_);
  auto reached = [this, n]() { return total_ <= n; };
  return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
}

bool ExportStats::AwaitWritesInProgress(int n, absl::Duration timeout) const {
  absl::MutexLock l(&mu_);
  auto reached = [this, n]() { return writes_in_progress_ >= n; };
  return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
}

}  // namespace labshare::usage
