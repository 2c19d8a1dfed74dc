// The mmsearch service on the HTTP core: its route table and handlers, admission (Host, the
// API key, CORS, each route's body limit), the access log and metrics, and run_serve.
#include "service/http_server.h"

#include <malloc.h>
#include <sys/resource.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "common/base64.h"
#include "common/error.h"
#include "encoders/embedder.h"
#include "index/collection.h"
#include "index/query.h"
#include "index/search.h"
#include "service/http_routes.h"
#include "service/metrics.h"
#include "service/search_json.h"
#include "service/web_assets.h"

namespace mms {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Constant-time comparison, so the key cannot be guessed byte by byte from response times.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % (b.empty() ? 1 : b.size())];
  return diff == 0 && !b.empty();
}

// At most `n` holders at once; the others wait (uploads and thumbnails decoding images).
class Budget {
 public:
  explicit Budget(int32_t n) : free_(n) {}
  class Slot {
   public:
    explicit Slot(Budget& b) : b_(b) {
      std::unique_lock<std::mutex> lock(b_.mutex_);
      b_.cond_.wait(lock, [&] { return b_.free_ > 0; });
      --b_.free_;
    }
    ~Slot() {
      {
        std::lock_guard<std::mutex> lock(b_.mutex_);
        ++b_.free_;
      }
      b_.cond_.notify_one();
    }
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    Budget& b_;
  };

 private:
  std::mutex mutex_;
  std::condition_variable cond_;
  int32_t free_;
};

// The most recently served thumbnails, up to a byte budget. An entry remembers the file's
// size and mtime from the catalog, so a re-indexed (changed) file is never served stale.
class ThumbnailCache {
 public:
  explicit ThumbnailCache(int64_t max_bytes) : max_bytes_(max_bytes) {}

  std::optional<std::string> get(const ItemRecord& item, int64_t side) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(key(item.id, side));
    if (it == index_.end()) return std::nullopt;
    if (it->second->size != item.size || it->second->mtime_ns != item.mtime_ns) {
      bytes_ -= static_cast<int64_t>(it->second->jpeg.size());
      lru_.erase(it->second);
      index_.erase(it);
      return std::nullopt;
    }
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->jpeg;
  }

  void put(const ItemRecord& item, int64_t side, std::string jpeg) {
    if (static_cast<int64_t>(jpeg.size()) > max_bytes_ / 4) return;
    std::lock_guard<std::mutex> lock(mutex_);
    const std::string k = key(item.id, side);
    if (index_.count(k)) return;
    bytes_ += static_cast<int64_t>(jpeg.size());
    lru_.push_front({k, item.size, item.mtime_ns, std::move(jpeg)});
    index_[k] = lru_.begin();
    while (bytes_ > max_bytes_ && !lru_.empty()) {
      bytes_ -= static_cast<int64_t>(lru_.back().jpeg.size());
      index_.erase(lru_.back().key);
      lru_.pop_back();
    }
  }

 private:
  struct Entry {
    std::string key;
    int64_t size, mtime_ns;
    std::string jpeg;
  };
  static std::string key(int64_t id, int64_t side) {
    return std::to_string(id) + "/" + std::to_string(side);
  }
  const int64_t max_bytes_;
  std::mutex mutex_;
  std::list<Entry> lru_;
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  int64_t bytes_ = 0;
};

Collection::Target target_of(const SearchRequest& request) {
  return request.target == SearchTarget::kImages ? Collection::Target::kImages
                                                 : Collection::Target::kTexts;
}

json item_json(const ItemRecord& item) {
  json j = {{"id", item.id},
            {"path", item.path},
            {"size", item.size},
            {"mtime_ns", item.mtime_ns},
            {"width", item.width},
            {"height", item.height},
            {"status", item_status_name(item.status)},
            {"image_url", "/v1/items/" + std::to_string(item.id) + "/image"}};
  if (item.caption) j["caption"] = *item.caption;
  if (!item.error.empty()) j["error"] = item.error;
  return j;
}

