// The service's route table (service/http_routes.h) without a server: exact paths and {id}
// segments (1-18 digits), 404 against 405 with its Allow list, trailing slashes, the metric
// labels (a route's pattern, or "unmatched"), duplicate routes refused, the OpenAPI "paths"
// built from the table, and method labels that a client cannot extend with made-up methods.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "common/error.h"
#include "error_testing.h"
#include "service/http_routes.h"

namespace mms {
namespace {

using mms::testing::error_of;
using nlohmann::json;

// A route whose handler answers its own pattern, with an OpenAPI operation naming it.
Route route(const std::string& method, const std::string& pattern, int64_t max_body = 0) {
  Route r;
  r.method = method;
  r.pattern = pattern;
  r.max_body = max_body;
  r.handler = [pattern](HttpRequest&) {
    HttpResponse res;
    res.body = pattern;
    return res;
  };
  r.openapi = {{"summary", method + " " + pattern}};
  return r;
}

// Part of the service's own table: a page, exact paths, a path under two methods, and {id}s.
RouteTable table() {
  RouteTable t;
  t.add(route("GET", "/"));
  t.add(route("GET", "/healthz"));
  t.add(route("POST", "/v1/search/text", 1 << 20));
  t.add(route("POST", "/v1/search", 16 << 20));
  t.add(route("GET", "/v1/items/{id}"));
  t.add(route("DELETE", "/v1/items/{id}"));
  t.add(route("GET", "/v1/items/{id}/image"));
  return t;
}

TEST(RouteTable, MatchesExactPaths) {
  const RouteTable t = table();
  for (const auto& [method, path] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "/"},
                                                        {"GET", "/healthz"},
                                                        {"POST", "/v1/search/text"},
                                                        {"POST", "/v1/search"}}) {
    SCOPED_TRACE(method + " " + path);
    const RouteMatch m = t.match(method, path);
    ASSERT_NE(m.route, nullptr);
    EXPECT_EQ(m.route->pattern, path);
    EXPECT_EQ(m.route->method, method);
    EXPECT_EQ(m.status, 0);
    EXPECT_EQ(m.label, path);
    EXPECT_TRUE(m.params.empty());
    EXPECT_TRUE(m.allow.empty());
  }
  // The matched route is the table's, with its body limit and handler.
  const RouteMatch m = t.match("POST", "/v1/search/text");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->max_body, 1 << 20);
  HttpRequest req;
  EXPECT_EQ(m.route->handler(req).body, "/v1/search/text");
  // A prefix or an extension of a route's path is not that route.
  for (const char* path : {"/health", "/healthzz", "/healthz/x", "/v1", "/v1/search/text/x",
                           "/v1/searchtext", "", "healthz", "//healthz", "/HEALTHZ"}) {
    SCOPED_TRACE(path);
    const RouteMatch miss = t.match("GET", path);
    EXPECT_EQ(miss.route, nullptr);
    EXPECT_EQ(miss.status, 404);
    EXPECT_EQ(miss.label, "unmatched");
  }
}

TEST(RouteTable, IdSegmentsMatchOneToEighteenDigits) {
  const RouteTable t = table();
  const std::string eighteen = "123456789012345678";
  for (const auto& [path, pattern, id] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"/v1/items/42", "/v1/items/{id}", "42"},
           {"/v1/items/0", "/v1/items/{id}", "0"},
           {"/v1/items/007", "/v1/items/{id}", "007"},
           {"/v1/items/" + eighteen, "/v1/items/{id}", eighteen},
           {"/v1/items/42/image", "/v1/items/{id}/image", "42"}}) {
    SCOPED_TRACE(path);
    const RouteMatch m = t.match("GET", path);
    ASSERT_NE(m.route, nullptr);
    EXPECT_EQ(m.route->pattern, pattern);
    EXPECT_EQ(m.label, pattern);
    EXPECT_EQ(m.params, std::vector<std::string>{id});
  }
  for (const std::string& path : std::vector<std::string>{
           "/v1/items/", "/v1/items", "/v1/items/abc", "/v1/items/-1", "/v1/items/+1",
           "/v1/items/1e3", "/v1/items/4 2", "/v1/items/0x10", "/v1/items/" + eighteen + "9",
           "/v1/items/42/thumb", "/v1/items//image", "/v1/items/%34%32"}) {
    SCOPED_TRACE(path);
    const RouteMatch m = t.match("GET", path);
    EXPECT_EQ(m.route, nullptr);
    EXPECT_EQ(m.status, 404);
    EXPECT_EQ(m.label, "unmatched");
    EXPECT_TRUE(m.allow.empty());
  }
}

TEST(RouteTable, TrailingSlashesAreOtherPaths) {
  const RouteTable t = table();
  for (const char* path :
       {"/healthz/", "/v1/search/text/", "/v1/items/42/", "/v1/items/42/image/"}) {
    SCOPED_TRACE(path);
    const RouteMatch m = t.match("GET", path);
    EXPECT_EQ(m.route, nullptr);
    EXPECT_EQ(m.status, 404);
    EXPECT_EQ(m.label, "unmatched");
  }
}

