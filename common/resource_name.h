// Resource names ("collection/id", possibly nested "a/1/b/2") and the id
// charset every service uses. Checked before a name from a request or from a
// consumed event is stored, used in a key or indexed, so that names such as
// "instruments/../organizations/x" or "organizations/*" never reach storage.
#ifndef LABSHARE_COMMON_RESOURCE_NAME_H_
#define LABSHARE_COMMON_RESOURCE_NAME_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace labshare {

// A resource id: [a-z0-9][a-z0-9-]{0,62}.
bool ValidResourceId(absl::string_view id);

// A collection id: lowerCamelCase, [a-z][a-zA-Z0-9]{0,62} ("instruments",
// "maintenanceWindows").
bool ValidCollection(absl::string_view collection);

// Any well-formed resource name: 1 to 8 pairs "collection/id" joined by '/',
// at most 512 bytes, where each id is one or more resource ids joined by '.'
// (quota ids are "{instrument}.{organization}.{period}") or, for
// "auditEntries", a decimal sequence. No empty, "." or ".." segment, no
// wildcard, space or control character.
bool ValidResourceName(absl::string_view name);

// True when `name` is "{collection}/{id}" with ValidResourceId(id).
bool IsResourceName(absl::string_view name, absl::string_view collection);

// "organizations/acme" -> "acme". INVALID_ARGUMENT, reason INVALID_NAME,
// naming `field` otherwise.
absl::StatusOr<std::string> ParseResourceName(absl::string_view name, absl::string_view collection,
                                              absl::string_view field);

// OK when ValidResourceName(name); INVALID_ARGUMENT (INVALID_NAME) naming
// `field` otherwise.
absl::Status CheckResourceName(absl::string_view name, absl::string_view field);

}  // namespace labshare

#endif  // LABSHARE_COMMON_RESOURCE_NAME_H_
