#include "tests/support/test_pki.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <filesystem>
#include <mutex>
#include <set>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/channel.h"

namespace labshare::testing {
namespace {

struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertDeleter {
  void operator()(X509* x) const { X509_free(x); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyDeleter>;
using Cert = std::unique_ptr<X509, CertDeleter>;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "test PKI: %s\n", what.c_str());
  std::abort();
}

Key NewKey() {
  EVP_PKEY* k = EVP_EC_gen("P-256");
  if (k == nullptr) Fail("EC key generation failed");
  return Key(k);
}

void AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) Fail("extension " + value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// issuer == nullptr: self-signed CA.
Cert Issue(const std::string& cn, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key, const std::string& san) {
  Cert x(X509_new());
  X509_set_version(x.get(), 2);
  unsigned char serial[8];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 60L * 60 * 24 * 30);
  X509_set_pubkey(x.get(), key);
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("LabShare tests"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* signer = issuer == nullptr ? x.get() : issuer;
  X509_set_issuer_name(x.get(), X509_get_subject_name(signer));
  if (issuer == nullptr) {
    AddExt(x.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
    AddExt(x.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
    AddExt(x.get(), signer, NID_subject_key_identifier, "hash");
  } else {
    AddExt(x.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    AddExt(x.get(), signer, NID_key_usage, "critical,digitalSignature,keyEncipherment");
    AddExt(x.get(), signer, NID_ext_key_usage, "serverAuth,clientAuth");
    AddExt(x.get(), signer, NID_subject_key_identifier, "hash");
    AddExt(x.get(), signer, NID_authority_key_identifier, "keyid:always");
    AddExt(x.get(), signer, NID_subject_alt_name, san);
  }
  if (X509_sign(x.get(), issuer_key, EVP_sha256()) == 0) Fail("signing " + cn);
  return x;
}

std::string CertPem(X509* x) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, x);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(bio);
  return pem;
}

std::string KeyPem(EVP_PKEY* k) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, k, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(bio);
  return pem;
}

void WriteFile(const std::string& path, const std::string& data, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0 || ::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) Fail("writing " + path);
  ::fchmod(fd, mode);
  ::close(fd);
}

TestCert Store(const std::string& dir, const std::string& stem, const std::string& cert_pem,
               const std::string& key_pem) {
  TestCert c{dir + "/" + stem + ".crt", dir + "/" + stem + ".key", cert_pem, key_pem};
  WriteFile(c.cert_file, cert_pem, 0644);
  WriteFile(c.key_file, key_pem, 0600);
  return c;
}

// DNS localhost, IP 127.0.0.1 and ::1, and every address of this machine.
std::string HostSans() {
  std::set<std::string> ips = {"127.0.0.1", "::1"};
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) == 0) {
    for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
      if (a->ifa_addr == nullptr) continue;
      char buf[INET6_ADDRSTRLEN] = {0};
      if (a->ifa_addr->sa_family == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, buf, sizeof buf);
      } else if (a->ifa_addr->sa_family == AF_INET6) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(a->ifa_addr);
        if (IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr)) continue;
        inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
      } else {
        continue;
      }
      ips.insert(buf);
    }
    freeifaddrs(list);
  }
  std::vector<std::string> sans = {"DNS:localhost"};
  for (const auto& ip : ips) sans.push_back("IP:" + ip);
  return absl::StrJoin(sans, ",");
}

}  // namespace

TestPki::TestPki() {
  char tmpl[] = "/tmp/labshare-pki-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) Fail("mkdtemp");
  dir_ = tmpl;
  const std::string hosts = HostSans();
  auto spiffe = [](const std::string& name) { return absl::StrCat("URI:spiffe://", kTestTrustDomain, "/", name); };

  Key ca_key = NewKey();
  Cert ca = Issue("LabShare test CA", ca_key.get(), nullptr, ca_key.get(), "");
  ca_ = Store(dir_, "ca", CertPem(ca.get()), KeyPem(ca_key.get()));
  Key other_key = NewKey();
  Cert other = Issue("Another CA", other_key.get(), nullptr, other_key.get(), "");
  other_ca_ = Store(dir_, "other-ca", CertPem(other.get()), KeyPem(other_key.get()));

  for (const char* name : {"inventory", "booking", "billing", "usage", "console", "notify"}) {
    Key key = NewKey();
    Cert cert = Issue(name, key.get(), ca.get(), ca_key.get(), spiffe(name) + "," + hosts);
    services_[name] = Store(dir_, name, CertPem(cert.get()), KeyPem(key.get()));
  }
  for (const char* name : {"inventory", "booking"}) {
    Key key = NewKey();
    Cert cert = Issue(name, key.get(), other.get(), other_key.get(), spiffe(name) + "," + hosts);
    impostors_[name] = Store(dir_, std::string("impostor-") + name, CertPem(cert.get()), KeyPem(key.get()));
  }
  {
    Key key = NewKey();
    Cert cert = Issue("anonymous", key.get(), ca.get(), ca_key.get(), hosts);
    anonymous_ = Store(dir_, "anonymous", CertPem(cert.get()), KeyPem(key.get()));
  }
  {
    Key key = NewKey();
    mismatched_["booking"] = Store(dir_, "booking-wrong-key", services_["booking"].cert_pem, KeyPem(key.get()));
  }
}

TestPki::~TestPki() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

const TestPki& TestPki::Shared() {
  static const TestPki instance;
  return instance;
}

const TestCert& TestPki::Service(const std::string& name) const {
  auto it = services_.find(name);
  if (it == services_.end()) Fail("no test certificate for service " + name);
  return it->second;
}

const TestCert& TestPki::Impostor(const std::string& name) const {
  auto it = impostors_.find(name);
  if (it == impostors_.end()) Fail("no impostor certificate for " + name);
  return it->second;
}

const TestCert& TestPki::MismatchedKey(const std::string& name) const {
  auto it = mismatched_.find(name);
  if (it == mismatched_.end()) Fail("no mismatched-key certificate for " + name);
  return it->second;
}

TlsMaterial TestPki::Material(const TestCert& cert, bool with_ca) const {
  TlsMaterial m;
  m.cert_pem = cert.cert_pem;
  m.key_pem = cert.key_pem;
  if (with_ca) m.ca_pem = ca_.cert_pem;
  return m;
}

TlsMaterial TestPki::ServerTls(const std::string& service) const { return Material(Service(service)); }

TlsMaterial TestPki::ClientTls(const std::string& service) const {
  if (!service.empty()) return Material(Service(service));
  TlsMaterial m;
  m.ca_pem = ca_.cert_pem;
  return m;
}

TlsFiles TestPki::Files(const std::string& service) const {
  const TestCert& c = Service(service);
  return TlsFiles{c.cert_file, c.key_file, ca_.cert_file};
}

std::vector<std::string> TestPki::Flags(const std::string& service) const {
  const TlsFiles f = Files(service);
  return {"--tls_cert=" + f.cert_file, "--tls_key=" + f.key_file, "--tls_ca=" + f.ca_file};
}

std::shared_ptr<grpc::Channel> TlsChannel(const std::string& address, const std::string& service) {
  auto channel = MakeChannel(address, TestPki::Shared().ClientTls(service));
  if (!channel.ok()) Fail(std::string(channel.status().message()));
  return *channel;
}

}  // namespace labshare::testing
