#include "common/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <unordered_map>

#include "common/error.h"

namespace labshare {

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& service,
                                                         const std::string& listen) {
  static std::atomic<uint64_t> next_id{1};
  std::unique_ptr<Metrics> m(new Metrics());
  m->id_ = next_id++;
  m->registry_ = std::make_shared<prometheus::Registry>();
  m->requests_ = &prometheus::BuildCounter()
                      .Name("labshare_rpc_requests_total")
                      .Help("RPCs handled, by method and status code")
                      .Labels({{"service", service}})
                      .Register(*m->registry_);
  m->latency_ = &prometheus::BuildHistogram()
                     .Name("labshare_rpc_latency_seconds")
                     .Help("RPC latency from metadata received to status sent")
                     .Labels({{"service", service}})
                     .Register(*m->registry_);
  if (!listen.empty()) {
    try {
      m->exposer_ = std::make_unique<prometheus::Exposer>(listen, 2);
    } catch (const std::exception&) {
      return MakeError(absl::StatusCode::kInvalidArgument, "METRICS_LISTEN_FAILED",
                       "cannot listen on --metrics_listen=" + listen);
    }
    m->exposer_->RegisterCollectable(m->registry_);
    auto ports = m->exposer_->GetListeningPorts();
    if (!ports.empty()) m->port_ = ports.front();
  }
  return m;
}

Metrics::~Metrics() = default;

void Metrics::ObserveRpc(const std::string& method, const std::string& code, double seconds) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  // Family::Add hashes the labels under a lock; remember the series per
  // thread (series live as long as the registry, i.e. this object).
  struct Series {
    prometheus::Counter* count;
    prometheus::Histogram* latency;
  };
  thread_local std::unordered_map<uint64_t, std::unordered_map<std::string, Series>> cache;
  auto& mine = cache[id_];
  const std::string key = method + "|" + code;
  auto it = mine.find(key);
  if (it == mine.end()) {
    Series s{&requests_->Add({{"method", method}, {"code", code}}),
             &latency_->Add({{"method", method}, {"code", code}}, kBuckets)};
    it = mine.emplace(key, s).first;
  }
  it->second.count->Increment();
  it->second.latency->Observe(seconds);
}

}  // namespace labshare
