// What the HTTP service serves from the binary itself: the search page (GET /, plain HTML,
// CSS and JavaScript, no external resources) and the OpenAPI 3 description of the API
// (GET /openapi.json).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace mms {

const std::string& web_page_html();
// The OpenAPI operation object of a route (Error::internal for one that has none), and the
// whole document around the "paths" a route table gives (RouteTable::openapi_paths).
nlohmann::json openapi_operation(const std::string& method, const std::string& pattern);
std::string openapi_document(const nlohmann::json& paths);

}  // namespace mms
