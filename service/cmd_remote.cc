// `mmsearch search --server URL`: the same search asked of a running `mmsearch serve`
// instead of a model and index loaded here. Every term is sent as a POST /v1/search term:
// image files and vector files named on the command line (or in --query) are read here and
// sent as image_base64 / vector, since the service never reads files by name.
#include <httplib.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/base64.h"
#include "common/error.h"
#include "common/file_io.h"
#include "index/query.h"
#include "service/cmd_index.h"

namespace mms {
namespace {

using nlohmann::json;

json term_json(const QueryTerm& t) {
  json j;
  switch (t.kind) {
    case QueryTerm::Kind::kText: j["text"] = t.text; break;
    case QueryTerm::Kind::kItem: j["item"] = t.item; break;
    case QueryTerm::Kind::kImage:
      j["image_base64"] = base64_encode(read_file_bytes(t.text, "image"));
      break;
    case QueryTerm::Kind::kVector:
      j["vector"] = t.vector.empty() ? read_vector_file(t.text) : t.vector;
      break;
  }
  if (t.weight != 1.f) j["weight"] = t.weight;
  return j;
}

// An HTTP error answer as the Error the local search would have thrown.
Error remote_error(int status, const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  const std::string message = j.is_object() && j.contains("error") && j["error"].contains("message")
                                  ? "the server says: " + j["error"]["message"].get<std::string>()
                                  : "the server answered HTTP " + std::to_string(status);
  switch (status) {
    case 400: return Error::invalid_argument(message);
    case 401:
      return Error::invalid_argument(message + " (set MMSEARCH_API_KEY to the server's key)");
    case 404: return Error::not_found(message);
    case 409: return Error::mismatch(message);
    case 413: return Error::too_large(message);
    case 415: return Error::unsupported(message);
    case 422: return Error::corrupt(message);
    case 429:
    case 503: return Error::unavailable(message);
    default: return Error::io(message);
  }
}

}  // namespace

json remote_search(const SearchCommand& c) {
  const std::vector<QueryTerm> terms = search_terms(c);
  json body = {{"k", c.k}, {"target", c.target}, {"terms", json::array()}};
  for (const QueryTerm& t : terms) body["terms"].push_back(term_json(t));
  if (c.min_score) body["min_score"] = *c.min_score;
  if (!c.path_prefix.empty()) body["path_prefix"] = c.path_prefix;
  if (c.dedup) {
    body["dedup"] = true;
    body["dedup_threshold"] = c.dedup_threshold;
  }

  httplib::Client client(c.server);
  if (!client.is_valid()) {
    throw Error::invalid_argument("--server '" + c.server + "' is not a URL like http://host:8080");
  }
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(60, 0);
  if (const char* key = std::getenv("MMSEARCH_API_KEY"); key != nullptr && *key != '\0') {
    client.set_bearer_token_auth(key);
  }
  const std::string payload = body.dump(-1, ' ', false, json::error_handler_t::replace);
  const httplib::Result res = client.Post("/v1/search", payload, "application/json");
  if (!res) {
    throw Error::unavailable("cannot reach the server at " + c.server + " (" +
                             httplib::to_string(res.error()) + ")");
  }
  if (res->status != 200) throw remote_error(res->status, res->body);
  json answer = json::parse(res->body, nullptr, false);
  if (!answer.is_object() || !answer.contains("results") || !answer["results"].is_array()) {
    throw Error::corrupt("the server at " + c.server +
                         " sent an answer that is not search results");
  }
  return answer;
}

}  // namespace mms
