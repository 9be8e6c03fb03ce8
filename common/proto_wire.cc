#include "common/proto_wire.h"

#include <algorithm>
#include <cstring>

#include <google/protobuf/stubs/common.h>
#include <google/protobuf/wire_format_lite.h>

namespace labshare {
namespace wire {
namespace {

constexpr uint32_t kVarint = 0, kFixed64 = 1, kLength = 2, kStartGroup = 3, kEndGroup = 4, kFixed32 = 5;

}  // namespace

bool VarintSlow(const char** p, const char* end, uint64_t* v) {
  uint64_t out = 0;
  const char* q = *p;
  for (int i = 0; i < 10; ++i) {  // the parser's limit; bits past 64 are dropped, as it does
    if (q == end) return false;
    const auto byte = static_cast<uint8_t>(*q++);
    out |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
    if (byte < 0x80) {
      *p = q;
      *v = out;
      return true;
    }
  }
  return false;
}

bool TagSlow(const char** p, const char* end, uint32_t* tag) {
  uint32_t out = 0;
  const char* q = *p;
  for (int i = 0; i < 5; ++i) {  // ReadTag: at most 5 bytes, the high bits dropped
    if (q == end) return false;
    const auto byte = static_cast<uint8_t>(*q++);
    out |= static_cast<uint32_t>(byte & 0x7f) << (7 * i);
    if (byte < 0x80) {
      *p = q;
      *tag = out;
      return out >= 8;
    }
  }
  return false;
}

}  // namespace wire

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;

constexpr int kRecursionLimit = 100;  // io::CodedInputStream's default, which ParseFromString uses

}  // namespace

WireChecker::WireChecker(const Descriptor* root) {
  std::vector<const Descriptor*> seen;
  Add(root, &seen);
}

int WireChecker::Add(const Descriptor* d, std::vector<const Descriptor*>* seen) {
  for (size_t i = 0; i < seen->size(); ++i) {
    if ((*seen)[i] == d) return static_cast<int>(i);
  }
  const int index = static_cast<int>(types_.size());
  seen->push_back(d);
  types_.emplace_back();
  std::vector<std::pair<int, Field>> fields;
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    Field field;
    field.wire_type = static_cast<uint8_t>(google::protobuf::internal::WireFormatLite::WireTypeForFieldType(
        static_cast<google::protobuf::internal::WireFormatLite::FieldType>(f->type())));
    switch (f->type()) {
      case FieldDescriptor::TYPE_MESSAGE:
      case FieldDescriptor::TYPE_GROUP:
        field.kind = Kind::kMessage;
        field.type = Add(f->message_type(), seen);
        break;
      case FieldDescriptor::TYPE_STRING:
        // proto3 strings must be UTF-8 (the parser refuses the message);
        // proto2's are only logged about.
        if (f->file()->syntax() == FileDescriptor::SYNTAX_PROTO3) field.kind = Kind::kUtf8;
        break;
      default:
        if (f->is_repeated() && f->is_packable()) {
          field.kind = field.wire_type == wire::kFixed32   ? Kind::kPackedFixed32
                       : field.wire_type == wire::kFixed64 ? Kind::kPackedFixed64
                                                           : Kind::kPackedVarint;
        }
        break;
    }
    fields.emplace_back(f->number(), field);
  }
  Type& t = types_[static_cast<size_t>(index)];  // after the recursion: types_ may have grown
  std::sort(fields.begin(), fields.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [number, field] : fields) {
    if (number < kDense) {
      if (t.by_number.size() <= static_cast<size_t>(number)) t.by_number.resize(static_cast<size_t>(number) + 1);
      t.by_number[static_cast<size_t>(number)] = field;
    } else {
      t.sparse.emplace_back(number, field);
    }
  }
  return index;
}

const WireChecker::Field* WireChecker::Find(const Type& t, uint32_t number) const {
  if (number < t.by_number.size()) {
    const Field& f = t.by_number[number];
    return f.wire_type == 0xff ? nullptr : &f;
  }
  auto it = std::lower_bound(t.sparse.begin(), t.sparse.end(), number,
                             [](const auto& e, uint32_t n) { return static_cast<uint32_t>(e.first) < n; });
  return it != t.sparse.end() && static_cast<uint32_t>(it->first) == number ? &it->second : nullptr;
}

bool WireChecker::Valid(absl::string_view bytes, uint64_t want, WireFields* fields) const {
  const char* p = bytes.data();
  return Message(&p, bytes.data() + bytes.size(), 0, 0, kRecursionLimit, want, fields);
}

