// Helpers shared by usage_figures.cc and usage_reports.cc: exact ratios,
// group_by validation and the row order of QueryUsage / ExportUsage.
#ifndef LABSHARE_SERVICES_USAGE_USAGE_INTERNAL_H_
#define LABSHARE_SERVICES_USAGE_USAGE_INTERNAL_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/error.h"
#include "common/resource_name.h"
#include "labshare/usage/v1/usage.pb.h"

namespace labshare::usage {

// num x 10000 / den rounded half away from zero (128-bit intermediate).
inline int64_t Bps(int64_t num, int64_t den) {
  if (den == 0) return 0;
  const __int128 n = static_cast<__int128>(num) * 10000;
  __int128 q = n / den, r = n % den;
  if (2 * (r < 0 ? -r : r) >= (den < 0 ? -den : den)) q += ((n < 0) != (den < 0)) ? -1 : 1;
  return static_cast<int64_t>(q);
}

inline labshare::usage::v1::Ratio MakeRatio(int64_t num, int64_t den) {
  labshare::usage::v1::Ratio r;
  r.set_numerator(num);
  r.set_denominator(den);
  r.set_defined(den != 0);
  r.set_basis_points(Bps(num, den));
  return r;
}

// The figures of a row with nothing in it (no use, no booking, no money, no
// instrument in the set): what Compute would show for a row of zeros, so
// that names usage has never seen, and an annual report of a year or scope
// with nothing in it, give "zero figures" rather than an unset message.
// Money in the reporting currency; a 0/0 ratio as MakeRatio makes it
// (undefined); the instrument-set figures only in the owner view.
inline labshare::usage::v1::UsageFigures ZeroFigures(const std::string& currency, bool owner_view) {
  labshare::usage::v1::UsageFigures fig;
  auto money = [&](labshare::type::v1::Money* m) {
    m->set_currency_code(currency);
    m->set_amount_minor(0);
  };
  if (owner_view) {
    *fig.mutable_utilization() = MakeRatio(0, 0);
    *fig.mutable_revenue_rate() = MakeRatio(0, 0);
    money(fig.mutable_original_value());
  }
  *fig.mutable_sharing_rate() = MakeRatio(0, 0);
  money(fig.mutable_service_income());
  money(fig.mutable_penalty_income());
  money(fig.mutable_subsidized_income());
  money(fig.mutable_in_kind_contribution());
  return fig;
}

// 0 to 3 distinct, specified dimensions.
template <typename Repeated>
absl::StatusOr<std::vector<labshare::usage::v1::Dimension>> ParseDims(const Repeated& group_by) {
  namespace v1 = labshare::usage::v1;
  std::vector<v1::Dimension> dims;
  for (int d : group_by) {
    const auto dim = static_cast<v1::Dimension>(d);
    if (dim == v1::DIMENSION_UNSPECIFIED || !v1::Dimension_IsValid(d) ||
        std::find(dims.begin(), dims.end(), dim) != dims.end()) {
      return InvalidField("group_by", "dimensions must be distinct and specified");
    }
    dims.push_back(dim);
  }
  if (dims.size() > 3) return InvalidField("group_by", "at most 3 dimensions");
  return dims;
}

// Every entry of `names` is "{collection}/{id}"; INVALID_ARGUMENT
// (INVALID_NAME) naming the first that is not, e.g. "filter.instruments[2]".
template <typename Repeated>
absl::Status CheckNames(const Repeated& names, absl::string_view collection, absl::string_view field) {
  int i = 0;
  for (const std::string& name : names) {
    if (!IsResourceName(name, collection)) {
      return ParseResourceName(name, collection, absl::StrFormat("%s[%d]", field, i)).status();
    }
    ++i;
  }
  return absl::OkStatus();
}

// The names of a UsageFilter, InstrumentFilter or ReportScope (`field`:
// "filter" or "scope"). Every figure method checks in one order (usage.proto):
// authorization, the range (or year), the method's other fields, these
// names, then the page or resume token; before anything is read.
template <typename Filter>
absl::Status CheckFilterNames(const Filter& f, absl::string_view field) {
  LS_RETURN_IF_ERROR(CheckNames(f.owner_organizations(), "organizations", absl::StrCat(field, ".owner_organizations")));
  LS_RETURN_IF_ERROR(CheckNames(f.facilities(), "facilities", absl::StrCat(field, ".facilities")));
  if constexpr (!std::is_same_v<Filter, labshare::usage::v1::ReportScope>) {
    LS_RETURN_IF_ERROR(CheckNames(f.instruments(), "instruments", absl::StrCat(field, ".instruments")));
  }
  if constexpr (std::is_same_v<Filter, labshare::usage::v1::UsageFilter>) {
    LS_RETURN_IF_ERROR(
        CheckNames(f.user_organizations(), "organizations", absl::StrCat(field, ".user_organizations")));
  }
  return absl::OkStatus();
}

// A period start (Unix seconds) whose byte order is its numeric order:
// "%020d" for a start at or after 1970-01-01T00:00Z (the key page and resume
// tokens have always carried), "-" and the 19-digit start + 10^18 before it
// (a period starting before 1970 in the reporting zone, e.g. Asia/Shanghai's
// 1970-01-01 at -28800): "-" sorts before every digit, and the offset keeps
// the negative starts ascending (Timestamp seconds are >= -62135596800).
inline std::string PeriodSortKey(int64_t seconds) {
  if (seconds >= 0) return absl::StrFormat("%020d", seconds);
  return absl::StrFormat("-%019d", seconds + 1'000'000'000'000'000'000);
}

// A row position from a token made when negative starts were keyed by
// "%020d" ("-" and zero-padded digits, sorting in reverse numeric order):
// its period start in PeriodSortKey's form, so that old tokens resume where
// they stopped. A new negative key has a '9' third (offset start >= 9e17),
// an old one a '0' (|start| < 10^17).
inline std::string UpgradeRowSortKey(const std::string& key) {
  if (key.size() < 20 || key[0] != '-' || key[2] != '0') return key;
  const size_t end = std::min(key.find('\x1f'), key.size());
  int64_t seconds = 0;
  if (end != 20 || !absl::SimpleAtoi(absl::string_view(key).substr(0, end), &seconds) || seconds >= 0) return key;
  return PeriodSortKey(seconds) + key.substr(end);
}

// Period start, then the keys in group_by order; byte order of the result is
// the row order.
inline std::string RowSortKey(const labshare::usage::v1::UsageRow& row,
                              const std::vector<labshare::usage::v1::Dimension>& dims) {
  namespace v1 = labshare::usage::v1;
  std::vector<std::string> k = {PeriodSortKey(row.period().start_time().seconds())};
  for (auto d : dims) {
    switch (d) {
      case v1::DIMENSION_INSTRUMENT: k.push_back(row.key().instrument()); break;
      case v1::DIMENSION_OWNER_ORGANIZATION: k.push_back(row.key().owner_organization()); break;
      case v1::DIMENSION_FACILITY: k.push_back(row.key().facility()); break;
      case v1::DIMENSION_CATEGORY: k.push_back(row.key().category()); break;
      case v1::DIMENSION_USER_ORGANIZATION: k.push_back(row.key().user_organization()); break;
      case v1::DIMENSION_SHARING_MODE: k.push_back(absl::StrFormat("%04d", static_cast<int>(row.key().mode()))); break;
      default: break;
    }
  }
  return absl::StrJoin(k, "\x1f");
}

inline void SortRows(std::vector<labshare::usage::v1::UsageRow>* rows,
                     const std::vector<labshare::usage::v1::Dimension>& dims) {
  std::vector<std::pair<std::string, size_t>> order;
  order.reserve(rows->size());
  for (size_t i = 0; i < rows->size(); ++i) order.emplace_back(RowSortKey((*rows)[i], dims), i);
  std::sort(order.begin(), order.end());
  std::vector<labshare::usage::v1::UsageRow> sorted;
  sorted.reserve(rows->size());
  for (const auto& [k, i] : order) sorted.push_back(std::move((*rows)[i]));
  *rows = std::move(sorted);
}

}  // namespace labshare::usage

#endif  // LABSHARE_SERVICES_USAGE_USAGE_INTERNAL_H_
