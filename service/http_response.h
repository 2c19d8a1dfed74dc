// What the service answers: the response a handler returns, and the one JSON error shape
// every failure takes, {"error": {"code", "message"}}, whoever detects it (the server core's
// parser, the route table, a handler's Error).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "service/http_request.h"

namespace mms {

// `close` ends the connection after the answer (every early answer does).
struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  Fields headers;  // besides Content-Type, Content-Length and Connection
  bool close = false;
};

// The one place error kinds become HTTP statuses.
int http_status_for(ErrorKind kind);

// A JSON error answer; 503 and 429 carry Retry-After: 1.
HttpResponse error_response(int status, const std::string& code, const std::string& message);
// An Error as its status; a 500 names nothing internal to the client (the message goes to
// the server's log instead).
HttpResponse error_response(const Error& error);

// JSON text that never throws on invalid UTF-8 (request paths and file names may hold any
// bytes): bad sequences become U+FFFD.
std::string dump_json(const nlohmann::json& j);
HttpResponse json_response(const nlohmann::json& body);

}  // namespace mms
