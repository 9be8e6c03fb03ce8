// labshare-token: mints a LabShare bearer token, or generates a signing key.
//
//   labshare-token --generate_key > token.key
//   labshare-token --key_file=token.key --user=u-ana --org=org-uni-a --roles=lab_user
//   LABSHARE_TOKEN_KEY=... labshare-token --user=booking --roles=service --ttl=1h
//
// Exit status: 0 on success, 2 for bad flags or a missing/unusable key,
// 1 for anything else.
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdio>
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
#include "common/token.h"

ABSL_FLAG(std::string, key_file, "",
          "File holding the token signing key (at least 32 bytes; a trailing newline is ignored). "
          "If empty, the key is read from the environment variable LABSHARE_TOKEN_KEY.");
ABSL_FLAG(std::string, user, "", "User id for the token's sub claim, e.g. u-ana (or booking for a service).");
ABSL_FLAG(std::string, org, "",
          "Organization id for the token's org claim; may be empty for service and consortium tokens.");
ABSL_FLAG(std::string, roles, "",
          "Comma-separated roles: lab_user, facility_staff, member_billing_admin, consortium_admin, "
          "auditor, service.");
ABSL_FLAG(absl::Duration, ttl, absl::Hours(24), "How long the token stays valid, e.g. 30m, 8h, 24h.");
ABSL_FLAG(bool, generate_key, false,
          "Print a fresh random 32-byte signing key as 64 hex characters and exit.");

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

int GenerateKey() {
  unsigned char key[32];
  if (RAND_bytes(key, static_cast<int>(sizeof(key))) != 1) {
    return Fail(kExitError, "the system random number generator failed; no key was generated");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char b : key) {
    hex.push_back(kHex[b >> 4]);
    hex.push_back(kHex[b & 0xF]);
  }
  OPENSSL_cleanse(key, sizeof(key));
  std::printf("%s\n", hex.c_str());
  OPENSSL_cleanse(hex.data(), hex.size());
  return std::fflush(stdout) == 0 ? 0 : Fail(kExitError, "cannot write the key to stdout");
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Mints a LabShare bearer token (a JWT signed with HS256) and prints it on stdout.\n"
      "\n"
      "  labshare-token --key_file=FILE --user=u-ana --org=org-uni-a --roles=lab_user[,auditor] "
      "[--ttl=24h]\n"
      "  labshare-token --generate_key > FILE\n"
      "\n"
      "Without --key_file the key comes from the environment variable LABSHARE_TOKEN_KEY.\n"
      "Roles: lab_user, facility_staff, member_billing_admin, consortium_admin, auditor, service.");
  if (std::optional<std::string> error = CheckCommandLine(argc, argv)) return Fail(kExitUsage, *error);
  // --help / --helpshort list the flags defined in this file.
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "token_main.cc");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    return Fail(kExitUsage, absl::StrCat("unexpected argument \"", positional[1],
                                         "\"; all options are flags, see --help"));
  }

  if (absl::GetFlag(FLAGS_generate_key)) return GenerateKey();

  const std::string user = absl::GetFlag(FLAGS_user);
  if (user.empty()) return Fail(kExitUsage, "--user is required, e.g. --user=u-ana");

  std::vector<labshare::Role> roles;
  for (absl::string_view piece : absl::StrSplit(absl::GetFlag(FLAGS_roles), ',', absl::SkipWhitespace())) {
    const absl::string_view name = absl::StripAsciiWhitespace(piece);
    absl::StatusOr<labshare::Role> role = labshare::ParseRole(std::string_view(name.data(), name.size()));
    if (!role.ok()) return Fail(kExitUsage, absl::StrCat("--roles: ", role.status().message()));
    if (std::find(roles.begin(), roles.end(), *role) == roles.end()) roles.push_back(*role);
  }
  if (roles.empty()) return Fail(kExitUsage, "--roles is required, e.g. --roles=lab_user");

  const absl::Duration ttl = absl::GetFlag(FLAGS_ttl);
  if (ttl <= absl::ZeroDuration() || ttl == absl::InfiniteDuration()) {
    return Fail(kExitUsage, "--ttl must be a positive, finite duration, e.g. --ttl=8h");
  }

  absl::StatusOr<labshare::TokenSigner> signer =
      labshare::TokenSigner::FromFileOrEnv(absl::GetFlag(FLAGS_key_file));
  if (!signer.ok()) return Fail(kExitUsage, std::string(signer.status().message()));

  const absl::Time now = absl::Now();
  labshare::Principal principal;
  principal.user_id = user;
  principal.organization_id = absl::GetFlag(FLAGS_org);
  principal.roles = std::move(roles);
  principal.expires_at = now + ttl;
  const std::string token = signer->Mint(principal, now);
  std::printf("%s\n", token.c_str());
  return std::fflush(stdout) == 0 ? 0 : Fail(kExitError, "cannot write the token to stdout");
}
