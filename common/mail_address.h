// What an e-mail address must be before anything stores it or puts it into
// a mail header: inventory refuses other addresses when a user is written,
// and labshare-notify never queues a mail to one (a legacy address becomes a
// REJECTED dead letter at once) nor sends one.
#ifndef LABSHARE_COMMON_MAIL_ADDRESS_H_
#define LABSHARE_COMMON_MAIL_ADDRESS_H_

#include <string>

#include "absl/strings/string_view.h"

namespace labshare {

// Whether `address` may go into To: and RCPT TO: no CR, LF, other control
// characters or spaces, no '<' or '>', exactly one '@' between a non-empty
// local part and domain, at most 254 characters. `why` says what is wrong.
bool ValidMailAddress(absl::string_view address, std::string* why = nullptr);

}  // namespace labshare

#endif  // LABSHARE_COMMON_MAIL_ADDRESS_H_
