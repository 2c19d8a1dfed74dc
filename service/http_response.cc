#include "service/http_response.h"

#include <cstdio>

namespace mms {

int http_status_for(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return 400;
    case ErrorKind::kNotFound: return 404;
    case ErrorKind::kMismatch: return 409;
    case ErrorKind::kTooLarge: return 413;
    case ErrorKind::kUnsupported: return 415;
    case ErrorKind::kCorrupt: return 422;
    case ErrorKind::kUnavailable: return 503;
    case ErrorKind::kIo:
    case ErrorKind::kInternal: return 500;
  }
  return 500;
}

HttpResponse error_response(int status, const std::string& code, const std::string& message) {
  HttpResponse res;
  res.status = status;
  res.body = dump_json({{"error", {{"code", code}, {"message", message}}}});
  if (status == 503 || status == 429) res.headers.emplace_back("Retry-After", "1");
  return res;
}

HttpResponse error_response(const Error& e) {
  const int status = http_status_for(e.kind());
  if (status == 500) {
    std::fprintf(stderr, "mmsearch serve: internal error: %s\n", e.what());
    return error_response(500, "internal", "internal error; see the server log");
  }
  return error_response(status, error_kind_name(e.kind()), e.what());
}

std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

HttpResponse json_response(const nlohmann::json& body) {
  HttpResponse res;
  res.body = dump_json(body);
  return res;
}

}  // namespace mms