// The names a Host header may carry for a server bound to `host`: the loopback names for a
// loopback address, the address itself otherwise, none (any Host) for a wildcard address;
// plus what the operator allowed.
std::vector<std::string> allowed_hosts(const std::string& host,
                                       const std::vector<std::string>& extra) {
  std::vector<std::string> names;
  if (host == "127.0.0.1" || host == "::1" || host == "localhost" || host.rfind("127.", 0) == 0) {
    names = {"localhost", "127.0.0.1", "::1", host};
  } else if (host != "0.0.0.0" && host != "::") {
    names = {host};
  } else if (extra.empty()) {
    return {};
  }
  names.insert(names.end(), extra.begin(), extra.end());
  return names;
}

class HttpService {
 public:
  HttpService(const ServeOptions& options, const Embedder& embedder, Collection& collection)
      : options_(options),
        limits_(options.limits),
        embedder_(embedder),
        collection_(collection),
        batcher_(embedder, collection, options.limits.batch,
                 [this](const char* kind, int64_t n) { metrics_.record_batch(kind, n); }),
        decodes_(options.limits.max_concurrent_decodes > 0
                     ? options.limits.max_concurrent_decodes
                     : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()))),
        thumbnails_(options.limits.thumbnail_cache_bytes),
        hosts_(allowed_hosts(options.host, options.allow_hosts)),
        core_(
            core_limits(options.limits), [this](HttpRequest& r) { return admit(r); },
            [this](HttpRequest& r) { return handle(r); },
            [this](const HttpRequest& r, const HttpResponse& res) { log(r, res); }) {
    add_routes();
    openapi_ = openapi_document(routes_.openapi_paths());
  }

  void run();

 private:
  static HttpCoreLimits core_limits(const ServeLimits& limits) {
    HttpCoreLimits core = limits.http;
    core.max_body_bytes = std::max(limits.max_body_bytes, limits.max_json_bytes);
    return core;
  }

  Admission admit(HttpRequest& req);
  HttpResponse handle(HttpRequest& req);
  void log(const HttpRequest& req, const HttpResponse& res);
  void with_cors(HttpResponse& res) const;
  void add_routes();
  void reload(const char* why);

  json body_json(const HttpRequest& req) const {
    return parse_json_object(req.body, {limits_.max_json_depth, limits_.max_body_bytes});
  }
  std::vector<int32_t> tokenize(const std::string& text) const;
  std::vector<float> embed_text(const std::string& text);
  std::vector<float> embed_image_bytes(std::string_view bytes, const std::string& what);
  std::vector<QueryTerm> terms_of(const json& terms);
  TermEmbedder term_embedder();
  // `first`, when given, holds the hits of the first fetch already (first_fetch's count).
  // hub_weight: the query's (query_hub_weight; hubness-aware scoring).
  json search(const std::vector<float>& query, float hub_weight, const SearchRequest& request,
              Clock::time_point t0, std::vector<SearchHit>* first = nullptr);
  float hub_weight_of(const std::vector<QueryTerm>& terms, const SearchRequest& request) const {
    return query_hub_weight(terms, request.target, embedder_.hub_weight());
  }
  HttpResponse thumbnail(HttpRequest& req);
  ItemRecord item_of(const HttpRequest& req) const;

  const ServeOptions options_;
  const ServeLimits limits_;
  const Embedder& embedder_;
  Collection& collection_;
  ServiceMetrics metrics_;
  Batcher batcher_;
  Budget decodes_;
  ThumbnailCache thumbnails_;
  const std::vector<std::string> hosts_;
  RouteTable routes_;
  std::string openapi_;
  HttpCore core_;
};

