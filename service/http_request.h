// The parts of an HTTP request the service reads, and the pure functions that parse them:
// the query string, JSON bodies (bounded in depth), multipart/form-data and raw image bodies,
// the Host header, and the search options every search route takes. No sockets and no
// server here: every function is a plain call with a plain answer (or an Error naming what
// is wrong), tested without a server process (tests/service_http_request_test.cc).
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "index/query.h"
#include "index/search.h"

namespace mms {

using Fields = std::vector<std::pair<std::string, std::string>>;

// A request as the server core hands it to a route's handler: the body is whole and within
// its route's limit, the header within the server's.
struct HttpRequest {
  std::string method;  // as sent: "GET", "POST", ...
  std::string target;  // as sent: "/v1/items/3/image?size=64"
  std::string path;    // the target before '?' (not percent-decoded: routes are ASCII)
  Fields params;       // the query string, percent-decoded, in order
  Fields headers;      // names lower-cased, in order
  std::string body;
  std::vector<std::string> path_params;  // what the route's {id}s matched
  // Set by admission from the route table, once: the route's index (-1: none) and its metric
  // label ("unmatched" when no route's path matches).
  int32_t route = -1;
  std::string route_label = "unmatched";
  std::string client;  // the peer's address
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();

  // The first header or parameter of that name ("" / nullptr when absent). Header names
  // are given lower-case.
  std::string header(std::string_view lower_name) const;
  const std::string* param(std::string_view name) const;
};

// "a=1&b=x%20y&c" -> {a: 1, b: "x y", c: ""}; '+' is a space. Throws invalid_argument for a
// malformed %-escape.
Fields parse_query_string(std::string_view query);

// Splits a request target into the path and the parsed query string (parse_query_string).
void split_target(std::string_view target, std::string& path, Fields& params);

// A JSON body that must be an object. Nesting deeper than max_depth is refused as soon as
// the parser reaches it (a body of 8 MiB of '[' costs nothing), and so is a body over
// max_bytes (Error::too_large). Everything else wrong is Error::invalid_argument.
struct JsonLimits {
  int32_t max_depth = 32;
  int64_t max_bytes = int64_t{1} << 20;
};
nlohmann::json parse_json_object(std::string_view body, const JsonLimits& limits = {});

// A string field of a JSON object: present, a string, not blank, at most max_bytes long
// (Error::too_large beyond).
std::string string_field(const nlohmann::json& j, const char* name, int64_t max_bytes);

// One part of a multipart/form-data body; `data` points into the body.
struct MultipartPart {
  std::string name, filename, content_type;
  std::string_view data;
};
// The parts of a multipart/form-data body with the boundary of `content_type`. Linear in the
// body's size: each part's header block is bounded (8 KiB) and scanned once, and at most
// max_parts parts are accepted. Throws invalid_argument for a malformed body.
std::vector<MultipartPart> parse_multipart(std::string_view content_type, std::string_view body,
                                           size_t max_parts = 16);

// The image an upload carries: the multipart field "image", or the whole body when its
// Content-Type is image/*. Throws invalid_argument (no "image" field) or unsupported (any
// other Content-Type), naming what was sent.
std::string_view uploaded_image(const HttpRequest& request);

// What every search route takes besides its query: k, target and the filters.
struct SearchRequest {
  int32_t k = 10;
  SearchTarget target = SearchTarget::kImages;
  QueryFilters filters;
};
// From a JSON body's "k", "target", "min_score", "path_prefix", "dedup", "dedup_threshold".
SearchRequest search_request(const nlohmann::json& j, int32_t max_k);
// The same options as query parameters (POST /v1/search/image, whose body is the image).
SearchRequest search_request(const Fields& params, int32_t max_k);

// A decimal query parameter in 0..999999999, `fallback` when absent.
int64_t int_param(const HttpRequest& request, const char* name, int64_t fallback);

// Whether a Host header names one of `allowed` (names compared without case, any port; an
// IPv6 literal in brackets). An empty list allows every host.
bool host_allowed(std::string_view host, const std::vector<std::string>& allowed);

// The terms of a query, in any syntax, are at most kMaxQueryTerms (invalid_argument beyond).
constexpr size_t kMaxQueryTerms = 16;
void check_term_count(size_t terms);

}  // namespace mms
