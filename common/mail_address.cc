#include "common/mail_address.h"

#include <cstdint>

namespace labshare {
namespace {

// The next code point of `s` from `*i` (advanced past it), or -1 for bytes
// that are not UTF-8 (overlong forms and surrogates included).
int32_t NextCodePoint(absl::string_view s, size_t* i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(*i);
  int len = b0 < 0x80 ? 1 : (b0 & 0xE0) == 0xC0 ? 2 : (b0 & 0xF0) == 0xE0 ? 3 : (b0 & 0xF8) == 0xF0 ? 4 : 0;
  if (len == 0 || *i + static_cast<size_t>(len) > s.size()) return -1;
  int32_t cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (int k = 1; k < len; ++k) {
    const unsigned char b = byte(*i + static_cast<size_t>(k));
    if ((b & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr int32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
  *i += static_cast<size_t>(len);
  return cp;
}

// Spaces, line and paragraph separators and control characters of Unicode
// (Zs, Zl, Zp, Cc), which mail headers must not carry.
bool SpaceOrControl(int32_t cp) {
  return cp <= 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

}  // namespace

bool ValidMailAddress(absl::string_view a, std::string* why) {
  auto fail = [&](const char* w) {
    if (why != nullptr) *why = w;
    return false;
  };
  if (a.empty()) return fail("empty or longer than 254 characters");
  size_t at = 0, chars = 0;
  for (size_t i = 0; i < a.size();) {
    const int32_t cp = NextCodePoint(a, &i);
    if (cp < 0) return fail("is not UTF-8 text");
    if (++chars > 254) return fail("empty or longer than 254 characters");
    if (SpaceOrControl(cp)) return fail("contains a space, line break or control character");
    if (cp == '<' || cp == '>') return fail("contains '<' or '>'");
    if (cp == '@') ++at;
  }
  if (at != 1) return fail("must contain exactly one '@'");
  const size_t pos = a.find('@');
  if (pos == 0 || pos + 1 == a.size()) return fail("needs a local part and a domain");
  return true;
}

}  // namespace labshare