Admission HttpService::admit(HttpRequest& req) {
  Admission a;
  const RouteMatch m = routes_.match(req.method, req.path);
  req.route_label = m.label;
  auto early = [&](HttpResponse res) {
    with_cors(res);
    a.early = std::move(res);
    return a;
  };
  // Two Host headers are refused (RFC 9112 3.2): a proxy could route by one while the
  // check below reads the other.
  int hosts = 0;
  for (const auto& header : req.headers) hosts += header.first == "host";
  if (hosts > 1) return early(error_response(400, "invalid_argument", "more than one Host header"));
  // A request without Host (HTTP/1.0 tools) is served: browsers always send one, so the
  // check still stops DNS rebinding.
  if (!req.header("host").empty() && !host_allowed(req.header("host"), hosts_)) {
    return early(error_response(421, "misdirected",
                                "this server does not answer for Host '" + req.header("host") +
                                    "' (mmsearch serve --allow-host NAME adds a name)"));
  }
  if (!options_.cors_origin.empty() && req.method == "OPTIONS") {
    HttpResponse res;
    res.status = 204;
    res.content_type = "text/plain";
    res.headers = {{"Access-Control-Allow-Methods", "GET, POST"},
                   {"Access-Control-Allow-Headers", "Authorization, Content-Type"},
                   {"Access-Control-Max-Age", "600"}};
    return early(std::move(res));
  }
  if (m.route == nullptr) {
    if (m.status == 405) {
      HttpResponse res = error_response(
          405, "method_not_allowed",
          method_label(req.method) + " is not allowed on " + m.label + " (use " + m.allow + ")");
      res.headers.emplace_back("Allow", m.allow);
      return early(std::move(res));
    }
    return early(error_response(
        404, "not_found", "no route " + method_label(req.method) + " " + req.path.substr(0, 200)));
  }
  if (m.route->needs_key && !options_.api_key.empty() &&
      !same_secret(req.header("authorization"), "Bearer " + options_.api_key)) {
    HttpResponse res = error_response(401, "unauthorized",
                                      "this route needs the header 'Authorization: Bearer KEY'");
    res.headers.emplace_back("WWW-Authenticate", "Bearer");
    return early(std::move(res));
  }
  req.path_params = m.params;
  req.route = static_cast<int32_t>(m.route - routes_.routes().data());
  a.max_body = m.route->max_body;
  a.inline_handler = m.route->inline_handler;
  return a;
}

HttpResponse HttpService::handle(HttpRequest& req) {
  HttpResponse res;
  try {
    if (req.route < 0) throw Error::internal("a request reached no handler");
    res = routes_.routes()[static_cast<size_t>(req.route)].handler(req);
  } catch (const Error& e) {
    res = error_response(e);
  } catch (const std::exception& e) {
    res = error_response(Error::internal(e.what()));
  }
  with_cors(res);
  return res;
}

void HttpService::with_cors(HttpResponse& res) const {
  if (options_.cors_origin.empty()) return;
  res.headers.emplace_back("Access-Control-Allow-Origin", options_.cors_origin);
  res.headers.emplace_back("Vary", "Origin");
}

// One access-log line and the request metrics. Labels come from the route table only.
void HttpService::log(const HttpRequest& req, const HttpResponse& res) {
  const double ms = ms_since(req.start);
  const std::string method = req.method.empty() ? "-" : method_label(req.method);
  metrics_.record_request(req.route_label, method, res.status, ms / 1000.0);
  const json line = {{"method", method},
                     {"path", req.path.substr(0, 512)},
                     {"status", res.status},
                     {"ms", std::round(ms * 100) / 100}};
  std::fprintf(stderr, "%s\n", dump_json(line).c_str());
}

// Texts are tokenized here, on the caller's thread, and refused when over the model's
// text.max_tokens (never cut).
std::vector<int32_t> HttpService::tokenize(const std::string& text) const {
  if (static_cast<int64_t>(text.size()) > limits_.max_text_bytes) {
    throw Error::too_large("a query text is " + std::to_string(text.size()) +
                           " bytes; the limit is " + std::to_string(limits_.max_text_bytes));
  }
  std::vector<int32_t> ids = embedder_.tokenizer().encode(text);
  const int32_t max_tokens = embedder_.config().text.max_tokens;
  if (static_cast<int64_t>(ids.size()) > max_tokens) {
    throw Error::too_large("a text is " + std::to_string(ids.size()) +
                           " tokens; the model's limit (text.max_tokens) is " +
                           std::to_string(max_tokens));
  }
  return ids;
}

std::vector<float> HttpService::embed_text(const std::string& text) {
  return batcher_.embed_tokens(tokenize(text)).get();
}

std::vector<float> HttpService::embed_image_bytes(std::string_view bytes, const std::string& what) {
  std::vector<float> pixels;
  {
    Budget::Slot slot(decodes_);
    const DecodedImage image =
        decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), what,
                     limits_.upload_image, embedder_.image_size());
    pixels = preprocess_image(image, embedder_.image_size());
  }
  return batcher_.embed_image(std::move(pixels)).get();
}

// Texts go through the batcher; the service never reads files named in a query.
TermEmbedder HttpService::term_embedder() {
  auto no_files = [](const char* kind, const char* instead) {
    return [kind, instead](const std::string& file) -> std::vector<float> {
      throw Error::invalid_argument(std::string(kind) + "'" + file +
                                    "' names a file, which the service never reads; send " +
                                    instead + " in \"terms\" instead");
    };
  };
  return {[this](const std::string& text) { return embed_text(text); },
          no_files("image:", "{\"image_base64\": ...}"),
          no_files("vector:", "{\"vector\": [...]}")};
}

