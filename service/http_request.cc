#include "service/http_request.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <optional>

#include "common/error.h"
#include "common/json_read.h"

namespace mms {

using nlohmann::json;

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] != '%') {
      out += s[i];
    } else {
      const int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
      const int lo = hi < 0 ? -1 : hex_value(s[i + 2]);
      if (lo < 0) throw Error::invalid_argument("malformed %-escape in the query string");
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    }
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The value of parameter `name` in a header value such as
// `form-data; name="image"; filename="a.jpg"` (quotes removed), or nullopt.
std::optional<std::string> header_param(std::string_view value, std::string_view name) {
  size_t at = 0;
  while ((at = value.find(';', at)) != std::string_view::npos) {
    std::string_view rest = trim(value.substr(++at));
    const size_t eq = rest.find('=');
    if (eq == std::string_view::npos) continue;
    if (lower(trim(rest.substr(0, eq))) != name) continue;
    std::string_view v = trim(rest.substr(eq + 1));
    if (!v.empty() && v.front() == '"') {
      const size_t close = v.find('"', 1);
      if (close == std::string_view::npos) return std::nullopt;
      return std::string(v.substr(1, close - 1));
    }
    return std::string(v.substr(0, v.find(';')));
  }
  return std::nullopt;
}

// The first field of that name, or nullptr.
const std::string* find(const Fields& fields, std::string_view name) {
  for (const auto& [key, value] : fields) {
    if (key == name) return &value;
  }
  return nullptr;
}

// Thrown by the JSON parser's callback to stop at the first level too deep.
struct TooDeep {};

}  // namespace

std::string HttpRequest::header(std::string_view lower_name) const {
  const std::string* value = find(headers, lower_name);
  return value ? *value : std::string();
}

const std::string* HttpRequest::param(std::string_view name) const {
  return find(params, name);
}

Fields parse_query_string(std::string_view query) {
  Fields out;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    out.emplace_back(percent_decode(pair.substr(0, eq)),
                     eq == std::string_view::npos ? "" : percent_decode(pair.substr(eq + 1)));
  }
  return out;
}

void split_target(std::string_view target, std::string& path, Fields& params) {
  const size_t q = target.find('?');
  path = std::string(target.substr(0, q));
  params = q == std::string_view::npos ? Fields{} : parse_query_string(target.substr(q + 1));
}

json parse_json_object(std::string_view body, const JsonLimits& limits) {
  if (static_cast<int64_t>(body.size()) > limits.max_bytes) {
    throw Error::too_large("the JSON body is " + std::to_string(body.size()) +
                           " bytes; the limit is " + std::to_string(limits.max_bytes));
  }
  json j;
  try {
    j = json::parse(body.begin(), body.end(), [&](int depth, json::parse_event_t event, json&) {
      if ((event == json::parse_event_t::object_start ||
           event == json::parse_event_t::array_start) &&
          depth >= limits.max_depth) {
        throw TooDeep{};
      }
      return true;
    });
  } catch (const TooDeep&) {
    throw Error::invalid_argument("the JSON body nests deeper than " +
                                  std::to_string(limits.max_depth) + " levels");
  } catch (const json::exception&) {
    throw Error::invalid_argument("the body is not valid JSON");
  }
  if (!j.is_object()) throw Error::invalid_argument("the body must be a JSON object");
  return j;
}

std::string string_field(const json& j, const char* name, int64_t max_bytes) {
  if (!j.contains(name))
    throw Error::invalid_argument(std::string("missing field \"") + name + "\"");
  if (!j[name].is_string())
    throw Error::invalid_argument(std::string("\"") + name + "\" must be a string");
  const std::string& s = j[name].get_ref<const std::string&>();
  if (s.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw Error::invalid_argument(std::string("\"") + name + "\" is empty");
  }
  if (static_cast<int64_t>(s.size()) > max_bytes) {
    throw Error::too_large(std::string("\"") + name + "\" is " + std::to_string(s.size()) +
                           " bytes; the limit is " + std::to_string(max_bytes));
  }
  return s;
}

