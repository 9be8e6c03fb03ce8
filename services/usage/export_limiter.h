// Concurrent streaming exports of the usage service (ExportUsage,
// ExportAnnualReportCsv, ExportAuditTrail): at most `max_total` at a time in
// the process and at most `max_per_caller` per caller (token subject), so a
// client that opens many streams and does not read them cannot pin the
// server's memory. Each running export holds a bounded amount (one batch of
// rows or audit entries and the message being written; the gRPC sync API
// blocks Write until the client's flow-control window has room), so memory
// is bounded by max_total x that amount.
//
// ExportStats counts what the streams do, for the metrics of a test: exports
// running, Write calls in progress (a Write that stays in progress is one
// waiting for a slow reader) and bytes handed to gRPC.
#ifndef LABSHARE_SERVICES_USAGE_EXPORT_LIMITER_H_
#define LABSHARE_SERVICES_USAGE_EXPORT_LIMITER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace labshare::usage {

class ExportLimiter;

// A running export; released when destroyed.
class ExportSlot {
 public:
  ExportSlot(ExportSlot&& other) noexcept : limiter_(other.limiter_), caller_(std::move(other.caller_)) {
    other.limiter_ = nullptr;
  }
  ExportSlot& operator=(ExportSlot&&) = delete;
  ExportSlot(const ExportSlot&) = delete;
  ~ExportSlot();

 private:
  friend class ExportLimiter;
  ExportSlot(ExportLimiter* limiter, std::string caller) : limiter_(limiter), caller_(std::move(caller)) {}
  ExportLimiter* limiter_;
  std::string caller_;
};

class ExportLimiter {
 public:
  static constexpr int kDefaultMaxTotal = 32;
  static constexpr int kDefaultMaxPerCaller = 4;

  ExportLimiter(int max_total = kDefaultMaxTotal, int max_per_caller = kDefaultMaxPerCaller)
      : max_total_(max_total), max_per_caller_(max_per_caller) {}
  ExportLimiter(const ExportLimiter&) = delete;
  ExportLimiter& operator=(const ExportLimiter&) = delete;

  void SetLimits(int max_total, int max_per_caller);

  // A slot for one more export of `caller`, or RESOURCE_EXHAUSTED
  // (EXPORT_LIMIT) with a message saying which limit was hit.
  absl::StatusOr<ExportSlot> Acquire(const std::string& caller);

  int active() const;
  int active(const std::string& caller) const;
  // Tests: waits until at most n exports run (or the timeout passes).
  bool AwaitActiveAtMost(int n, absl::Duration timeout) const;

 private:
  friend class ExportSlot;
  void Release(const std::string& caller);

  mutable absl::Mutex mu_;
  int max_total_;
  int max_per_caller_;
  int total_ = 0;
  std::map<std::string, int> per_caller_;
};

// Process-wide counters of the export streams (see the file comment).
class ExportStats {
 public:
  void WriteBegins() {
    absl::MutexLock l(&mu_);
    ++writes_in_progress_;
  }
  void WriteEnds(bool ok, int64_t bytes) {
    absl::MutexLock l(&mu_);
    --writes_in_progress_;
    if (ok) bytes_written_ += bytes;
  }
  int writes_in_progress() const {
    absl::MutexLock l(&mu_);
    return writes_in_progress_;
  }
  int64_t bytes_written() const {
    absl::MutexLock l(&mu_);
    return bytes_written_;
  }
  // Tests: waits until at least n Write calls are in progress at once (or
  // the timeout passes); true if they were.
  bool AwaitWritesInProgress(int n, absl::Duration timeout) const;

 private:
  mutable absl::Mutex mu_;
  int writes_in_progress_ = 0;
  int64_t bytes_written_ = 0;
};

}  // namespace labshare::usage

#endif  // LABSHARE_SERVICES_USAGE_EXPORT_LIMITER_H_
