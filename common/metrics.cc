#include "common/metrics.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/error.h"

namespace labshare {

// HTTP/1.1 GET /metrics, one request per connection, on a few threads that
// share one listening socket. Each connection has 5 s to send its request.
class MetricsHttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& listen,
                                                                  const TlsMaterial& tls,
                                                                  std::function<std::string()> render);
  ~MetricsHttpServer();
  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;
  void Loop();
  void Handle(int fd);

  static constexpr int kThreads = 2;
  std::function<std::string()> render_;
  int listen_fd_ = -1;
  int stop_[2] = {-1, -1};
  SSL_CTX* ctx_ = nullptr;
  int port_ = 0;
  std::vector<std::thread> threads_;
};

namespace {

absl::Status ListenError(const std::string& listen, const std::string& why) {
  return MakeError(absl::StatusCode::kInvalidArgument, "METRICS_LISTEN_FAILED",
                   absl::StrCat("cannot listen on --metrics_listen=", listen, ": ", why));
}

std::string SslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    absl::StrAppend(&out, out.empty() ? "" : "; ", buf);
  }
  return out;
}

// The server side of TLS from PEM text: own chain and key; with a CA, client
// certificates are requested and verified when presented.
absl::StatusOr<SSL_CTX*> MakeServerContext(const TlsMaterial& tls) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return absl::InternalError("SSL_CTX_new failed");
  auto fail = [&](const std::string& what) {
    const std::string errors = SslErrors();
    SSL_CTX_free(ctx);
    return MakeError(absl::StatusCode::kInvalidArgument, "TLS_CONFIG_INVALID",
                     absl::StrCat("metrics endpoint: ", what, errors.empty() ? "" : ": ", errors));
  };
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  {
    BIO* bio = BIO_new_mem_buf(tls.cert_pem.data(), static_cast<int>(tls.cert_pem.size()));
    X509* leaf = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    bool ok = leaf != nullptr && SSL_CTX_use_certificate(ctx, leaf) == 1;
    X509_free(leaf);
    while (ok) {
      X509* extra = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
      if (extra == nullptr) break;
      if (SSL_CTX_add_extra_chain_cert(ctx, extra) != 1) {
        X509_free(extra);
        ok = false;
      }
    }
    BIO_free(bio);
    ERR_clear_error();  // the end of the PEM text
    if (!ok) return fail("cannot use the certificate of --tls_cert");
  }
  {
    BIO* bio = BIO_new_mem_buf(tls.key_pem.data(), static_cast<int>(tls.key_pem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    const bool ok = key != nullptr && SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(key);
    if (!ok) return fail("the key of --tls_key does not load or does not match --tls_cert");
  }
  if (!tls.ca_pem.empty()) {
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    BIO* bio = BIO_new_mem_buf(tls.ca_pem.data(), static_cast<int>(tls.ca_pem.size()));
    int count = 0;
    while (X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
      X509_STORE_add_cert(store, ca);
      SSL_CTX_add_client_CA(ctx, ca);
      X509_free(ca);
      ++count;
    }
    BIO_free(bio);
    ERR_clear_error();
    if (count == 0) return fail("no CA certificate in --tls_ca");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);  // verified when presented
  }
  return ctx;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& listen, const TlsMaterial& tls, std::function<std::string()> render) {
  std::unique_ptr<MetricsHttpServer> s(new MetricsHttpServer());
  s->render_ = std::move(render);
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return ListenError(listen, "expected HOST:PORT");
  const std::string host = HostOfAddress(listen);
  const std::string port = listen.substr(colon + 1);
  int port_number = 0;
  if (!absl::SimpleAtoi(port, &port_number) || port_number < 0 || port_number > 65535) {
    return ListenError(listen, "bad port");
  }
  if (tls.has_identity()) {
    auto ctx = MakeServerContext(tls);
    if (!ctx.ok()) return ctx.status();
    s->ctx_ = *ctx;
  } else if (absl::Status plain = CheckPlaintextAllowed(listen, "--metrics_listen"); !plain.ok()) {
    return plain;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return ListenError(listen, gai_strerror(rc));
  }
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr && s->listen_fd_ < 0; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 64) == 0) {
      s->listen_fd_ = fd;
    } else {
      why = std::strerror(errno);
      close(fd);
    }
  }
  freeaddrinfo(found);
  if (s->listen_fd_ < 0) return ListenError(listen, why);
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  getsockname(s->listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len);
  s->port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  if (pipe2(s->stop_, O_CLOEXEC) != 0) return ListenError(listen, "pipe failed");
  for (int i = 0; i < kThreads; ++i) s->threads_.emplace_back([raw = s.get()] { raw->Loop(); });
  return s;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (stop_[1] >= 0) {
    const char c = 'x';
    (void)!write(stop_[1], &c, 1);
  }
  for (auto& t : threads_) t.join();
  for (int fd : {listen_fd_, stop_[0], stop_[1]}) {
    if (fd >= 0) close(fd);
  }
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

