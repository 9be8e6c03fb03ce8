// A test PKI: a CA and a certificate per service, generated once per process
// with OpenSSL into a temporary directory (files for child processes, PEM
// text for in-process servers and channels).
//
//  - Service(name): issued by the CA; URI SAN spiffe://labshare/<name>, DNS
//    localhost, IP 127.0.0.1, ::1 and every address of this machine's
//    interfaces (so servers may listen on a non-loopback address too);
//    key usage for TLS server and client.
//  - Impostor(name): the same SANs, but issued by another CA.
//  - Anonymous(): issued by the CA, without any URI SAN (no SPIFFE id).
//  - MismatchedKey(name): the service's certificate with another key.
// Key files have mode 0600.
#ifndef LABSHARE_TESTS_SUPPORT_TEST_PKI_H_
#define LABSHARE_TESTS_SUPPORT_TEST_PKI_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/tls.h"

namespace labshare::testing {

inline constexpr char kTestTrustDomain[] = "labshare";

struct TestCert {
  std::string cert_file;
  std::string key_file;
  std::string cert_pem;
  std::string key_pem;
};

class TestPki {
 public:
  // The process-wide PKI (created on first use; thread-safe).
  static const TestPki& Shared();
  ~TestPki();

  const std::string& dir() const { return dir_; }
  const std::string& ca_file() const { return ca_.cert_file; }
  const std::string& ca_pem() const { return ca_.cert_pem; }

  // Services: inventory, booking, billing, usage, console, notify.
  const TestCert& Service(const std::string& name) const;
  const TestCert& Impostor(const std::string& name) const;  // "inventory" or "booking"
  const TestCert& Anonymous() const { return anonymous_; }
  const TestCert& MismatchedKey(const std::string& name) const;  // "booking"
  const TestCert& OtherCa() const { return other_ca_; }

  // A server's TLS: the service's certificate, key and the CA.
  TlsMaterial ServerTls(const std::string& service) const;
  // A client's TLS: the CA, plus the service's certificate when `service`
  // is not empty (a service's call); "" = a person's client (no certificate).
  TlsMaterial ClientTls(const std::string& service = "") const;
  TlsMaterial Material(const TestCert& cert, bool with_ca = true) const;
  // The same as files (for child processes' --tls_* flags).
  TlsFiles Files(const std::string& service) const;
  // Flags for a child process: --tls_cert=... --tls_key=... --tls_ca=...
  std::vector<std::string> Flags(const std::string& service) const;

 private:
  TestPki();
  std::string dir_;
  TestCert ca_, other_ca_, anonymous_;
  std::map<std::string, TestCert> services_, impostors_, mismatched_;
};

// A TLS channel to `address` trusting the test CA; with `service`, it
// presents that service's certificate (the call is that service's).
std::shared_ptr<grpc::Channel> TlsChannel(const std::string& address, const std::string& service = "");

}  // namespace labshare::testing

#endif  // LABSHARE_TESTS_SUPPORT_TEST_PKI_H_
