// Range limits on request inputs, checked before anything computes with
// them, so that no arithmetic on an amount, count, duration or time (in C++
// or in a Lua step) can overflow. types.proto states them for clients.
#ifndef LABSHARE_COMMON_INPUT_LIMITS_H_
#define LABSHARE_COMMON_INPUT_LIMITS_H_

#include <cstdint>

#include <google/protobuf/message.h>

#include "absl/status/status.h"

namespace labshare {

// Money: |amount_minor| at most 10^15 minor units (10^13 CNY).
inline constexpr int64_t kMaxAmountMinor = 1'000'000'000'000'000;
// Durations: at most 100 years either way.
inline constexpr int64_t kMaxDurationSeconds = int64_t{100} * 366 * 24 * 3600;
// Timestamps: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
inline constexpr int64_t kMinTimestampSeconds = -62'135'596'800;
inline constexpr int64_t kMaxTimestampSeconds = 253'402'300'799;
// Other integers (counts, basis points, days, seconds...): |v| at most this.
inline constexpr int64_t kMaxInt64Input = kMaxAmountMinor;
inline constexpr int32_t kMaxInt32Input = 1'000'000;

// Walks a request: every labshare.type.v1.Money, google.protobuf.Duration,
// google.protobuf.Timestamp and plain integer field (page_size aside: it is
// clamped) must lie within the limits above, and Durations and Timestamps
// must be well formed, and every enum field must hold a value its enum
// defines. INVALID_ARGUMENT, reason INVALID_FIELD, naming the first field
// outside (e.g. "instrument.modes[0].slot_rules.max_block") otherwise. Sign rules (e.g. "must not be negative") stay with each use.
absl::Status CheckInputRanges(const google::protobuf::Message& request);

}  // namespace labshare

#endif  // LABSHARE_COMMON_INPUT_LIMITS_H_
