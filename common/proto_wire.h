// Reading serialized protobuf messages without building them: a check that
// bytes would parse, and the few scalar primitives a field reader needs.
// For answers that pass stored documents through as they are (ListBookings'
// page): parsing 50 documents onto the response only to serialize them
// again is most of such a call's work.
#ifndef LABSHARE_COMMON_PROTO_WIRE_H_
#define LABSHARE_COMMON_PROTO_WIRE_H_

#include <cstdint>
#include <vector>

#include <google/protobuf/descriptor.h>

#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"

namespace labshare {

// The wire primitives (little-endian, as protobuf writes them). Each reads
// at *p, advances it and answers false when the bytes end or are malformed.
namespace wire {
bool VarintSlow(const char** p, const char* end, uint64_t* v);
inline bool Varint(const char** p, const char* end, uint64_t* v) {
  if (*p != end && static_cast<uint8_t>(**p) < 0x80) {
    *v = static_cast<uint8_t>(*(*p)++);
    return true;
  }
  return VarintSlow(p, end, v);
}
bool TagSlow(const char** p, const char* end, uint32_t* tag);
// A varint of at most 5 bytes cut to 32 bits (as the parser reads a tag),
// of a field number other than 0 (tag 0 ends a message early, and field
// number 0 does not exist: the parser refuses both).
inline bool Tag(const char** p, const char* end, uint32_t* tag) {
  if (*p != end && static_cast<uint8_t>(**p) < 0x80) {
    *tag = static_cast<uint8_t>(*(*p)++);
    return *tag >= 8;
  }
  return TagSlow(p, end, tag);
}
// A length-delimited payload.
inline bool Length(const char** p, const char* end, absl::string_view* bytes) {
  uint64_t n = 0;
  const char* q = *p;
  // ReadSize: at most 5 bytes and below 2 GiB.
  if (!Varint(&q, end, &n) || q - *p > 5 || n > static_cast<uint64_t>(end - q)) return false;
  *bytes = absl::string_view(q, static_cast<size_t>(n));
  *p = q + n;
  return true;
}
inline bool Fixed(const char** p, const char* end, int bytes) {  // skips 4 or 8 bytes
  if (end - *p < bytes) return false;
  *p += bytes;
  return true;
}
}  // namespace wire

// A top-level field WireChecker::Valid was asked to hand back: a known
// field on its own wire type (varint or length-delimited), as it came.
struct WireField {
  uint32_t number = 0;
  uint64_t varint = 0;      // a varint field's value
  absl::string_view bytes;  // a length-delimited field's payload
};
using WireFields = absl::InlinedVector<WireField, 24>;

// Whether `bytes` are what ParseFromString of a message of type `root`
// accepts (protobuf 3.21's rules): well-formed tags, varints, lengths and
// groups, every embedded message of a known field well-formed in turn, the
// UTF-8 of proto3 string fields, nesting at most 100 deep, nothing left over.
// Unknown fields, and known ones on another wire type (which the parser keeps
// as unknown), are checked for form only. Required fields (proto2) are not
// checked. Built once per root type (walks every message type reachable from
// it); Valid is thread-safe.
class WireChecker {
 public:
  explicit WireChecker(const google::protobuf::Descriptor* root);
  bool Valid(absl::string_view bytes) const { return Valid(bytes, 0, nullptr); }
  // The same, and every occurrence of the root's known fields numbered below
  // 64 whose bit is set in `want` appended to *fields, in order: what a
  // reader of those fields needs, read in the same pass.
  bool Valid(absl::string_view bytes, uint64_t want, WireFields* fields) const;

 private:
  enum class Kind : uint8_t { kNone, kMessage, kUtf8, kPackedVarint, kPackedFixed32, kPackedFixed64 };
  struct Field {
    uint8_t wire_type = 0xff;  // the known field's wire type; 0xff: not a field of the type
    Kind kind = Kind::kNone;
    int type = -1;  // kMessage: index into types_
  };
  struct Type {
    std::vector<Field> by_number;                 // dense, for numbers up to kDense
    std::vector<std::pair<int, Field>> sparse;    // the rest, sorted by number
  };
  static constexpr int kDense = 1024;

  int Add(const google::protobuf::Descriptor* d, std::vector<const google::protobuf::Descriptor*>* seen);
  const Field* Find(const Type& t, uint32_t number) const;
  // Reads fields of types_[type] from *p to end (or to the end-group tag of
  // `group` when group != 0); false on anything the parser refuses.
  bool Message(const char** p, const char* end, int type, uint32_t group, int depth, uint64_t want,
               WireFields* fields) const;
  bool Skip(const char** p, const char* end, uint32_t tag, int depth) const;

  std::vector<Type> types_;
};

}  // namespace labshare

#endif  // LABSHARE_COMMON_PROTO_WIRE_H_
