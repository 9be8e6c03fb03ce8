#include "common/tls.h"

#include <arpa/inet.h>

#include <fstream>
#include <sstream>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/error.h"
#include "common/secret_file.h"

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate (chain, leaf first) this process presents, as a server and as a client "
          "of other services. Its URI SAN spiffe://<trust_domain>/<service> names the service.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert (mode 0600).");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificate(s): servers verify client certificates against it when one is "
          "presented (mutual TLS), clients verify servers against it.");
ABSL_FLAG(std::string, trust_domain, "labshare",
          "SPIFFE trust domain of the service certificates (spiffe://<trust_domain>/<service>).");

namespace labshare {
namespace {

absl::Status ConfigError(const std::string& message) {
  return MakeError(absl::StatusCode::kInvalidArgument, "TLS_CONFIG_INVALID", message);
}

absl::StatusOr<std::string> ReadPem(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ConfigError(absl::StrCat("cannot read ", what, " ", path));
  std::ostringstream buf;
  buf << in.rdbuf();
  std::string pem = buf.str();
  if (!absl::StrContains(pem, "-----BEGIN CERTIFICATE-----")) {
    return ConfigError(absl::StrCat(what, " ", path, " holds no PEM certificate"));
  }
  return pem;
}

}  // namespace

absl::Status CheckTlsMaterial(const TlsMaterial& tls) {
  if (!tls.has_identity()) return absl::OkStatus();
  BIO* cert_bio = BIO_new_mem_buf(tls.cert_pem.data(), static_cast<int>(tls.cert_pem.size()));
  X509* cert = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
  BIO_free(cert_bio);
  BIO* key_bio = BIO_new_mem_buf(tls.key_pem.data(), static_cast<int>(tls.key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(key_bio);
  const bool parsed = cert != nullptr && key != nullptr;
  const bool match = parsed && X509_check_private_key(cert, key) == 1;
  X509_free(cert);
  EVP_PKEY_free(key);
  ERR_clear_error();
  if (!parsed) return ConfigError("the TLS certificate or its private key cannot be parsed (PEM expected)");
  if (!match) return ConfigError("the TLS private key (--tls_key) does not belong to the certificate (--tls_cert)");
  return absl::OkStatus();
}

TlsFiles TlsFilesFromFlags() {
  return TlsFiles{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_ca)};
}

std::string TrustDomainFromFlags() { return absl::GetFlag(FLAGS_trust_domain); }

absl::StatusOr<TlsMaterial> LoadTls(const TlsFiles& files, bool server) {
  TlsMaterial m;
  if (files.empty()) return m;
  if (files.cert_file.empty() != files.key_file.empty()) {
    return ConfigError("--tls_cert and --tls_key go together: give both or neither");
  }
  if (server && files.cert_file.empty()) {
    return ConfigError("serving TLS needs --tls_cert and --tls_key (--tls_ca alone only verifies peers)");
  }
  if (!files.cert_file.empty()) {
    auto cert = ReadPem(files.cert_file, "--tls_cert");
    if (!cert.ok()) return cert.status();
    m.cert_pem = *std::move(cert);
    auto key = ReadSecretFile(files.key_file, "TLS private key (--tls_key)");
    if (!key.ok()) return key.status();
    if (!absl::StrContains(*key, "PRIVATE KEY-----")) {
      std::string wipe = *std::move(key);
      WipeSecret(wipe);
      return ConfigError(absl::StrCat("--tls_key ", files.key_file, " holds no PEM private key"));
    }
    m.key_pem = *std::move(key);
    if (absl::Status s = CheckTlsMaterial(m); !s.ok()) {
      WipeSecret(m.key_pem);
      return s;
    }
  }
  if (!files.ca_file.empty()) {
    auto ca = ReadPem(files.ca_file, "--tls_ca");
    if (!ca.ok()) return ca.status();
    m.ca_pem = *std::move(ca);
  }
  return m;
}

std::string HostOfAddress(absl::string_view address) {
  absl::string_view a = address;
  if (absl::StartsWith(a, "unix:") || absl::StartsWith(a, "unix-abstract:")) return "unix:";
  if (!absl::ConsumePrefix(&a, "dns:///")) {
    if (!absl::ConsumePrefix(&a, "dns:")) {
      if (!absl::ConsumePrefix(&a, "ipv4:")) absl::ConsumePrefix(&a, "ipv6:");
    }
  }
  if (absl::StartsWith(a, "[")) {
    const size_t close = a.find(']');
    if (close == absl::string_view::npos) return std::string(a);
    return std::string(a.substr(1, close - 1));
  }
  const size_t first = a.find(':');
  if (first != absl::string_view::npos && a.find(':', first + 1) != absl::string_view::npos) {
    return std::string(a);  // a bare IPv6 address without a port
  }
  return std::string(a.substr(0, first));
}

bool IsLoopbackHost(absl::string_view host) {
  const std::string h = absl::AsciiStrToLower(host);
  if (h == "localhost" || h == "unix:") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

absl::Status CheckPlaintextAllowed(absl::string_view address, absl::string_view what) {
  // "ipv4:A:P,B:P" lists several addresses: every one must be loopback.
  bool loopback = true;
  absl::string_view scheme;
  absl::string_view list = address;
  for (absl::string_view prefix : {"ipv4:", "ipv6:"}) {
    if (absl::ConsumePrefix(&list, prefix)) scheme = prefix;
  }
  for (absl::string_view one : absl::StrSplit(list, ',')) {
    loopback = loopback && IsLoopbackHost(HostOfAddress(absl::StrCat(scheme, one)));
  }
  if (loopback) return absl::OkStatus();
  return MakeError(absl::StatusCode::kFailedPrecondition, "PLAINTEXT_REFUSED",
                   absl::StrCat(what, "=", address,
                                " is not a loopback address and no TLS is configured: give "
                                "--tls_cert, --tls_key and --tls_ca (plaintext is allowed only on "
                                "127.0.0.1, ::1 and localhost)"));
}

}  // namespace labshare