TEST(RouteTable, AnotherMethodOnAKnownPathIs405WithAllow) {
  const RouteTable t = table();
  RouteMatch m = t.match("GET", "/v1/search/text");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_EQ(m.status, 405);
  EXPECT_EQ(m.allow, "POST");
  EXPECT_EQ(m.label, "/v1/search/text");  // counted under the route, not as unmatched

  m = t.match("PUT", "/healthz");
  EXPECT_EQ(m.status, 405);
  EXPECT_EQ(m.allow, "GET");

  // A path served under two methods lists both, in the table's order; the {id} still parses.
  m = t.match("POST", "/v1/items/9");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_EQ(m.status, 405);
  EXPECT_EQ(m.allow, "GET, DELETE");
  EXPECT_EQ(m.label, "/v1/items/{id}");
  m = t.match("DELETE", "/v1/items/9");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->method, "DELETE");
  EXPECT_EQ(m.params, std::vector<std::string>{"9"});

  // Methods are case-sensitive (RFC 9110): "get" is not GET.
  m = t.match("get", "/healthz");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_EQ(m.status, 405);
  EXPECT_EQ(m.allow, "GET");
  // So is a made-up method.
  EXPECT_EQ(t.match("FOO\"BAR", "/healthz").status, 405);
}

TEST(RouteTable, AnUnknownPathIs404UnderAnyMethod) {
  const RouteTable t = table();
  for (const char* method : {"GET", "POST", "BREW", ""}) {
    const RouteMatch m = t.match(method, "/no/such/route");
    EXPECT_EQ(m.route, nullptr);
    EXPECT_EQ(m.status, 404);
    EXPECT_TRUE(m.allow.empty());
    EXPECT_EQ(m.label, "unmatched");
  }
  EXPECT_EQ(RouteTable().match("GET", "/").status, 404);  // an empty table
}

TEST(RouteTable, RefusesADuplicateRouteAndAPatternWithoutSlash) {
  RouteTable t = table();
  auto [kind, message] = error_of([&] { t.add(route("GET", "/healthz")); });
  EXPECT_EQ(kind, ErrorKind::kInternal);
  EXPECT_NE(message.find("GET /healthz added twice"), std::string::npos) << message;
  std::tie(kind, message) = error_of([&] { t.add(route("GET", "/v1/items/{id}")); });
  EXPECT_EQ(kind, ErrorKind::kInternal);

  std::tie(kind, message) = error_of([&] { t.add(route("GET", "healthz")); });
  EXPECT_EQ(kind, ErrorKind::kInternal);
  EXPECT_NE(message.find("'healthz'"), std::string::npos) << message;
  EXPECT_EQ(error_of([&] { t.add(route("GET", "")); }).first, ErrorKind::kInternal);

  // The table is unchanged by the refusals; the same path under a new method is a new route.
  EXPECT_EQ(t.routes().size(), 7u);
  t.add(route("POST", "/healthz"));
  EXPECT_EQ(t.routes().size(), 8u);
  EXPECT_EQ(t.match("DELETE", "/healthz").allow, "GET, POST");
}

TEST(RouteTable, OpenapiPathsHasEveryRouteUnderItsLowerCaseMethod) {
  const RouteTable t = table();
  const json paths = t.openapi_paths();
  ASSERT_TRUE(paths.is_object());
  EXPECT_EQ(paths.size(), 6u);  // /v1/items/{id} holds two methods
  for (const Route& r : t.routes()) {
    std::string method = r.method;
    for (char& c : method) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    ASSERT_TRUE(paths.contains(r.pattern)) << r.pattern;
    ASSERT_TRUE(paths[r.pattern].contains(method)) << r.pattern << " " << method;
    EXPECT_EQ(paths[r.pattern][method], r.openapi);
  }
  EXPECT_EQ(paths["/v1/items/{id}"].size(), 2u);
  EXPECT_EQ(paths["/v1/items/{id}"]["delete"]["summary"], "DELETE /v1/items/{id}");
  EXPECT_EQ(RouteTable().openapi_paths(), json::object());
}

TEST(MethodLabel, KeepsHttpMethodsAndMapsTheRestToOther) {
  for (const char* m :
       {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}) {
    EXPECT_EQ(method_label(m), m);
  }
  for (const std::string& m :
       std::vector<std::string>{"FOO\"BAR", "get", "Post", "BREW", "", "GET ", "M-SEARCH",
                                "PROPFIND", std::string(10000, 'X'), std::string("GE\0T", 4)}) {
    EXPECT_EQ(method_label(m), "other") << m.substr(0, 20);
  }
}

}  // namespace
}  // namespace mms