std::vector<MultipartPart> parse_multipart(std::string_view content_type, std::string_view body,
                                           size_t max_parts) {
  constexpr size_t kMaxPartHeader = 8 << 10;
  const std::optional<std::string> boundary = header_param(content_type, "boundary");
  if (!boundary || boundary->empty() || boundary->size() > 200) {
    throw Error::invalid_argument("multipart/form-data without a usable boundary");
  }
  const std::string delimiter = "--" + *boundary;
  const std::string next = "\r\n" + delimiter;
  auto malformed = [](const std::string& why) {
    return Error::invalid_argument("malformed multipart/form-data body: " + why);
  };
  // The body starts with the first delimiter line (a preamble before it is allowed).
  size_t at = body.rfind(delimiter, 0) == 0 ? 0 : body.find(next);
  if (at == std::string_view::npos) throw malformed("no boundary line");
  at += at == 0 ? delimiter.size() : next.size();
  std::vector<MultipartPart> parts;
  for (;;) {
    if (body.substr(at, 2) == "--") return parts;  // the closing delimiter
    if (body.substr(at, 2) != "\r\n") throw malformed("a boundary line does not end in CRLF");
    at += 2;
    const size_t header_end = body.find("\r\n\r\n", at);
    if (header_end == std::string_view::npos || header_end - at > kMaxPartHeader) {
      throw malformed("a part's header is missing or over 8 KiB");
    }
    if (parts.size() == max_parts) {
      throw Error::invalid_argument("a multipart body has at most " + std::to_string(max_parts) +
                                    " parts");
    }
    MultipartPart part;
    std::string_view headers = body.substr(at, header_end - at);
    while (!headers.empty()) {
      const size_t eol = headers.find("\r\n");
      const std::string_view line = headers.substr(0, eol);
      headers = eol == std::string_view::npos ? std::string_view() : headers.substr(eol + 2);
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos) throw malformed("a part header line has no ':'");
      const std::string name = lower(trim(line.substr(0, colon)));
      const std::string_view value = trim(line.substr(colon + 1));
      if (name == "content-disposition") {
        part.name = header_param(value, "name").value_or("");
        part.filename = header_param(value, "filename").value_or("");
      } else if (name == "content-type") {
        part.content_type = std::string(value);
      }
    }
    const size_t data_start = header_end + 4;
    const size_t data_end = body.find(next, data_start);
    if (data_end == std::string_view::npos) throw malformed("the closing boundary is missing");
    part.data = body.substr(data_start, data_end - data_start);
    parts.push_back(std::move(part));
    at = data_end + next.size();
  }
}

std::string_view uploaded_image(const HttpRequest& request) {
  const std::string content_type = request.header("content-type");
  if (lower(content_type).rfind("multipart/form-data", 0) == 0) {
    for (const MultipartPart& part : parse_multipart(content_type, request.body)) {
      if (part.name == "image") {
        // A browser names the part's type; a part that says it is not an image is refused
        // as a raw body would be (undeclared parts are probed by their bytes).
        if (!part.content_type.empty() && lower(part.content_type).rfind("image/", 0) != 0 &&
            part.content_type != "application/octet-stream") {
          throw Error::unsupported("the multipart field 'image' has Content-Type '" +
                                   part.content_type + "'; send an image");
        }
        return part.data;
      }
    }
    throw Error::invalid_argument("the multipart body has no field named 'image'");
  }
  if (lower(content_type).rfind("image/", 0) != 0) {
    throw Error::unsupported(
        "send the image as multipart field 'image' or as the body with Content-Type image/*; "
        "got Content-Type '" +
        content_type + "'");
  }
  return request.body;
}

namespace {

int32_t check_k(int64_t k, int32_t max_k) {
  if (k < 1 || k > max_k) {
    throw Error::invalid_argument("k = " + std::to_string(k) + " is outside 1.." +
                                  std::to_string(max_k));
  }
  return static_cast<int32_t>(k);
}

int64_t decimal(const std::string& v, const char* name) {
  if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos) {
    throw Error::invalid_argument(std::string("query parameter ") + name +
                                  " must be a positive integer");
  }
  return std::stoll(v);
}

}  // namespace

