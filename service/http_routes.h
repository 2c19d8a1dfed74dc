// The service's one route table: each route's method, path pattern, handler, metric label,
// body limit and OpenAPI operation in one place. 404 and 405 (with Allow), the metric labels
// and the "paths" of GET /openapi.json all derive from it, so a route cannot be served without
// being documented or counted under a label that the table did not name.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "service/http_request.h"
#include "service/http_response.h"

namespace mms {

struct Route {
  std::string method;   // "GET" or "POST"
  std::string pattern;  // "/v1/items/{id}/image": a {name} segment matches 1-18 digits
  // Body bytes the route accepts: 0 for none (a request that carries one is refused).
  int64_t max_body = 0;
  bool needs_key = true;  // false: served without the API key (the page, /healthz)
  // Runs on the I/O thread rather than a worker: only for cheap routes with no waiting, so
  // that /healthz answers while every worker is busy.
  bool inline_handler = false;
  std::function<HttpResponse(HttpRequest&)> handler;
  nlohmann::json openapi;  // the OpenAPI operation object
};

// The outcome of matching a request against the table.
struct RouteMatch {
  const Route* route = nullptr;     // the route, when the path and the method match
  std::vector<std::string> params;  // the {name} segments, in order
  // No route: 404, or 405 when the path matches under other methods (listed in `allow`).
  int status = 0;
  std::string allow;
  // The metric label: the route's pattern, or "unmatched".
  std::string label;
};

class RouteTable {
 public:
  void add(Route route);
  RouteMatch match(std::string_view method, std::string_view path) const;
  const std::vector<Route>& routes() const { return routes_; }
  // {"/v1/search/text": {"post": {...}}, ...} for the OpenAPI document's "paths".
  nlohmann::json openapi_paths() const;

 private:
  std::vector<Route> routes_;
};

// The method as a metric label: one of the methods HTTP defines, else "other", so a client
// cannot mint new series with made-up methods.
std::string method_label(std::string_view method);

}  // namespace mms
