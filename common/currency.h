// ISO 4217 facts every service shares.
#ifndef LABSHARE_COMMON_CURRENCY_H_
#define LABSHARE_COMMON_CURRENCY_H_

#include "absl/strings/string_view.h"

namespace labshare {

// The number of minor-unit digits of an ISO 4217 currency (its exponent):
// 0 for JPY, KRW and the other currencies without minor units, 3 for BHD,
// KWD and the others with three, 2 for every other code (CNY, EUR, USD).
int CurrencyMinorDigits(absl::string_view currency);

}  // namespace labshare

#endif  // LABSHARE_COMMON_CURRENCY_H_
