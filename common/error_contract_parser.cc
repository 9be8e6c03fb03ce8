#include "common/error_contract_parser.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace labshare {
namespace {

bool IsWordChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; }

// UPPER_SNAKE with at least one underscore: "BOOKING_NOT_FOUND", not
// "MEMBER" or "CNY".
bool IsReasonWord(absl::string_view w) {
  if (w.empty() || !std::isupper(static_cast<unsigned char>(w[0]))) return false;
  bool underscore = false;
  for (char c : w) {
    if (c == '_') {
      underscore = true;
    } else if (!std::isupper(static_cast<unsigned char>(c)) && !std::isdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return underscore && w.back() != '_';
}

// "OVERPAYMENT": upper case letters only, at least four.
bool IsSingleReasonWord(absl::string_view w) {
  if (w.size() < 4) return false;
  for (char c : w) {
    if (!std::isupper(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// "CreateProject": an rpc name.
bool IsCamelWord(absl::string_view w) {
  if (w.empty() || !std::isupper(static_cast<unsigned char>(w[0]))) return false;
  for (char c : w) {
    if (std::islower(static_cast<unsigned char>(c))) return true;
  }
  return false;
}

size_t SkipSpaces(absl::string_view s, size_t i) {
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i])) != 0) ++i;
  return i;
}

absl::string_view WordAt(absl::string_view s, size_t i) {
  size_t j = i;
  while (j < s.size() && IsWordChar(s[j])) ++j;
  return s.substr(i, j - i);
}

// Index of the ')' closing the '(' at `open`, or npos.
size_t MatchingParen(absl::string_view s, size_t open) {
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '(') ++depth;
    if (s[i] == ')' && --depth == 0) return i;
  }
  return absl::string_view::npos;
}

// Splits at ',' and ';' outside nested parentheses.
std::vector<absl::string_view> Items(absl::string_view s) {
  std::vector<absl::string_view> out;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i < s.size() && s[i] == '(') ++depth;
    if (i < s.size() && s[i] == ')') --depth;
    if (i == s.size() || (depth == 0 && (s[i] == ',' || s[i] == ';'))) {
      out.push_back(absl::StripAsciiWhitespace(s.substr(start, i - start)));
      start = i + 1;
    }
  }
  return out;
}

std::set<std::string> ReasonWords(absl::string_view s) {
  std::set<std::string> out;
  for (absl::string_view item : Items(s)) {
    absl::string_view w = WordAt(item, 0);
    if (IsReasonWord(w)) out.insert(std::string(w));
  }
  return out;
}

void ParseGroup(absl::string_view code, absl::string_view content, std::set<CodeReason>* out,
                std::vector<ErrorRef>* refs) {
  for (absl::string_view item : Items(content)) {
    if (absl::StartsWith(item, "as ")) {
      absl::string_view rpc = WordAt(item, SkipSpaces(item, 3));
      if (IsCamelWord(rpc) && refs != nullptr) refs->push_back({std::string(code), std::string(rpc), {}});
      continue;
    }
    absl::string_view word = WordAt(item, 0);
    absl::string_view rest = absl::StripLeadingAsciiWhitespace(item.substr(word.size()));
    // "REASON", "REASON: why" or "REASON as OtherRpc" (explained there). A
    // one-word reason ("OVERPAYMENT") counts only with its explanation, so
    // that a bare "MEMBER" or "CNY" in prose is not taken for one.
    const bool explained = !rest.empty() && rest[0] == ':';
    if (!IsReasonWord(word) && !(explained && IsSingleReasonWord(word))) continue;
    if (rest.empty() || explained || absl::StartsWith(rest, "as ")) {
      out->insert({std::string(code), std::string(word)});
    }
  }
}

// Comment text without "//", lines joined by single spaces.
std::string JoinComment(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) {
    absl::string_view t = absl::StripAsciiWhitespace(l);
    if (!absl::ConsumePrefix(&t, "//")) continue;
    t = absl::StripAsciiWhitespace(t);
    if (t.empty()) continue;
    if (!out.empty()) out += ' ';
    out.append(t.data(), t.size());
  }
  return out;
}

// The text after the first "Errors:" (case-insensitive when `any_case`).
bool ErrorsText(absl::string_view comment, bool any_case, absl::string_view* spec) {
  size_t at = absl::string_view::npos;
  if (any_case) {
    const std::string lower = absl::AsciiStrToLower(comment);
    at = lower.find("errors:");
  } else {
    at = comment.find("Errors:");
  }
  if (at == absl::string_view::npos) return false;
  *spec = comment.substr(at + 7);
  return true;
}

struct PendingMethod {
  std::string service;  // full name
  std::string rpc;
  std::vector<ErrorRef> refs;
};

}  // namespace