void MetricsHttpServer::Loop() {
  // A client that leaves early must not kill the process with SIGPIPE.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // another thread took it, or the client left
    Handle(fd);
    close(fd);
  }
}

void MetricsHttpServer::Handle(int fd) {
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  SSL* ssl = nullptr;
  if (ctx_ != nullptr) {
    ssl = SSL_new(ctx_);
    if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1) {
      SSL_free(ssl);
      ERR_clear_error();
      return;  // plaintext, a bad client certificate, a timeout: nothing is said
    }
  }
  auto read_some = [&](char* buf, int n) -> int {
    return ssl != nullptr ? SSL_read(ssl, buf, n) : static_cast<int>(recv(fd, buf, static_cast<size_t>(n), 0));
  };
  auto write_all = [&](const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      const int chunk = static_cast<int>(std::min<size_t>(data.size() - done, 1 << 20));
      const int n = ssl != nullptr ? SSL_write(ssl, data.data() + done, chunk)
                                   : static_cast<int>(send(fd, data.data() + done, static_cast<size_t>(chunk),
                                                           MSG_NOSIGNAL));
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  };
  std::string request;
  char buf[2048];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < 8192) {
    const int n = read_some(buf, sizeof buf);
    if (n <= 0) break;
    request.append(buf, static_cast<size_t>(n));
  }
  const std::vector<std::string> line = absl::StrSplit(request.substr(0, request.find("\r\n")), ' ');
  std::string status = "200 OK";
  std::string type = "text/plain; version=0.0.4; charset=utf-8";
  std::string body;
  if (line.size() != 3 || !absl::StartsWith(line[2], "HTTP/1.")) {
    status = "400 Bad Request";
  } else if (line[0] != "GET" && line[0] != "HEAD") {
    status = "405 Method Not Allowed";
  } else if (line[1] != "/metrics" && !absl::StartsWith(line[1], "/metrics?")) {
    status = "404 Not Found";
  } else {
    body = render_();
  }
  if (status != "200 OK") {
    type = "text/plain; charset=utf-8";
    body = status + "\n";
  }
  std::string response = absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n");
  if (line.empty() || line[0] != "HEAD") response += body;
  write_all(response);
  if (ssl != nullptr) {
    SSL_shutdown(ssl);
    SSL_free(ssl);
    ERR_clear_error();
  }
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& service,
                                                         const std::string& listen,
                                                         const TlsMaterial& tls) {
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
    auto http = MetricsHttpServer::Start(listen, tls, [raw = m.get()] { return raw->Render(); });
    if (!http.ok()) return http.status();
    m->http_ = *std::move(http);
    m->port_ = m->http_->port();
  }
  return m;
}

Metrics::~Metrics() { http_.reset(); }  // no scrape while the registry goes

void Metrics::SetKnownMethods(absl::flat_hash_set<std::string> methods) { known_ = std::move(methods); }

namespace {
struct Collectors {
  absl::Mutex mu;
  int next = 0;
  std::map<int, std::function<std::string()>> render ABSL_GUARDED_BY(mu);
};
Collectors& TheCollectors() {
  static Collectors* c = new Collectors();
  return *c;
}
}  // namespace

int RegisterMetricsCollector(std::function<std::string()> render) {
  Collectors& c = TheCollectors();
  absl::MutexLock lock(&c.mu);
  const int id = c.next++;
  c.render[id] = std::move(render);
  return id;
}

void UnregisterMetricsCollector(int id) {
  Collectors& c = TheCollectors();
  absl::MutexLock lock(&c.mu);
  c.render.erase(id);
}

std::string Metrics::Render() const {
  std::string out = prometheus::TextSerializer().Serialize(registry_->Collect());
  Collectors& c = TheCollectors();
  // Held while rendering: Unregister waits for a render to finish.
  absl::MutexLock lock(&c.mu);
  for (const auto& [id, render] : c.render) out += render();
  return out;
}

void Metrics::ObserveRpc(const std::string& raw_method, const std::string& code, double seconds) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  const std::string& method = known_.contains(raw_method) ? raw_method : kUnknownMethod;
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
