// Prometheus metrics for RPCs, served on their own port.
#ifndef LABSHARE_COMMON_METRICS_H_
#define LABSHARE_COMMON_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
class Registry;
template <typename T> class Family;
class Counter;
class Histogram;
}  // namespace prometheus

namespace labshare {

class Metrics {
 public:
  // listen: "HOST:PORT" (port 0 picks one); empty: collect but do not serve.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& service,
                                                         const std::string& listen);
  ~Metrics();
  // Thread-safe.
  void ObserveRpc(const std::string& method, const std::string& code, double seconds);
  int port() const { return port_; }

 private:
  Metrics() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* latency_ = nullptr;
  int port_ = 0;
  // Never reused, unlike addresses: keys the per-thread series cache.
  uint64_t id_ = 0;
};

}  // namespace labshare

#endif  // LABSHARE_COMMON_METRICS_H_
