// Fuzzes the JSON bodies of the search and embed routes (service/http_request.h):
// parse_json_object under the service's limits (ServeLimits: depth 32, 1 MiB), then what the
// handlers read from it: string_field "query" and "text", search_request, the query syntax
// of "query" (parse_query), and base64_decode of each "terms"[i].image_base64. Findings: a
// crash (a stack overflow from nesting, say), a sanitizer report, a non-Error exception
// (nlohmann's type_error from a value of the wrong type), or a k outside 1..max_k.
#include <algorithm>
#include <string>

#include "common/base64.h"
#include "index/query.h"
#include "service/http_request.h"
#include "service/http_server.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  const ServeLimits limits;
  nlohmann::json j;
  if (!fuzz::parses([&] {
        j = parse_json_object(fuzz::as_text(data, size),
                              {limits.max_json_depth, limits.max_json_bytes});
      })) {
    return 0;
  }
  check(j.is_object(), "parse_json_object returned something other than an object");
  fuzz::parses([&] {
    const SearchRequest r = search_request(j, limits.max_k);
    check(r.k >= 1 && r.k <= limits.max_k, "k outside 1..max_k");
  });
  fuzz::parses([&] { string_field(j, "text", limits.max_text_bytes); });
  fuzz::parses([&] { parse_query(string_field(j, "query", limits.max_text_bytes)); });
  if (j.contains("terms") && j["terms"].is_array()) {
    for (const nlohmann::json& t : j["terms"]) {
      if (!t.is_object()) continue;
      fuzz::parses([&] {
        const std::string field = string_field(t, "image_base64", limits.max_body_bytes);
        std::string_view b64 = field;
        // As the handler does: a data: URL's header is skipped.
        if (b64.rfind("data:", 0) == 0) b64.remove_prefix(std::min(b64.size(), b64.find(',') + 1));
        base64_decode(b64, "terms[].image_base64");
      });
    }
  }
  return 0;
}
