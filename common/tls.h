// Transport security settings shared by servers, the metrics endpoint and
// clients: the --tls_cert, --tls_key, --tls_ca and --trust_domain flags, the
// loading of the PEM files, and the loopback rule.
//
// With a certificate and its key a server serves TLS; with a CA it also
// verifies the client certificates that are presented (people's clients show
// none and authenticate with tokens; services show their own, and their
// identity is the SPIFFE id in it, see common/peer_identity.h). A client
// trusts the CA (or the system's roots when none is given) and presents its
// own certificate when it has one. Without TLS, servers listen and clients
// connect only on loopback (127.0.0.0/8, ::1, localhost).
//
// Startup errors (never RPC answers):
//   INVALID_ARGUMENT    TLS_CONFIG_INVALID   a certificate without its key or
//                                            the reverse, a key that does not
//                                            belong to the certificate, an
//                                            unreadable or empty PEM file;
//   FAILED_PRECONDITION PLAINTEXT_REFUSED    plaintext asked for on a
//                                            non-loopback address;
//   and those of common/secret_file.h for the key file.
#ifndef LABSHARE_COMMON_TLS_H_
#define LABSHARE_COMMON_TLS_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, tls_ca);
ABSL_DECLARE_FLAG(std::string, trust_domain);

namespace labshare {

// Paths of PEM files; all empty = no TLS.
struct TlsFiles {
  std::string cert_file;  // own certificate (chain), leaf first
  std::string key_file;   // its private key (mode 0600, common/secret_file.h)
  std::string ca_file;    // CA certificate(s) peers are verified against
  bool empty() const { return cert_file.empty() && key_file.empty() && ca_file.empty(); }
};

// The PEM contents of TlsFiles.
struct TlsMaterial {
  std::string cert_pem;
  std::string key_pem;
  std::string ca_pem;
  bool has_identity() const { return !cert_pem.empty(); }
};

TlsFiles TlsFilesFromFlags();
std::string TrustDomainFromFlags();

// Reads the files; the key through ReadSecretFile. A certificate needs its
// key and the reverse; `server` also needs both (a CA alone serves nothing).
absl::StatusOr<TlsMaterial> LoadTls(const TlsFiles& files, bool server);

// TLS_CONFIG_INVALID unless the certificate and key parse and belong
// together (OK without a certificate).
absl::Status CheckTlsMaterial(const TlsMaterial& tls);

// The host of "HOST:PORT", "[V6]:PORT", "dns:///HOST:PORT", "ipv4:HOST:PORT",
// "ipv6:[V6]:PORT" or "unix:PATH" (returned as "unix:").
std::string HostOfAddress(absl::string_view address);
// 127.0.0.0/8, ::1, ::ffff:127.x, "localhost" and unix sockets.
bool IsLoopbackHost(absl::string_view host);
// PLAINTEXT_REFUSED unless `address` is on loopback. `what` names the
// setting in the message, e.g. "--listen".
absl::Status CheckPlaintextAllowed(absl::string_view address, absl::string_view what);

}  // namespace labshare

#endif  // LABSHARE_COMMON_TLS_H_
