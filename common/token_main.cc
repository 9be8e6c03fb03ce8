// labshare-token: the token issuer's key tool, and minting for bootstrap and
// benchmarks. People sign in with `labshare login` instead.
//
//   labshare-token --generate_key=issuer.pem          # new P-256 key (0600), prints its kid
//   labshare-token --jwks issuer.pem [next.pem ...] > jwks.json
//   labshare-token --signing_key_file=issuer.pem --user=li-wei --org=org-uni-a --roles=lab_user
//
// Exit status: 0 on success, 2 for bad flags or a missing/unusable key,
// 1 for anything else.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/error.h"
#include "common/jwks.h"
#include "common/secret_file.h"
#include "common/token.h"

ABSL_FLAG(std::string, signing_key_file, "",
          "The token issuer's EC P-256 private key (PEM, mode 0600) to mint with: the same file "
          "labshare-inventory reads with --token_signing_key_file.");
ABSL_FLAG(std::string, user, "", "User id for the token's sub claim, e.g. li-wei.");
ABSL_FLAG(std::string, org, "", "Organization id for the token's org claim; may be empty for consortium-wide people.");
ABSL_FLAG(std::string, roles, "",
          "Comma-separated roles: lab_user, facility_staff, member_billing_admin, consortium_admin, auditor.");
ABSL_FLAG(absl::Duration, ttl, absl::Minutes(15),
          "How long the token stays valid, e.g. 15m; services refuse tokens living longer than their "
          "--token_max_lifetime (default 1h).");
ABSL_FLAG(std::string, issuer, "labshare", "The token's iss claim (the services' --token_issuer).");
ABSL_FLAG(std::string, audience, "labshare", "The token's aud claim (the services' --token_audience).");
ABSL_FLAG(std::string, generate_key, "",
          "Write a new EC P-256 private key to this file (mode 0600; an existing file is never "
          "overwritten) and print its key id (kid).");
ABSL_FLAG(bool, jwks, false,
          "Print a JWKS (JSON Web Key Set) with the public keys of the private key files given as "
          "arguments: the file (or URL content) for the services' --jwks.");

namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "labshare-token: %s\n", message.c_str());
  return code;
}

// absl::ParseCommandLine exits with status 1 on an unknown flag or a bad
// value; this pass finds those first so that they exit with 2. It mirrors the
// parser for flags given on the command line (--name=value, --name value,
// --bool, --nobool, one or two dashes, "--" ends flags); flags read through
// --flagfile, or a command line using --undefok, are left to absl.
std::optional<std::string> CheckCommandLine(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (absl::StartsWith(arg, "--undefok") || absl::StartsWith(arg, "-undefok")) return std::nullopt;
  }
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;  // positional argument
    absl::string_view body = arg.substr(arg[1] == '-' ? 2 : 1);
    const size_t eq = body.find('=');
    const bool has_value = eq != absl::string_view::npos;
    absl::string_view name = body.substr(0, eq);
    absl::string_view value = has_value ? body.substr(eq + 1) : absl::string_view();
    // Usage flags are not registered flags; absl handles them by name.
    if (name == "help" || name == "helpfull" || name == "helpshort" || name == "helppackage" ||
        name == "version" || name == "only_check_args" || name == "helpon" || name == "helpmatch") {
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) continue;
    }
    if (flag == nullptr) return absl::StrCat("unknown flag --", name, "; see --help for the flags");
    if (flag->IsRetired()) continue;
    std::string error;
    if (flag->IsOfType<bool>()) {
      bool b;
      if (has_value && !absl::ParseFlag(value, &b, &error)) {
        return absl::StrCat("--", name, ": invalid value \"", value, "\"; use true or false");
      }
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) return absl::StrCat("--", name, " needs a value, e.g. --", name, "=VALUE");
      value = argv[++i];
    }
    if (flag->IsOfType<absl::Duration>()) {
      absl::Duration d;
      if (!absl::ParseFlag(value, &d, &error)) {
        return absl::StrCat("--", name, ": invalid duration \"", value, "\"; use e.g. 30m, 8h or 24h");
      }
    }
  }
  return std::nullopt;
}

