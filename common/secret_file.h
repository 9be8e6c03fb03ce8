// Reading secrets (private keys, passwords) from files at start.
//
// A secret file must be a regular file of at most 64 KiB that no one but its
// owner can read or write: a mode with any group or other bit (e.g. 0644) is
// refused, so a key another local account could copy is never used. Errors
// (startup errors, never RPC answers):
//   NOT_FOUND            SECRET_FILE_NOT_FOUND   the file does not exist;
//   INVALID_ARGUMENT     SECRET_FILE_UNREADABLE  cannot be opened or read,
//                                                a directory, over 64 KiB;
//   FAILED_PRECONDITION  SECRET_FILE_EXPOSED     group or others have access.
// Messages name the file and what to do (e.g. "chmod 600 FILE"), never its
// content.
#ifndef LABSHARE_COMMON_SECRET_FILE_H_
#define LABSHARE_COMMON_SECRET_FILE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace labshare {

// `what` names the secret in messages, e.g. "token signing key".
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, std::string_view what);

// Overwrites s with zeros (not optimised away) and clears it.
void WipeSecret(std::string& s);

}  // namespace labshare

#endif  // LABSHARE_COMMON_SECRET_FILE_H_
