// What every fuzz target shares: the rule that an mms::Error is a parser's expected answer to
// bad bytes (swallowed), while anything else escapes to libFuzzer and is a finding: a crash,
// a sanitizer report, an uncaught std:: exception (std::terminate aborts with the throw's
// stack intact) or a hang (-timeout). Checks of a parser's promises abort the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "common/error.h"

namespace mms::fuzz {

// Runs `parse`; returns false when it threw mms::Error.
template <class F>
bool parses(F&& parse) {
  try {
    parse();
    return true;
  } catch (const Error&) {
    return false;
  }
}

// A broken promise of the parser under test: reported as a crash with `what`.
[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "fuzz finding: %s\n", what);
  std::abort();
}
inline void check(bool ok, const char* what) {
  if (!ok) fail(what);
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Splits `input` at the first '\n': the line (without it) and the rest. Targets whose
// parser takes two outside values (a Content-Type and a body, a method and a path) read them
// this way, so seeds stay plain text files.
inline std::pair<std::string_view, std::string_view> first_line(std::string_view input) {
  const size_t nl = input.find('\n');
  if (nl == std::string_view::npos) return {input, {}};
  return {input.substr(0, nl), input.substr(nl + 1)};
}

}  // namespace mms::fuzz
