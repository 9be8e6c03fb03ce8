#include "common/input_limits.h"

#include <string>

#include <google/protobuf/descriptor.h>

#include "absl/strings/str_cat.h"
#include "common/error.h"

namespace labshare {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

std::string Path(const std::string& prefix, const FieldDescriptor* f, int index) {
  std::string out = prefix.empty() ? f->name() : absl::StrCat(prefix, ".", f->name());
  if (index >= 0) absl::StrAppend(&out, "[", index, "]");
  return out;
}

absl::Status CheckMessage(const Message& m, const std::string& path, int depth);

absl::Status CheckInt(int64_t v, int64_t max, const std::string& path) {
  if (v > max || v < -max) {
    return InvalidField(path, absl::StrCat("must be between ", -max, " and ", max));
  }
  return absl::OkStatus();
}

// Well-known and shared messages with limits of their own; nullopt-like
// "not special" is signalled by `handled` = false.
absl::Status CheckSpecial(const Message& m, const std::string& path, bool* handled) {
  const std::string& type = m.GetDescriptor()->full_name();
  const Reflection* r = m.GetReflection();
  const auto* d = m.GetDescriptor();
  *handled = true;
  if (type == "labshare.type.v1.Money") {
    const FieldDescriptor* amount = d->FindFieldByName("amount_minor");
    if (amount == nullptr) return absl::OkStatus();
    const int64_t v = r->GetInt64(m, amount);
    if (v > kMaxAmountMinor || v < -kMaxAmountMinor) {
      return InvalidField(path.empty() ? "amount_minor" : path + ".amount_minor",
                          absl::StrCat("must be at most ", kMaxAmountMinor, " minor units in size"));
    }
    return absl::OkStatus();
  }
  if (type == "google.protobuf.Duration" || type == "google.protobuf.Timestamp") {
    const FieldDescriptor* sf = d->FindFieldByName("seconds");
    const FieldDescriptor* nf = d->FindFieldByName("nanos");
    const int64_t s = r->GetInt64(m, sf);
    const int32_t n = r->GetInt32(m, nf);
    if (type == "google.protobuf.Duration") {
      if (s > kMaxDurationSeconds || s < -kMaxDurationSeconds || n > 999'999'999 || n < -999'999'999 ||
          (s > 0 && n < 0) || (s < 0 && n > 0)) {
        return InvalidField(path, "must be a valid duration of at most 100 years");
      }
    } else if (s < kMinTimestampSeconds || s > kMaxTimestampSeconds || n < 0 || n > 999'999'999) {
      return InvalidField(path, "must be a valid time between years 1 and 9999");
    }
    return absl::OkStatus();
  }
  *handled = false;
  return absl::OkStatus();
}

absl::Status CheckField(const Message& m, const FieldDescriptor* f, int index, const std::string& prefix,
                        int depth) {
  const Reflection* r = m.GetReflection();
  const bool repeated = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT64: {
      const int64_t v = repeated ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f);
      return CheckInt(v, kMaxInt64Input, Path(prefix, f, index));
    }
    case FieldDescriptor::CPPTYPE_INT32: {
      if (f->name() == "page_size") return absl::OkStatus();
      const int32_t v = repeated ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
      return CheckInt(v, kMaxInt32Input, Path(prefix, f, index));
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      const uint64_t v = repeated ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f);
      if (v > static_cast<uint64_t>(kMaxInt64Input)) return CheckInt(kMaxInt64Input + 1, kMaxInt64Input, Path(prefix, f, index));
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      const uint32_t v = repeated ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f);
      if (v > static_cast<uint32_t>(kMaxInt32Input)) return CheckInt(int64_t{kMaxInt32Input} + 1, kMaxInt32Input, Path(prefix, f, index));
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      // proto3 keeps numbers its enum does not define (a newer client's, a
      // made-up one): refused here, so no service stores or acts on them.
      const int v = repeated ? r->GetRepeatedEnumValue(m, f, index) : r->GetEnumValue(m, f);
      if (f->enum_type()->FindValueByNumber(v) == nullptr) {
        return InvalidField(Path(prefix, f, index),
                            absl::StrCat(v, " is not a value of ", f->enum_type()->full_name()));
      }
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      if (f->is_map()) return absl::OkStatus();  // no amounts are keyed by name in requests
      const Message& sub = repeated ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f);
      return CheckMessage(sub, Path(prefix, f, index), depth + 1);
    }
    default:
      return absl::OkStatus();
  }
}

absl::Status CheckMessage(const Message& m, const std::string& path, int depth) {
  if (depth > 32) return absl::OkStatus();  // protobuf's own nesting limit is far above our messages
  bool handled = false;
  LS_RETURN_IF_ERROR(CheckSpecial(m, path, &handled));
  if (handled) return absl::OkStatus();
  const Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);  // set fields only, in field-number order
  for (const FieldDescriptor* f : fields) {
    if (f->is_repeated()) {
      const int n = r->FieldSize(m, f);
      for (int i = 0; i < n; ++i) LS_RETURN_IF_ERROR(CheckField(m, f, i, path, depth));
    } else {
      LS_RETURN_IF_ERROR(CheckField(m, f, -1, path, depth));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckInputRanges(const google::protobuf::Message& request) {
  return CheckMessage(request, "", 0);
}

}  // namespace labshare