SearchRequest search_request(const json& j, int32_t max_k) {
  SearchRequest r;
  if (j.contains("k")) {
    if (!j["k"].is_number_integer()) throw Error::invalid_argument("\"k\" must be an integer");
    const int64_t k = j["k"].is_number_unsigned() && j["k"].get<uint64_t>() > INT32_MAX
                          ? INT64_MAX
                          : j["k"].get<int64_t>();
    r.k = check_k(k, max_k);
  }
  if (j.contains("target")) {
    if (!j["target"].is_string()) throw Error::invalid_argument("\"target\" must be a string");
    r.target = parse_search_target(j["target"].get<std::string>());
  }
  auto number = [&](const char* name) -> std::optional<float> {
    if (!j.contains(name) || j[name].is_null()) return std::nullopt;
    if (!j[name].is_number()) {
      throw Error::invalid_argument(std::string("\"") + name + "\" must be a number");
    }
    return json_get<float>(j[name], name);
  };
  r.filters.min_score = number("min_score");
  r.filters.dedup_threshold = number("dedup_threshold").value_or(r.filters.dedup_threshold);
  if (j.contains("path_prefix")) r.filters.path_prefix = string_field(j, "path_prefix", 4096);
  if (j.contains("dedup")) {
    if (!j["dedup"].is_boolean()) throw Error::invalid_argument("\"dedup\" must be true or false");
    r.filters.dedup = j["dedup"].get<bool>();
  }
  check_filters(r.filters, r.target);
  return r;
}

SearchRequest search_request(const Fields& params, int32_t max_k) {
  json j = json::object();
  const std::string* k = find(params, "k");
  j["k"] = k ? decimal(*k, "k") : 10;
  if (const std::string* v = find(params, "target")) j["target"] = *v;
  if (const std::string* v = find(params, "path_prefix")) j["path_prefix"] = *v;
  for (const char* name : {"min_score", "dedup_threshold"}) {
    const std::string* v = find(params, name);
    if (!v) continue;
    size_t used = 0;
    float x = 0;
    try {
      x = std::stof(*v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (v->empty() || used != v->size()) {
      throw Error::invalid_argument(std::string("query parameter ") + name + " must be a number");
    }
    j[name] = x;
  }
  if (const std::string* v = find(params, "dedup")) {
    if (*v != "true" && *v != "false" && *v != "1" && *v != "0") {
      throw Error::invalid_argument("query parameter dedup must be true or false");
    }
    j["dedup"] = *v == "true" || *v == "1";
  }
  return search_request(j, max_k);
}

int64_t int_param(const HttpRequest& request, const char* name, int64_t fallback) {
  const std::string* v = request.param(name);
  return v ? decimal(*v, name) : fallback;
}

bool host_allowed(std::string_view host, const std::vector<std::string>& allowed) {
  if (allowed.empty()) return true;
  host = trim(host);
  std::string_view name = host;
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    if (close == std::string_view::npos) return false;
    name = host.substr(1, close - 1);
    const std::string_view rest = host.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' ||
                          rest.find_first_not_of("0123456789", 1) != std::string_view::npos)) {
      return false;
    }
  } else if (const size_t colon = host.find(':'); colon != std::string_view::npos) {
    name = host.substr(0, colon);
    if (host.find_first_not_of("0123456789", colon + 1) != std::string_view::npos) return false;
  }
  if (name.empty()) return false;
  const std::string wanted = lower(name);
  return std::any_of(allowed.begin(), allowed.end(),
                     [&](const std::string& a) { return lower(a) == wanted; });
}

void check_term_count(size_t terms) {
  if (terms > kMaxQueryTerms) {
    throw Error::invalid_argument("a query has at most " + std::to_string(kMaxQueryTerms) +
                                  " terms; got " + std::to_string(terms));
  }
}

}  // namespace mms
