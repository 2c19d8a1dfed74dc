// What the HTTP service serves from the binary itself: the search page (GET /, plain HTML,
// CSS and JavaScript, no external resources) and the OpenAPI 3 description of the API
// (GET /openapi.json).
#pragma once

#include <string>

namespace mms {

const std::string& web_page_html();
const std::string& openapi_json();

}  // namespace mms