int GenerateKey(const std::string& path) {
  absl::StatusOr<std::string> pem = labshare::GenerateEcPrivateKeyPem();
  if (!pem.ok()) return Fail(kExitError, std::string(pem.status().message()));
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    labshare::WipeSecret(*pem);
    return Fail(err == EEXIST ? kExitUsage : kExitError,
                absl::StrCat("cannot create ", path, ": ", std::strerror(err),
                             err == EEXIST ? " (an existing key is never overwritten; pick a new file name)" : ""));
  }
  size_t written = 0;
  while (written < pem->size()) {
    const ssize_t n = ::write(fd, pem->data() + written, pem->size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  const bool ok = written == pem->size() && ::fsync(fd) == 0;
  ::close(fd);
  auto key = labshare::ParseEcPrivateKeyPem(*pem, path);
  labshare::WipeSecret(*pem);
  if (!ok || !key.ok()) {
    ::unlink(path.c_str());
    return Fail(kExitError, absl::StrCat("cannot write the key to ", path));
  }
  std::printf("%s\n", labshare::JwkThumbprint(key->get()).c_str());
  return std::fflush(stdout) == 0 ? 0 : Fail(kExitError, "cannot write to stdout");
}

int PrintJwks(const std::vector<char*>& files) {
  if (files.size() < 2) return Fail(kExitUsage, "--jwks needs one or more private key files, e.g. --jwks issuer.pem");
  std::vector<std::string> jwks;
  for (size_t i = 1; i < files.size(); ++i) {
    absl::StatusOr<std::string> pem = labshare::ReadSecretFile(files[i], "token signing key");
    if (!pem.ok()) return Fail(kExitUsage, std::string(pem.status().message()));
    auto key = labshare::ParseEcPrivateKeyPem(*pem, files[i]);
    labshare::WipeSecret(*pem);
    if (!key.ok()) return Fail(kExitUsage, std::string(key.status().message()));
    jwks.push_back(labshare::PublicJwkJson(key->get()));
  }
  std::printf("%s", labshare::JwksJson(jwks).c_str());
  return std::fflush(stdout) == 0 ? 0 : Fail(kExitError, "cannot write to stdout");
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "The LabShare token issuer's key tool; mints tokens for bootstrap and benchmarks.\n"
      "People sign in with `labshare login` instead.\n"
      "\n"
      "  labshare-token --generate_key=FILE             new P-256 key (mode 0600), prints its kid\n"
      "  labshare-token --jwks FILE [FILE...] > jwks.json  public keys for the services' --jwks\n"
      "  labshare-token --signing_key_file=FILE --user=li-wei --org=org-uni-a --roles=lab_user[,auditor] "
      "[--ttl=15m]\n"
      "\n"
      "Roles: lab_user, facility_staff, member_billing_admin, consortium_admin, auditor.");
  if (std::optional<std::string> error = CheckCommandLine(argc, argv)) return Fail(kExitUsage, *error);
  // --help / --helpshort list the flags defined in this file.
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "token_main.cc");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_jwks)) return PrintJwks(positional);
  if (positional.size() > 1) {
    return Fail(kExitUsage, absl::StrCat("unexpected argument \"", positional[1],
                                         "\"; all options are flags, see --help"));
  }
  if (!absl::GetFlag(FLAGS_generate_key).empty()) return GenerateKey(absl::GetFlag(FLAGS_generate_key));

  const std::string user = absl::GetFlag(FLAGS_user);
  if (user.empty()) return Fail(kExitUsage, "--user is required, e.g. --user=li-wei");

  std::vector<labshare::Role> roles;
  for (absl::string_view piece : absl::StrSplit(absl::GetFlag(FLAGS_roles), ',', absl::SkipWhitespace())) {
    const absl::string_view name = absl::StripAsciiWhitespace(piece);
    absl::StatusOr<labshare::Role> role = labshare::ParseRole(std::string_view(name.data(), name.size()));
    if (!role.ok()) return Fail(kExitUsage, absl::StrCat("--roles: ", role.status().message()));
    if (*role == labshare::Role::kService) {
      return Fail(kExitUsage,
                  "--roles: the service role is never valid in a token; services authenticate with their "
                  "certificates");
    }
    if (std::find(roles.begin(), roles.end(), *role) == roles.end()) roles.push_back(*role);
  }
  if (roles.empty()) return Fail(kExitUsage, "--roles is required, e.g. --roles=lab_user");

  const absl::Duration ttl = absl::GetFlag(FLAGS_ttl);
  if (ttl <= absl::ZeroDuration() || ttl == absl::InfiniteDuration()) {
    return Fail(kExitUsage, "--ttl must be a positive, finite duration, e.g. --ttl=15m");
  }
  const std::string key_file = absl::GetFlag(FLAGS_signing_key_file);
  if (key_file.empty()) {
    return Fail(kExitUsage,
                "--signing_key_file is required: the token issuer's private key (tokens are never minted "
                "from a shared secret; people sign in with `labshare login`)");
  }
  auto issuer = labshare::TokenIssuer::FromFile(key_file, absl::GetFlag(FLAGS_issuer), absl::GetFlag(FLAGS_audience));
  if (!issuer.ok()) return Fail(kExitUsage, std::string(issuer.status().message()));

  const absl::Time now = absl::Now();
  labshare::Principal principal;
  principal.user_id = user;
  principal.organization_id = absl::GetFlag(FLAGS_org);
  principal.roles = std::move(roles);
  principal.expires_at = now + ttl;
  const std::string token = (*issuer)->Mint(principal, now);
  std::printf("%s\n", token.c_str());
  return std::fflush(stdout) == 0 ? 0 : Fail(kExitError, "cannot write the token to stdout");
}
