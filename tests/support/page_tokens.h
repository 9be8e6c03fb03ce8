// Page-token helpers for tests: the fixed key managers are built with, and a
// forger that edits a real token the way a client could.
#ifndef LABSHARE_TESTS_SUPPORT_PAGE_TOKENS_H_
#define LABSHARE_TESTS_SUPPORT_PAGE_TOKENS_H_

#include <string>

#include "absl/strings/escaping.h"
#include "common/page_token.h"

namespace labshare::testing {

// What managers under test are built with: a fixed key, the same for every
// manager of a test (as replicas share theirs).
inline PageTokenCodec TestPageTokens() { return PageTokenCodec("labshare-test-page-token-key-0123456789"); }

// The token with the last byte of its decoded content changed and encoded
// again: a well-formed token pointing somewhere else that the service never
// issued. "" if `token` is not base64url.
inline std::string ForgePageToken(const std::string& token) {
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw) || raw.empty()) return "";
  raw.back() = static_cast<char>(raw.back() ^ 1);
  return absl::WebSafeBase64Escape(raw);
}

}  // namespace labshare::testing

#endif  // LABSHARE_TESTS_SUPPORT_PAGE_TOKENS_H_