// The "terms" of POST /v1/search: objects with one of "text", "image_base64", "item" or
// "vector", and an optional "weight". Uploaded images are embedded here, so that
// compose_query only ever sees texts, items and vectors.
std::vector<QueryTerm> HttpService::terms_of(const json& terms) {
  if (!terms.is_array() || terms.empty()) {
    throw Error::invalid_argument("\"terms\" must be a non-empty array of objects");
  }
  check_term_count(terms.size());
  std::vector<QueryTerm> out;
  for (size_t i = 0; i < terms.size(); ++i) {
    const json& t = terms[i];
    const std::string what = "terms[" + std::to_string(i) + "]";
    if (!t.is_object()) throw Error::invalid_argument(what + " must be an object");
    QueryTerm term;
    if (t.contains("weight")) {
      if (!t["weight"].is_number())
        throw Error::invalid_argument(what + ".weight must be a number");
      term.weight = t["weight"].get<float>();
    }
    int kinds = 0;
    for (const char* key : {"text", "image_base64", "item", "vector"}) kinds += t.contains(key);
    if (kinds != 1) {
      throw Error::invalid_argument(what +
                                    " needs exactly one of \"text\", \"image_base64\", "
                                    "\"item\" or \"vector\"");
    }
    if (t.contains("text")) {
      term.text = string_field(t, "text", limits_.max_text_bytes);
    } else if (t.contains("item")) {
      if (!t["item"].is_number_unsigned()) {
        throw Error::invalid_argument(what + ".item must be an item id (a non-negative integer)");
      }
      term.kind = QueryTerm::Kind::kItem;
      term.item = static_cast<int64_t>(std::min<uint64_t>(t["item"].get<uint64_t>(), INT64_MAX));
    } else if (t.contains("vector")) {
      term.kind = QueryTerm::Kind::kVector;
      if (!t["vector"].is_array() ||
          t["vector"].size() > static_cast<size_t>(Collection::kMaxDim)) {
        throw Error::invalid_argument(what + ".vector must be an array of numbers");
      }
      for (const json& x : t["vector"]) {
        if (!x.is_number()) throw Error::invalid_argument(what + ".vector must hold only numbers");
        term.vector.push_back(x.get<float>());
      }
    } else {
      const std::string field = string_field(t, "image_base64", limits_.max_body_bytes);
      std::string_view data = field;
      // A data: URL as browsers make them ("data:image/png;base64,....") is fine too.
      if (data.rfind("data:", 0) == 0)
        data.remove_prefix(std::min(data.size(), data.find(',') + 1));
      term.kind = QueryTerm::Kind::kVector;
      term.from_image = true;
      term.vector =
          embed_image_bytes(base64_decode(data, what + ".image_base64"), what + ".image_base64");
    }
    out.push_back(std::move(term));
  }
  return out;
}

json HttpService::search(const std::vector<float>& query, float hub_weight,
                         const SearchRequest& request, Clock::time_point t0,
                         std::vector<SearchHit>* first) {
  const std::vector<SearchResult> results =
      search_filtered(collection_, request.target, request.k, request.filters, [&](int32_t fetch) {
        if (first != nullptr && fetch == first_fetch(request.k, request.filters)) {
          std::vector<SearchHit> hits = std::move(*first);
          first = nullptr;
          return hits;
        }
        return batcher_.search(target_of(request), query, fetch, hub_weight).get();
      });
  return search_results_json(results, request.target, ms_since(t0));
}

ItemRecord HttpService::item_of(const HttpRequest& req) const {
  const std::string& id_text = req.path_params.at(0);
  std::optional<ItemRecord> item = collection_.item(std::stoll(id_text));
  if (!item) throw Error::not_found("item " + id_text + " does not exist");
  return *item;
}

