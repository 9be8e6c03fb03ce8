// CSV cells as the platform's exports write them (RFC 4180).
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace labshare {

// True for a plain number as the exports write amounts, counts and ratios:
// an optional '-', then digits, '.' and '%' ("-12.34", "1.25", "6%").
bool IsCsvNumber(absl::string_view v);

// One cell: quoted (with doubled quotes) when it holds a comma, a quote, CR
// or LF. A text cell a spreadsheet would run as a formula (=, +, -, @, tab or
// CR first: a name like "=HYPERLINK(...)") is prefixed with an apostrophe;
// a negative number stays a number when `numeric` says the cell's column
// holds numbers (and only then: a name "-5%" is text like any other).
std::string CsvCell(absl::string_view raw, bool numeric);

}  // namespace labshare
