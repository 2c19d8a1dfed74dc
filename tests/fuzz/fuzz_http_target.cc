// Fuzzes what the service reads from a request line and its Host header
// (service/http_request.h): split_target with parse_query_string, the search options of the
// query string (search_request from parameters, as POST /v1/search/image reads them),
// int_param (GET /v1/items/{id}/image?size=N), and host_allowed on the same bytes. Findings:
// a crash, a sanitizer report, a non-Error exception (std::stoll's, std::stof's), a k
// outside 1..max_k, or host_allowed refusing a host when no list is given.
#include <string>

#include "service/http_request.h"
#include "service/http_server.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  const std::string_view input = fuzz::as_text(data, size);
  const int32_t max_k = ServeLimits{}.max_k;
  HttpRequest req;
  req.target = std::string(input);
  fuzz::parses([&] {
    split_target(req.target, req.path, req.params);
    check(req.path == input.substr(0, input.find('?')), "the path is not the target before '?'");
    fuzz::parses([&] {
      const SearchRequest r = search_request(req.params, max_k);
      check(r.k >= 1 && r.k <= max_k, "k outside 1..max_k");
    });
    fuzz::parses([&] {
      const int64_t n = int_param(req, "size", 256);
      check(n >= 0 && n <= 999'999'999, "int_param outside 0..999999999");
    });
  });
  check(host_allowed(input, {}), "an empty allow list refused a host");
  host_allowed(input, {"localhost", "127.0.0.1", "::1", "search.example.com"});
  return 0;
}
