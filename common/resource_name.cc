#include "common/resource_name.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/error.h"

namespace labshare {
namespace {

constexpr size_t kMaxNameBytes = 512;
constexpr size_t kMaxPairs = 8;

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// The name as it may appear in a message: printable, at most 80 characters.
std::string Quoted(absl::string_view name) {
  std::string out = "'";
  for (char c : name.substr(0, 80)) {
    out += absl::ascii_isprint(static_cast<unsigned char>(c)) ? c : '?';
  }
  if (name.size() > 80) out += "...";
  out += "'";
  return out;
}

// One id segment: resource ids joined by '.'.
bool ValidIdSegment(absl::string_view collection, absl::string_view id) {
  if (collection == "auditEntries") {
    return !id.empty() && id.size() <= 19 && id[0] != '0' &&
           std::all_of(id.begin(), id.end(), [](char c) { return c >= '0' && c <= '9'; });
  }
  if (id.empty() || id.size() > 255) return false;
  for (absl::string_view piece : absl::StrSplit(id, '.')) {
    if (!ValidResourceId(piece)) return false;
  }
  return true;
}

}  // namespace

bool ValidResourceId(absl::string_view id) {
  if (id.empty() || id.size() > 63 || !IsLowerAlnum(id[0])) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return IsLowerAlnum(c) || c == '-'; });
}

bool ValidCollection(absl::string_view collection) {
  if (collection.empty() || collection.size() > 63 || !(collection[0] >= 'a' && collection[0] <= 'z')) {
    return false;
  }
  return std::all_of(collection.begin(), collection.end(),
                     [](char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)); });
}

bool ValidResourceName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  if (parts.size() < 2 || parts.size() % 2 != 0 || parts.size() > 2 * kMaxPairs) return false;
  for (size_t i = 0; i < parts.size(); i += 2) {
    if (!ValidCollection(parts[i]) || !ValidIdSegment(parts[i], parts[i + 1])) return false;
  }
  return true;
}

bool IsResourceName(absl::string_view name, absl::string_view collection) {
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  return parts.size() == 2 && parts[0] == collection && ValidResourceId(parts[1]);
}

absl::StatusOr<std::string> ParseResourceName(absl::string_view name, absl::string_view collection,
                                              absl::string_view field) {
  if (!IsResourceName(name, collection)) {
    return InvalidField(std::string(field),
                        absl::StrCat("must be a resource name '", collection, "/{id}' (id: ",
                                     "[a-z0-9][a-z0-9-]{0,62}), got ", Quoted(name)),
                        "INVALID_NAME");
  }
  return std::string(name.substr(collection.size() + 1));
}

absl::Status CheckResourceName(absl::string_view name, absl::string_view field) {
  if (ValidResourceName(name)) return absl::OkStatus();
  return InvalidField(std::string(field),
                      absl::StrCat("must be a resource name such as 'instruments/{id}' (id: ",
                                   "[a-z0-9][a-z0-9-]{0,62}), got ", Quoted(name)),
                      "INVALID_NAME");
}

}  // namespace labshare
