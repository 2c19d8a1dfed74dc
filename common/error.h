// Errors by kind. Bad input (a corrupt image, a malformed manifest line, a wrong model) is
// an expected outcome: it ends the operation with an mms::Error whose kind says what went
// wrong and whose message names the file or value. Front ends (CLI, HTTP) map kinds to exit
// codes and statuses in one place each. Programmer errors use assert, never Error.
#pragma once

#include <stdexcept>
#include <string>

namespace mms {

enum class ErrorKind {
  kInvalidArgument,  // a value the caller passed is out of range or malformed
  kNotFound,         // a file, item or key does not exist
  kCorrupt,          // data exists but cannot be parsed (truncated image, bad JSON line)
  kUnsupported,      // well-formed but not a format or feature we handle
  kTooLarge,         // over a documented limit (pixels, bytes, tokens)
  kMismatch,         // two things that must agree do not (model vs index, shapes)
  kIo,               // the operating system refused a read or write
  kUnavailable,      // temporarily unable (queue full, shutting down)
  kInternal,         // a dependency failed in a way we did not anticipate
};

// Stable lower-case name of a kind, e.g. "invalid_argument"; used in logs and HTTP bodies.
const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message);

  ErrorKind kind() const noexcept { return kind_; }

  static Error invalid_argument(const std::string& message);
  static Error not_found(const std::string& message);
  static Error corrupt(const std::string& message);
  static Error unsupported(const std::string& message);
  static Error too_large(const std::string& message);
  static Error mismatch(const std::string& message);
  static Error io(const std::string& message);
  static Error unavailable(const std::string& message);
  static Error internal(const std::string& message);

 private:
  ErrorKind kind_;
};

}  // namespace mms