namespace {

// UTF-8 as the parser checks it, ASCII (most text) eight bytes at a time.
bool Utf8(absl::string_view s) {
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    if ((w & 0x8080808080808080ull) != 0) break;
  }
  for (; i < s.size(); ++i) {
    if (static_cast<uint8_t>(s[i]) >= 0x80) {
      return google::protobuf::internal::IsStructurallyValidUTF8(s.data() + i, static_cast<int>(s.size() - i));
    }
  }
  return true;
}

}  // namespace

bool WireChecker::Message(const char** p, const char* end, int type, uint32_t group, int depth, uint64_t want,
                          WireFields* fields) const {
  const Type& t = types_[static_cast<size_t>(type)];
  while (*p != end) {
    uint32_t tag = 0;
    if (!wire::Tag(p, end, &tag)) return false;
    const uint32_t number = tag >> 3, wire_type = tag & 7;
    if (wire_type == wire::kEndGroup) return group != 0 && number == group;
    const Field* f = Find(t, number);
    if (f == nullptr || f->wire_type != wire_type) {
      // Unknown here, or a known field on another wire type. A packable
      // repeated field is read packed (length-delimited) as well.
      if (f != nullptr && wire_type == wire::kLength &&
          (f->kind == Kind::kPackedVarint || f->kind == Kind::kPackedFixed32 || f->kind == Kind::kPackedFixed64)) {
        absl::string_view packed;
        if (!wire::Length(p, end, &packed)) return false;
        if (f->kind == Kind::kPackedVarint) {
          const char* q = packed.data();
          const char* packed_end = q + packed.size();
          uint64_t v = 0;
          while (q != packed_end) {
            if (!wire::Varint(&q, packed_end, &v)) return false;
          }
        } else if (packed.size() % (f->kind == Kind::kPackedFixed32 ? 4 : 8) != 0) {
          return false;
        }
        continue;
      }
      if (!Skip(p, end, tag, depth)) return false;
      continue;
    }
    if (f->kind == Kind::kMessage) {
      if (depth <= 0) return false;
      if (wire_type == wire::kStartGroup) {
        if (!Message(p, end, f->type, number, depth - 1, 0, nullptr)) return false;
        continue;
      }
      absl::string_view body;
      if (!wire::Length(p, end, &body)) return false;
      const char* q = body.data();
      if (!Message(&q, body.data() + body.size(), f->type, 0, depth - 1, 0, nullptr)) return false;
      if (number < 64 && ((want >> number) & 1) != 0) fields->push_back({number, 0, body});
      continue;
    }
    if (f->kind == Kind::kUtf8) {
      absl::string_view s;
      if (!wire::Length(p, end, &s) || !Utf8(s)) return false;
      if (number < 64 && ((want >> number) & 1) != 0) fields->push_back({number, 0, s});
      continue;
    }
    if (number < 64 && ((want >> number) & 1) != 0) {
      // Scalars and bytes of the root, handed back.
      if (wire_type == wire::kVarint) {
        uint64_t v = 0;
        if (!wire::Varint(p, end, &v)) return false;
        fields->push_back({number, v, {}});
        continue;
      }
      if (wire_type == wire::kLength) {
        absl::string_view s;
        if (!wire::Length(p, end, &s)) return false;
        fields->push_back({number, 0, s});
        continue;
      }
    }
    if (!Skip(p, end, tag, depth)) return false;
  }
  return group == 0;  // a group's end tag never came
}

bool WireChecker::Skip(const char** p, const char* end, uint32_t tag, int depth) const {
  switch (tag & 7) {
    case wire::kVarint: {
      uint64_t v = 0;
      return wire::Varint(p, end, &v);
    }
    case wire::kFixed64:
      return wire::Fixed(p, end, 8);
    case wire::kLength: {
      absl::string_view s;
      return wire::Length(p, end, &s);
    }
    case wire::kStartGroup: {
      // An unknown group: its fields, to the matching end tag.
      if (depth <= 0) return false;
      while (true) {
        uint32_t inner = 0;
        if (!wire::Tag(p, end, &inner)) return false;
        if ((inner & 7) == wire::kEndGroup) return (inner >> 3) == (tag >> 3);
        if (!Skip(p, end, inner, depth - 1)) return false;
      }
    }
    case wire::kFixed32:
      return wire::Fixed(p, end, 4);
    default:
      return false;  // wire types 6 and 7 do not exist
  }
}

}  // namespace labshare