// Only a catalog item's own file is ever read here, found by its id.
HttpResponse HttpService::thumbnail(HttpRequest& req) {
  const int64_t size = int_param(req, "size", 256);
  if (size < 16 || size > limits_.max_thumbnail_side) {
    throw Error::invalid_argument("size must be in 16.." +
                                  std::to_string(limits_.max_thumbnail_side));
  }
  const ItemRecord item = item_of(req);
  if (item.status == ItemStatus::kFailed) {
    throw Error::corrupt("item " + std::to_string(item.id) + " could not be read when indexed");
  }
  HttpResponse res;
  res.content_type = "image/jpeg";
  res.headers.emplace_back("Cache-Control", "private, max-age=300");
  if (std::optional<std::string> cached = thumbnails_.get(item, size)) {
    res.body = std::move(*cached);
    return res;
  }
  std::vector<uint8_t> jpeg;
  {
    Budget::Slot slot(decodes_);
    DecodedImage image;
    try {
      image = load_image_file(item.path, ImageLimits{}, static_cast<int32_t>(size));
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kNotFound) {
        throw Error::not_found("the file of item " + std::to_string(item.id) + " is gone");
      }
      throw;
    }
    jpeg = encode_jpeg_thumbnail(image, static_cast<int32_t>(size), 85);
  }
  res.body.assign(jpeg.begin(), jpeg.end());
  thumbnails_.put(item, size, res.body);
  return res;
}

void HttpService::add_routes() {
  // method, pattern, body limit, needs the API key, runs inline, handler; the OpenAPI entry
  // comes from web_assets.cc by method and pattern (a route without one fails at start).
  auto route = [this](const char* method, const char* pattern, int64_t max_body, bool needs_key,
                      bool inline_handler, std::function<HttpResponse(HttpRequest&)> handler) {
    routes_.add({method, pattern, max_body, needs_key, inline_handler, std::move(handler),
                 openapi_operation(method, pattern)});
  };
  const int64_t json_body = limits_.max_json_bytes;
  const int64_t upload_body = limits_.max_body_bytes;

  route("GET", "/", 0, false, true, [](HttpRequest&) {
    HttpResponse res;
    res.content_type = "text/html; charset=utf-8";
    res.body = web_page_html();
    return res;
  });
  route("GET", "/healthz", 0, false, true, [](HttpRequest&) {
    return json_response({{"status", "ok"}});
  });
  route("GET", "/openapi.json", 0, true, true, [this](HttpRequest&) {
    HttpResponse res;
    res.body = openapi_;
    return res;
  });
  route("GET", "/metrics", 0, true, true, [this](HttpRequest&) {
    HttpResponse res;
    res.content_type = "text/plain; version=0.0.4";
    res.body = metrics_.render(batcher_.queue_depth(),
                               collection_.index_info(Collection::Target::kImages).vectors,
                               collection_.index_info(Collection::Target::kTexts).vectors);
    return res;
  });

  route("POST", "/v1/search/text", json_body, true, false, [this](HttpRequest& req) {
    const json j = body_json(req);
    const std::string query = string_field(j, "query", limits_.max_text_bytes);
    const SearchRequest request = search_request(j, limits_.max_k);
    // The embedding and its first hits come from one pass of the batcher.
    Batcher::EmbeddedSearch first = batcher_
                                        .embed_and_search(tokenize(query), target_of(request),
                                                          first_fetch(request.k, request.filters))
                                        .get();
    const float hub_weight = hub_weight_of({QueryTerm{QueryTerm::Kind::kText}}, request);
    return json_response(search(first.embedding, hub_weight, request, req.start, &first.hits));
  });
  route("POST", "/v1/search/image", upload_body, true, false, [this](HttpRequest& req) {
    const SearchRequest request = search_request(req.params, limits_.max_k);
    const float hub_weight = hub_weight_of({QueryTerm{QueryTerm::Kind::kImage}}, request);
    return json_response(search(embed_image_bytes(uploaded_image(req), "the uploaded image"),
                                hub_weight, request, req.start));
  });
  route("POST", "/v1/search/vector", json_body, true, false, [this](HttpRequest& req) {
    const json j = body_json(req);
    if (!j.contains("vector")) throw Error::invalid_argument("missing field \"vector\"");
    const SearchRequest request = search_request(j, limits_.max_k);
    const std::vector<QueryTerm> terms = terms_of(json::array({{{"vector", j["vector"]}}}));
    return json_response(search(compose_query(collection_, terms, term_embedder()),
                                hub_weight_of(terms, request), request, req.start));
  });
  route("POST", "/v1/search", upload_body, true, false, [this](HttpRequest& req) {
    const json j = body_json(req);
    const SearchRequest request = search_request(j, limits_.max_k);
    if (!j.contains("query") && !j.contains("terms")) {
      throw Error::invalid_argument("give \"query\" (the query syntax) or \"terms\", or both");
    }
    std::vector<QueryTerm> terms;
    if (j.contains("query")) terms = parse_query(string_field(j, "query", limits_.max_text_bytes));
    check_term_count(terms.size() +
                     (j.contains("terms") && j["terms"].is_array() ? j["terms"].size() : 0));
    if (j.contains("terms")) {
      for (QueryTerm& t : terms_of(j["terms"])) terms.push_back(std::move(t));
    }
    return json_response(search(compose_query(collection_, terms, term_embedder()),
                                hub_weight_of(terms, request), request, req.start));
  });
  route("POST", "/v1/embed/text", json_body, true, false, [this](HttpRequest& req) {
    const json j = body_json(req);
    const std::vector<float> v = embed_text(string_field(j, "text", limits_.max_text_bytes));
    return json_response({{"embedding", v}, {"dim", v.size()}});
  });
  route("POST", "/v1/embed/image", upload_body, true, false, [this](HttpRequest& req) {
    const std::vector<float> v = embed_image_bytes(uploaded_image(req), "the uploaded image");
    return json_response({{"embedding", v}, {"dim", v.size()}});
  });
  route("POST", "/v1/admin/reload", json_body, true, false, [this](HttpRequest&) {
    const bool changed = collection_.reload_indexes();
    return json_response({{"reloaded", changed},
                          {"images", collection_.index_info(Collection::Target::kImages).vectors},
                          {"texts", collection_.index_info(Collection::Target::kTexts).vectors}});
  });
  route("GET", "/v1/items/{id}", 0, true, false,
        [this](HttpRequest& req) { return json_response(item_json(item_of(req))); });
  route("GET", "/v1/items/{id}/image", 0, true, false,
        [this](HttpRequest& req) { return thumbnail(req); });
}

