// Fuzzes RouteTable::match (service/http_routes.h) over the service's route patterns (those
// of HttpService::add_routes in service/http_server.cc). Input: the method line, then the
// path. Findings: a crash, a sanitizer report, an exception, or a match that breaks the
// table's promises: a route only with status 0 and one {id} per "{", else 404 or 405 with
// an Allow list; every {id} 1-18 digits; a label that is a pattern or "unmatched"; a
// method label among the HTTP methods or "other".
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "service/http_routes.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

const mms::RouteTable& service_routes() {
  static const mms::RouteTable table = [] {
    mms::RouteTable t;
    for (const auto& [method, pattern] :
         std::vector<std::pair<const char*, const char*>>{{"GET", "/"},
                                                          {"GET", "/healthz"},
                                                          {"GET", "/openapi.json"},
                                                          {"GET", "/metrics"},
                                                          {"POST", "/v1/search/text"},
                                                          {"POST", "/v1/search/image"},
                                                          {"POST", "/v1/search/vector"},
                                                          {"POST", "/v1/search"},
                                                          {"POST", "/v1/embed/text"},
                                                          {"POST", "/v1/embed/image"},
                                                          {"POST", "/v1/admin/reload"},
                                                          {"GET", "/v1/items/{id}"},
                                                          {"GET", "/v1/items/{id}/image"}}) {
      t.add({method, pattern, 0, true, false, {}, {}});
    }
    return t;
  }();
  return table;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  const auto [method, path] = fuzz::first_line(fuzz::as_text(data, size));
  const RouteMatch m = service_routes().match(method, path);
  if (m.route != nullptr) {
    check(m.status == 0 && m.route->method == method && m.label == m.route->pattern,
          "a matched route with a status, another method or another label");
    const auto braces = std::count(m.route->pattern.begin(), m.route->pattern.end(), '{');
    check(m.params.size() == static_cast<size_t>(braces), "params differ from the pattern's {id}s");
    for (const std::string& p : m.params) {
      check(!p.empty() && p.size() <= 18 && p.find_first_not_of("0123456789") == std::string::npos,
            "an {id} that is not 1-18 digits");
    }
  } else {
    check(m.status == 404 || m.status == 405, "no route, yet neither 404 nor 405");
    check((m.status == 405) == !m.allow.empty(), "Allow given without 405, or 405 without Allow");
    check(m.status == 405 || m.label == "unmatched", "a 404 with a route's label");
  }
  const std::string label = method_label(method);
  check(label == "other" || label == method, "method_label minted a label");
  return 0;
}
