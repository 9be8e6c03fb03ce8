#include "common/mail_address.h"

namespace labshare {

bool ValidMailAddress(absl::string_view a, std::string* why) {
  auto fail = [&](const char* w) {
    if (why != nullptr) *why = w;
    return false;
  };
  if (a.empty() || a.size() > 254) return fail("empty or longer than 254 characters");
  size_t at = 0;
  for (unsigned char ch : a) {
    if (ch < 0x21 || ch == 0x7f) return fail("contains a space, line break or control character");
    if (ch == '<' || ch == '>') return fail("contains '<' or '>'");
    if (ch == '@') ++at;
  }
  if (at != 1) return fail("must contain exactly one '@'");
  const size_t pos = a.find('@');
  if (pos == 0 || pos + 1 == a.size()) return fail("needs a local part and a domain");
  return true;
}

}  // namespace labshare