void HttpService::reload(const char* why) {
  try {
    const bool changed = collection_.reload_indexes();
    std::fprintf(stderr, "mmsearch serve: %s: %s\n", why,
                 changed ? "loaded new index files" : "the index is unchanged");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mmsearch serve: %s: reload failed, still serving the old index: %s\n",
                 why, e.what());
  }
}

void HttpService::run() {
  std::signal(SIGPIPE, SIG_IGN);
  core_.listen(options_.host, options_.port);
  boost::asio::io_context signal_io;
  boost::asio::signal_set signals(signal_io, SIGINT, SIGTERM, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int signo) {
        if (ec) return;
        if (signo == SIGHUP) {
          reload("SIGHUP");
          signals.async_wait(on_signal);
          return;
        }
        std::fprintf(stderr, "mmsearch serve: stopping; finishing requests in flight\n");
        core_.stop();
      };
  signals.async_wait(on_signal);
  std::thread signal_thread([&] { signal_io.run(); });
  std::fprintf(stderr, "mmsearch serve: listening on http://%s:%d (%lld images, %lld texts)\n",
               options_.host.c_str(), core_.port(),
               static_cast<long long>(collection_.index_info(Collection::Target::kImages).vectors),
               static_cast<long long>(collection_.index_info(Collection::Target::kTexts).vectors));
  core_.run();  // returns after stop(), once the requests in flight are answered
  signal_io.stop();
  signal_thread.join();
  std::fprintf(stderr, "mmsearch serve: stopped\n");
}

// Many idle or slow connections each hold a descriptor: use what the hard limit allows.
void raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

void run_serve(const ServeOptions& options) {
  raise_descriptor_limit();
  // Buffers of 1 MiB and more (request bodies) come from mmap and go back to the system when
  // freed; glibc would otherwise raise this threshold after the first large free and keep
  // later ones in the heap.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  // --threads N: N batch workers of one compute thread each (service/batcher.h).
  ServeOptions effective = options;
  effective.limits.batch.workers = std::max(1, options.threads);
  set_compute_threads(1);
  const std::unique_ptr<Embedder> embedder = Embedder::load(options.model_dir);
  const std::unique_ptr<Collection> collection =
      Collection::open_for_search(options.index_dir, embedder->fingerprint());
  HttpService service(effective, *embedder, *collection);
  service.run();
}

}  // namespace mms
