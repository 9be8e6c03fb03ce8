// Prometheus metrics for RPCs, served on their own port.
//
// /metrics is served by a small HTTP/1.1 server of our own (metrics.cc), over
// TLS with the service's certificate when TLS is configured (client
// certificates verified against the CA when presented), in plaintext only on
// loopback otherwise. Not prometheus-cpp's Exposer: its civetweb loads
// OpenSSL at run time through the unversioned libssl.so/libcrypto.so names
// (present only with libssl-dev) and needs the key in the certificate file.
//
// The `method` label takes only known methods (SetKnownMethods: the
// registered services' methods); any other path is counted as "unknown", so
// made-up paths cannot create series.
#ifndef LABSHARE_COMMON_METRICS_H_
#define LABSHARE_COMMON_METRICS_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "common/tls.h"

namespace prometheus {
class Registry;
template <typename T> class Family;
class Counter;
class Histogram;
}  // namespace prometheus

namespace labshare {

class MetricsHttpServer;

// The label value of methods that are not known.
inline constexpr char kUnknownMethod[] = "unknown";

class Metrics {
 public:
  // listen: "HOST:PORT" (port 0 picks one); empty: collect but do not serve.
  // tls: served over TLS when it has a certificate; otherwise `listen` must
  // be a loopback address (PLAINTEXT_REFUSED).
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& service,
                                                         const std::string& listen,
                                                         const TlsMaterial& tls = {});
  ~Metrics();
  // Call before the server takes calls. Thread-safe afterwards.
  void SetKnownMethods(absl::flat_hash_set<std::string> methods);
  // Thread-safe. `method` outside the known set counts as kUnknownMethod.
  void ObserveRpc(const std::string& method, const std::string& code, double seconds);
  // The text exposition of every series.
  std::string Render() const;
  int port() const { return port_; }

 private:
  Metrics() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsHttpServer> http_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* latency_ = nullptr;
  absl::flat_hash_set<std::string> known_;
  int port_ = 0;
  // Never reused, unlike addresses: keys the per-thread series cache.
  uint64_t id_ = 0;
};

// Extra series computed at scrape time (e.g. outbox lag, outbox_trim.h):
// `render` returns Prometheus text-exposition lines (with their # HELP and
// # TYPE lines), appended to every Metrics::Render of the process, in
// registration order. Thread-safe. Returns an id for Unregister.
int RegisterMetricsCollector(std::function<std::string()> render);
// Waits for a render in progress to finish; afterwards `render` is not called.
void UnregisterMetricsCollector(int id);

}  // namespace labshare

#endif  // LABSHARE_COMMON_METRICS_H_
