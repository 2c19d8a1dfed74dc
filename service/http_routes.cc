#include "service/http_routes.h"

#include <algorithm>
#include <cctype>

#include "common/error.h"

namespace mms {

namespace {

// Matches `path` against `pattern` segment by segment, collecting the {name} segments.
bool match_pattern(std::string_view pattern, std::string_view path,
                   std::vector<std::string>& params) {
  params.clear();
  for (;;) {
    const size_t p_end = pattern.find('/', 1);
    const size_t s_end = path.find('/', 1);
    const std::string_view p = pattern.substr(0, p_end);
    const std::string_view s = path.substr(0, s_end);
    if (p.size() > 1 && p[1] == '{') {
      const std::string_view digits = s.substr(std::min<size_t>(1, s.size()));
      if (s.empty() || s[0] != '/' || digits.empty() || digits.size() > 18 ||
          digits.find_first_not_of("0123456789") != std::string_view::npos) {
        return false;
      }
      params.emplace_back(digits);
    } else if (p != s) {
      return false;
    }
    if (p_end == std::string_view::npos || s_end == std::string_view::npos) {
      return p_end == s_end;
    }
    pattern.remove_prefix(p_end);
    path.remove_prefix(s_end);
  }
}

}  // namespace

void RouteTable::add(Route route) {
  if (route.pattern.empty() || route.pattern[0] != '/') {
    throw Error::internal("route pattern '" + route.pattern + "' does not start with '/'");
  }
  for (const Route& r : routes_) {
    if (r.pattern == route.pattern && r.method == route.method) {
      throw Error::internal("route " + route.method + " " + route.pattern + " added twice");
    }
  }
  routes_.push_back(std::move(route));
}

RouteMatch RouteTable::match(std::string_view method, std::string_view path) const {
  RouteMatch m;
  m.label = "unmatched";
  std::vector<std::string> params;
  for (const Route& r : routes_) {
    if (!match_pattern(r.pattern, path, params)) continue;
    m.label = r.pattern;
    if (r.method == method) {
      m.route = &r;
      m.params = std::move(params);
      m.status = 0;
      m.allow.clear();
      return m;
    }
    m.status = 405;
    m.allow += (m.allow.empty() ? "" : ", ") + r.method;
  }
  if (m.status == 0) m.status = 404;
  return m;
}

nlohmann::json RouteTable::openapi_paths() const {
  nlohmann::json paths = nlohmann::json::object();
  for (const Route& r : routes_) {
    std::string method = r.method;
    std::transform(method.begin(), method.end(), method.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    paths[r.pattern][method] = r.openapi;
  }
  return paths;
}

std::string method_label(std::string_view method) {
  static const char* const kMethods[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                         "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  for (const char* m : kMethods) {
    if (method == m) return m;
  }
  return "other";
}

}  // namespace mms