bool IsGrpcCodeName(absl::string_view w) {
  static const char* const kCodes[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  for (const char* c : kCodes) {
    if (w == c) return true;
  }
  return false;
}

std::set<CodeReason> ParseErrorSpec(absl::string_view spec, std::vector<ErrorRef>* refs) {
  std::set<CodeReason> out;
  size_t i = 0;
  while (i < spec.size()) {
    const char c = spec[i];
    if (c == '(') {  // prose in parentheses, not after a code
      const size_t close = MatchingParen(spec, i);
      if (close == absl::string_view::npos) break;
      i = close + 1;
      continue;
    }
    if (c == '.' && (i + 1 == spec.size() || std::isspace(static_cast<unsigned char>(spec[i + 1])) != 0)) {
      break;  // end of the list
    }
    if (!IsWordChar(c)) {
      ++i;
      continue;
    }
    const absl::string_view word = WordAt(spec, i);
    i += word.size();
    if (IsGrpcCodeName(word) && word != "OK") {
      const size_t j = SkipSpaces(spec, i);
      if (j < spec.size() && spec[j] == '(') {
        const size_t close = MatchingParen(spec, j);
        if (close == absl::string_view::npos) break;
        ParseGroup(word, spec.substr(j + 1, close - j - 1), &out, refs);
        i = close + 1;
      } else {
        out.insert({std::string(word), std::string(word)});
      }
    } else if (word == "as") {
      size_t j = SkipSpaces(spec, i);
      const absl::string_view rpc = WordAt(spec, j);
      if (!IsCamelWord(rpc)) continue;
      ErrorRef ref{"", std::string(rpc), {}};
      i = j + rpc.size();
      j = SkipSpaces(spec, i);
      if (j < spec.size() && spec[j] == '(') {
        const size_t close = MatchingParen(spec, j);
        absl::string_view inner = spec.substr(j + 1, close == absl::string_view::npos ? 0 : close - j - 1);
        if (absl::ConsumePrefix(&inner, "without ")) {
          ref.without = ReasonWords(inner);
          i = close + 1;
        }
      }
      if (refs != nullptr) refs->push_back(std::move(ref));
    }
  }
  return out;
}

bool ErrorContract::Allows(absl::string_view method, absl::string_view code, absl::string_view reason) const {
  const CodeReason key{std::string(code), std::string(reason)};
  if (everywhere.count(key) > 0) return true;
  auto m = methods.find(std::string(method));
  if (m != methods.end() && m->second.count(key) > 0) return true;
  const size_t slash = method.rfind('/');
  if (slash == absl::string_view::npos || slash == 0) return false;
  auto s = services.find(std::string(method.substr(1, slash - 1)));
  return s != services.end() && s->second.count(key) > 0;
}

ErrorContract ParseErrorContract(const std::vector<std::pair<std::string, std::string>>& files) {
  ErrorContract contract;
  std::vector<PendingMethod> pending;
  for (const auto& [file_name, content] : files) {
    std::vector<std::string> lines = absl::StrSplit(content, '\n');
    std::string package;
    std::vector<std::string> header;
    std::vector<std::string> comment;  // the comment block just above the current line
    std::vector<std::string> services_here;
    std::string service;
    for (size_t n = 0; n < lines.size(); ++n) {
      absl::string_view t = absl::StripAsciiWhitespace(lines[n]);
      if (absl::StartsWith(t, "//")) {
        comment.push_back(lines[n]);
        if (package.empty()) header.push_back(lines[n]);
        continue;
      }
      if (absl::ConsumePrefix(&t, "package ")) {
        package = std::string(absl::StripSuffix(absl::StripAsciiWhitespace(t), ";"));
      } else if (absl::ConsumePrefix(&t, "service ")) {
        service = absl::StrCat(package, ".", WordAt(t, 0));
        services_here.push_back(service);
      } else if (absl::ConsumePrefix(&t, "rpc ")) {
        const std::string rpc(WordAt(t, 0));
        const std::string method = absl::StrCat("/", service, "/", rpc);
        const std::string text = JoinComment(comment);
        absl::string_view spec;
        if (!ErrorsText(text, /*any_case=*/true, &spec)) {
          contract.problems.push_back(absl::StrCat(file_name, ":", n + 1, ": rpc ", rpc, " has no \"Errors:\""));
        }
        PendingMethod p{service, rpc, {}};
        contract.methods[method] = ParseErrorSpec(spec, &p.refs);
        pending.push_back(std::move(p));
      }
      comment.clear();
    }
    const std::string header_text = JoinComment(header);
    absl::string_view spec;
    if (ErrorsText(header_text, /*any_case=*/false, &spec)) {
      std::set<CodeReason> errors = ParseErrorSpec(spec);
      if (package == "labshare.type.v1") {
        contract.everywhere.insert(errors.begin(), errors.end());
      } else {
        for (const std::string& s : services_here) contract.services[s].insert(errors.begin(), errors.end());
      }
    }
  }
  // "as X": X's own list, resolved until nothing changes (X may refer on).
  for (bool changed = true; changed;) {
    changed = false;
    for (const PendingMethod& p : pending) {
      auto& mine = contract.methods[absl::StrCat("/", p.service, "/", p.rpc)];
      for (const ErrorRef& ref : p.refs) {
        auto other = contract.methods.find(absl::StrCat("/", p.service, "/", ref.rpc));
        if (other == contract.methods.end()) continue;
        for (const CodeReason& cr : other->second) {
          if (!ref.code.empty() && cr.first != ref.code) continue;
          if (ref.without.count(cr.second) > 0) continue;
          changed |= mine.insert(cr).second;
        }
      }
    }
  }
  for (const PendingMethod& p : pending) {
    for (const ErrorRef& ref : p.refs) {
      if (contract.methods.count(absl::StrCat("/", p.service, "/", ref.rpc)) == 0) {
        contract.problems.push_back(absl::StrCat(p.rpc, ": errors refer to unknown rpc ", ref.rpc));
      }
    }
  }
  return contract;
}

}  // namespace labshare
