#include "common/currency.h"

namespace labshare {

int CurrencyMinorDigits(absl::string_view currency) {
  // ISO 4217 exponents other than two: the currencies without minor digits
  // and those with three (the list of ISO 4217 amendment 176). Every other
  // code has two.
  static constexpr absl::string_view kZero[] = {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW",
                                                "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF",
                                                "XPF"};
  static constexpr absl::string_view kThree[] = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"};
  for (absl::string_view c : kZero) {
    if (currency == c) return 0;
  }
  for (absl::string_view c : kThree) {
    if (currency == c) return 3;
  }
  return 2;
}

}  // namespace labshare
