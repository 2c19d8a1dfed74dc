#include "common/error.h"

namespace mms {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return "invalid_argument";
    case ErrorKind::kNotFound: return "not_found";
    case ErrorKind::kCorrupt: return "corrupt";
    case ErrorKind::kUnsupported: return "unsupported";
    case ErrorKind::kTooLarge: return "too_large";
    case ErrorKind::kMismatch: return "mismatch";
    case ErrorKind::kIo: return "io";
    case ErrorKind::kUnavailable: return "unavailable";
    case ErrorKind::kInternal: return "internal";
  }
  return "internal";
}

Error::Error(ErrorKind kind, const std::string& message)
    : std::runtime_error(message), kind_(kind) {}

Error Error::invalid_argument(const std::string& m) { return {ErrorKind::kInvalidArgument, m}; }
Error Error::not_found(const std::string& m) { return {ErrorKind::kNotFound, m}; }
Error Error::corrupt(const std::string& m) { return {ErrorKind::kCorrupt, m}; }
Error Error::unsupported(const std::string& m) { return {ErrorKind::kUnsupported, m}; }
Error Error::too_large(const std::string& m) { return {ErrorKind::kTooLarge, m}; }
Error Error::mismatch(const std::string& m) { return {ErrorKind::kMismatch, m}; }
Error Error::io(const std::string& m) { return {ErrorKind::kIo, m}; }
Error Error::unavailable(const std::string& m) { return {ErrorKind::kUnavailable, m}; }
Error Error::internal(const std::string& m) { return {ErrorKind::kInternal, m}; }

}  // namespace mms
