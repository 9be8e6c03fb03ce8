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
// "filter" or "scope"). Checked after authorization, before anything is read.
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

// Period start, then the keys in group_by order; byte order of the result is
// the row order.
inline std::string RowSortKey(const labshare::usage::v1::UsageRow& row,
                              const std::vector<labshare::usage::v1::Dimension>& dims) {
  namespace v1 = labshare::usage::v1;
  std::vector<std::string> k = {absl::StrFormat("%020d", row.period().start_time().seconds())};
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
