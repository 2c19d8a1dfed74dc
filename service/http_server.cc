#include "service/http_server.h"

#include <httplib.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <string_view>
#include <thread>

#include "common/base64.h"
#include "common/error.h"
#include "encoders/embedder.h"
#include "index/collection.h"
#include "index/query.h"
#include "index/search.h"
#include "service/metrics.h"
#include "service/search_json.h"
#include "service/web_assets.h"

namespace mms {
namespace {

using Clock = std::chrono::steady_clock;
using httplib::Request;
using httplib::Response;
using nlohmann::json;

// Per connection thread: when the current request started (for the access log and the
// latency histogram), and whether it is being answered on the accepting thread because the
// pool's queue is full.
thread_local Clock::time_point t_request_start = Clock::now();
thread_local bool t_overloaded = false;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// JSON text that never throws on invalid UTF-8 (request paths and file names may hold any
// bytes): bad sequences become U+FFFD.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// The one place error kinds become HTTP statuses.
int http_status_for(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return 400;
    case ErrorKind::kNotFound: return 404;
    case ErrorKind::kMismatch: return 409;
    case ErrorKind::kTooLarge: return 413;
    case ErrorKind::kUnsupported: return 415;
    case ErrorKind::kCorrupt: return 422;
    case ErrorKind::kUnavailable: return 503;
    case ErrorKind::kIo:
    case ErrorKind::kInternal: return 500;
  }
  return 500;
}

void send_error(Response& res, int status, const std::string& code, const std::string& message) {
  res.status = status;
  res.set_content(dump({{"error", {{"code", code}, {"message", message}}}}), "application/json");
  if (status == 503 || status == 429) res.set_header("Retry-After", "1");
}

void send_error(Response& res, const Error& e) {
  const int status = http_status_for(e.kind());
  if (status == 500) {
    // Internals (paths of the index, library messages) go to the log, not to the client.
    std::fprintf(stderr, "mmsearch serve: internal error: %s\n", e.what());
    send_error(res, 500, "internal", "internal error; see the server log");
    return;
  }
  send_error(res, status, error_kind_name(e.kind()), e.what());
}

void send_json(Response& res, const json& body) {
  res.set_content(dump(body), "application/json");
}

// A route of the API: its path pattern, the label metrics use, and the methods it answers.
struct RouteSpec {
  std::regex pattern;
  std::string label;
  std::string allow;
};

const std::vector<RouteSpec>& route_specs() {
  static const std::vector<RouteSpec> specs = {
      {std::regex("/"), "/", "GET"},
      {std::regex("/healthz"), "/healthz", "GET"},
      {std::regex("/metrics"), "/metrics", "GET"},
      {std::regex("/openapi.json"), "/openapi.json", "GET"},
      {std::regex("/v1/search"), "/v1/search", "POST"},
      {std::regex("/v1/search/text"), "/v1/search/text", "POST"},
      {std::regex("/v1/search/vector"), "/v1/search/vector", "POST"},
      {std::regex("/v1/search/image"), "/v1/search/image", "POST"},
      {std::regex("/v1/embed/text"), "/v1/embed/text", "POST"},
      {std::regex("/v1/embed/image"), "/v1/embed/image", "POST"},
      {std::regex("/v1/admin/reload"), "/v1/admin/reload", "POST"},
      {std::regex("/v1/items/[0-9]+"), "/v1/items/{id}", "GET"},
      {std::regex("/v1/items/[0-9]+/image"), "/v1/items/{id}/image", "GET"},
  };
  return specs;
}

const RouteSpec* find_route(const std::string& path) {
  for (const RouteSpec& spec : route_specs()) {
    if (std::regex_match(path, spec.pattern)) return &spec;
  }
  return nullptr;
}

bool has_body(const Request& req) {
  if (req.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos) return true;
  const std::string length = req.get_header_value("Content-Length");
  return !length.empty() && length != "0";
}

// Answers a request no handler took: 405 with Allow for a known path, else 404.
void send_route_error(const Request& req, Response& res) {
  if (const RouteSpec* spec = find_route(req.path)) {
    res.set_header("Allow", spec->allow);
    send_error(res, 405, "method_not_allowed",
               req.method + " is not allowed on " + spec->label + " (use " + spec->allow + ")");
    return;
  }
  send_error(res, 404, "not_found", "no route " + req.method + " " + req.path);
}

// Constant-time comparison, so the key cannot be guessed byte by byte from response times.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % (b.empty() ? 1 : b.size())];
  return diff == 0 && !b.empty();
}

// The body of a POST, read through the content reader so that chunked and compressed bodies
// are bounded too (by what is received after decoding), not only a declared Content-Length.
struct Body {
  bool multipart = false;
  std::string data;
  std::string content_type;
  std::vector<httplib::MultipartFormData> parts;
};

Body read_body(const Request& req, const httplib::ContentReader& reader, int64_t limit) {
  Body body;
  body.content_type = req.get_header_value("Content-Type");
  int64_t total = 0;
  bool too_large = false;
  auto append = [&](std::string& to, const char* data, size_t n) {
    total += static_cast<int64_t>(n);
    if (total > limit) {
      too_large = true;
      return false;
    }
    to.append(data, n);
    return true;
  };
  constexpr size_t kMaxParts = 16;
  bool ok;
  if (req.is_multipart_form_data()) {
    body.multipart = true;
    ok = reader(
        [&](const httplib::MultipartFormData& part) {
          body.parts.push_back(part);
          return body.parts.size() <= kMaxParts;
        },
        [&](const char* data, size_t n) {
          return !body.parts.empty() && append(body.parts.back().content, data, n);
        });
  } else {
    ok = reader([&](const char* data, size_t n) { return append(body.data, data, n); });
  }
  // httplib refuses a declared Content-Length over its payload limit itself (reading and
  // dropping the body); the reader then just fails.
  const std::string declared = req.get_header_value("Content-Length");
  if (!ok && !declared.empty() && declared.size() < 20 &&
      declared.find_first_not_of("0123456789") == std::string::npos &&
      std::stoull(declared) > static_cast<uint64_t>(limit)) {
    too_large = true;
  }
  if (too_large) {
    throw Error::too_large("the request body is over the limit of " + std::to_string(limit) +
                           " bytes");
  }
  if (!ok) {
    throw Error::invalid_argument(body.multipart ? "malformed multipart/form-data body"
                                                 : "the request body could not be read");
  }
  return body;
}

json parse_json_object(const Body& body) {
  json j;
  try {
    j = json::parse(body.data);
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
  std::string s = j[name].get<std::string>();
  if (s.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw Error::invalid_argument(std::string("\"") + name + "\" is empty");
  }
  if (static_cast<int64_t>(s.size()) > max_bytes) {
    throw Error::too_large(std::string("\"") + name + "\" is " + std::to_string(s.size()) +
                           " bytes; the limit is " + std::to_string(max_bytes));
  }
  return s;
}

int32_t check_k(int64_t k, int32_t max_k) {
  if (k < 1 || k > max_k) {
    throw Error::invalid_argument("k = " + std::to_string(k) + " is outside 1.." +
                                  std::to_string(max_k));
  }
  return static_cast<int32_t>(k);
}

// A decimal query parameter, `fallback` when absent.
int64_t int_param(const Request& req, const char* name, int64_t fallback) {
  if (!req.has_param(name)) return fallback;
  const std::string v = req.get_param_value(name);
  if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos) {
    throw Error::invalid_argument(std::string("query parameter ") + name +
                                  " must be a positive integer");
  }
  return std::stoll(v);
}

// What every search route takes besides its query: k, target and the filters.
struct SearchRequest {
  int32_t k = 10;
  SearchTarget target = SearchTarget::kImages;
  QueryFilters filters;
};

// A JSON body's "k", "target", "min_score", "path_prefix", "dedup" and "dedup_threshold".
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
    return j[name].get<float>();
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

// The same options as query parameters (POST /v1/search/image, whose body is the image).
SearchRequest search_request(const Request& req, int32_t max_k) {
  json j = json::object();
  j["k"] = int_param(req, "k", 10);
  if (req.has_param("target")) j["target"] = req.get_param_value("target");
  if (req.has_param("path_prefix")) j["path_prefix"] = req.get_param_value("path_prefix");
  for (const char* name : {"min_score", "dedup_threshold"}) {
    if (!req.has_param(name)) continue;
    const std::string v = req.get_param_value(name);
    size_t used = 0;
    float x = 0;
    try {
      x = std::stof(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (v.empty() || used != v.size()) {
      throw Error::invalid_argument(std::string("query parameter ") + name + " must be a number");
    }
    j[name] = x;
  }
  if (req.has_param("dedup")) {
    const std::string v = req.get_param_value("dedup");
    if (v != "true" && v != "false" && v != "1" && v != "0") {
      throw Error::invalid_argument("query parameter dedup must be true or false");
    }
    j["dedup"] = v == "true" || v == "1";
  }
  return search_request(j, max_k);
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

// httplib's task queue, bounded: `threads` workers and at most `max_waiting` accepted
// connections waiting for one. A connection beyond that is served on the accepting thread
// with t_overloaded set, so it gets a quick 503 + Retry-After instead of an unbounded wait.
// shutdown() lets the workers finish every queued connection, then joins them.
class BoundedPool : public httplib::TaskQueue {
 public:
  BoundedPool(int32_t threads, int32_t max_waiting) : max_waiting_(max_waiting) {
    for (int32_t i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (static_cast<int32_t>(jobs_.size()) < max_waiting_) {
        jobs_.push_back(std::move(fn));
        cond_.notify_one();
        return;
      }
    }
    t_overloaded = true;
    fn();
    t_overloaded = false;
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      shutdown_ = true;
    }
    cond_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cond_.wait(lock, [this] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      fn();
    }
  }

  const int32_t max_waiting_;
  std::mutex mutex_;
  std::condition_variable cond_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::vector<std::thread> workers_;
};

class HttpService {
 public:
  HttpService(const ServeOptions& options, const Embedder& embedder, Collection& collection)
      : options_(options),
        limits_(options.limits),
        embedder_(embedder),
        collection_(collection),
        batcher_(embedder, collection, options.limits.batch,
                 [this](const char* kind, int64_t n) { metrics_.record_batch(kind, n); }) {
    configure();
    add_routes();
  }

  void run();

 private:
  void configure();
  void add_routes();
  void reload(const char* why);

  using Handler = std::function<void(const Request&, Response&)>;
  using BodyHandler = std::function<void(const Request&, Response&, const Body&)>;

  // Runs a handler with every failure turned into a JSON error: mms::Error by its kind,
  // anything else as a 500 that names nothing internal.
  static void guarded(Response& res, const std::function<void()>& fn) {
    try {
      fn();
    } catch (const Error& e) {
      send_error(res, e);
    } catch (const std::exception& e) {
      send_error(res, Error::internal(e.what()));
    }
  }
  void get(const std::string& pattern, Handler fn) {
    server_.Get(pattern,
                [fn](const Request& req, Response& res) { guarded(res, [&] { fn(req, res); }); });
  }
  void post(const std::string& pattern, BodyHandler fn) {
    server_.Post(pattern, [this, fn](const Request& req, Response& res,
                                     const httplib::ContentReader& reader) {
      guarded(res, [&] { fn(req, res, read_body(req, reader, limits_.max_body_bytes)); });
    });
  }

  std::vector<float> embed_upload(const Body& body);
  std::vector<float> embed_image_bytes(std::string_view bytes, const std::string& what);
  std::vector<QueryTerm> terms_of(const json& terms);
  TermEmbedder term_embedder();
  json search(const std::vector<float>& query, const SearchRequest& request, Clock::time_point t0);

  const ServeOptions options_;
  const ServeLimits limits_;
  const Embedder& embedder_;
  Collection& collection_;
  ServiceMetrics metrics_;
  Batcher batcher_;
  httplib::Server server_;
  socket_t listen_socket_ = INVALID_SOCKET;  // as httplib created it, for the backlog
};

void HttpService::configure() {
  const int32_t threads = limits_.http_threads, waiting = limits_.max_waiting_connections;
  server_.new_task_queue = [threads, waiting] { return new BoundedPool(threads, waiting); };
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which would let a second server
  // bind a port that is in use and silently take half of its connections.
  server_.set_socket_options([this](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_socket_ = sock;
  });
  server_.set_payload_max_length(static_cast<size_t>(limits_.max_body_bytes));
  server_.set_read_timeout(limits_.read_timeout_s, 0);
  server_.set_write_timeout(limits_.write_timeout_s, 0);
  // Headers and body go out in two writes; with Nagle on, the second waits for the client's
  // delayed ACK (about 40 ms a request, measured by scripts/bench_serve.sh).
  server_.set_tcp_nodelay(true);
  server_.set_keep_alive_timeout(limits_.keep_alive_timeout_s);
  server_.set_keep_alive_max_count(static_cast<size_t>(limits_.keep_alive_max_count));

  server_.set_pre_routing_handler([this](const Request& req, Response& res) {
    t_request_start = Clock::now();
    if (t_overloaded) {
      send_error(res, 503, "unavailable", "the server is busy; retry shortly");
      return httplib::Server::HandlerResponse::Handled;
    }
    // Only the POST routes read bodies (bounded, see read_body); any other request carrying
    // one is answered before httplib would buffer it whole.
    const RouteSpec* spec = find_route(req.path);
    if (has_body(req) && !(req.method == "POST" && spec && spec->allow == "POST")) {
      send_route_error(req, res);
      return httplib::Server::HandlerResponse::Handled;
    }
    const bool open_route = req.path == "/" || req.path == "/healthz";
    if (!options_.api_key.empty() && !open_route &&
        !same_secret(req.get_header_value("Authorization"), "Bearer " + options_.api_key)) {
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, 401, "unauthorized",
                 "this route needs the header 'Authorization: Bearer KEY'");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  // Statuses httplib sets itself (no route, malformed request, body over the limit) get the
  // same JSON error shape as ours.
  server_.set_error_handler(
      httplib::Server::HandlerWithResponse([this](const Request& req, Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        if (res.status == 404) {
          send_route_error(req, res);
        } else if (res.status == 413) {
          send_error(res, 413, "too_large",
                     "the request body is over the limit of " +
                         std::to_string(limits_.max_body_bytes) + " bytes");
        } else if (res.status == 400) {
          send_error(res, 400, "invalid_argument", "malformed HTTP request");
        } else {
          send_error(res, res.status, "error",
                     "the request failed with HTTP status " + std::to_string(res.status));
        }
        return httplib::Server::HandlerResponse::Handled;
      }));

  server_.set_logger([this](const Request& req, const Response& res) {
    const double ms = ms_since(t_request_start);
    const RouteSpec* spec = find_route(req.path);
    metrics_.record_request(spec ? spec->label : "unmatched", req.method.empty() ? "-" : req.method,
                            res.status, ms / 1000.0);
    const json line = {{"method", req.method},
                       {"path", req.path},
                       {"status", res.status},
                       {"ms", std::round(ms * 100) / 100}};
    std::fprintf(stderr, "%s\n", dump(line).c_str());
  });
}

std::vector<float> HttpService::embed_upload(const Body& body) {
  std::string_view bytes;
  if (body.multipart) {
    for (const auto& part : body.parts) {
      if (part.name == "image") bytes = part.content;
    }
    if (bytes.data() == nullptr) {
      throw Error::invalid_argument("the multipart body has no field named 'image'");
    }
  } else {
    if (body.content_type.rfind("image/", 0) != 0) {
      throw Error::unsupported(
          "send the image as multipart field 'image' or as the body with "
          "Content-Type image/*; got Content-Type '" +
          body.content_type + "'");
    }
    bytes = body.data;
  }
  return embed_image_bytes(bytes, "the uploaded image");
}

std::vector<float> HttpService::embed_image_bytes(std::string_view bytes, const std::string& what) {
  const DecodedImage image =
      decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), what,
                   limits_.image, embedder_.image_size());
  return batcher_.embed_image(preprocess_image(image, embedder_.image_size())).get();
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
  return {
      [this](const std::string& text) {
        if (static_cast<int64_t>(text.size()) > limits_.max_text_bytes) {
          throw Error::too_large("a query text is " + std::to_string(text.size()) +
                                 " bytes; the limit is " + std::to_string(limits_.max_text_bytes));
        }
        return batcher_.embed_text(text).get();
      },
      no_files("image:", "{\"image_base64\": ...}"), no_files("vector:", "{\"vector\": [...]}")};
}

// The "terms" of POST /v1/search: objects with one of "text", "image_base64", "item" or
// "vector", and an optional "weight". Uploaded images are embedded here, so that
// compose_query only ever sees texts, items and vectors.
std::vector<QueryTerm> HttpService::terms_of(const json& terms) {
  constexpr size_t kMaxTerms = 16;
  if (!terms.is_array() || terms.empty()) {
    throw Error::invalid_argument("\"terms\" must be a non-empty array of objects");
  }
  if (terms.size() > kMaxTerms) {
    throw Error::invalid_argument("a query has at most " + std::to_string(kMaxTerms) +
                                  " terms; got " + std::to_string(terms.size()));
  }
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
      term.vector =
          embed_image_bytes(base64_decode(data, what + ".image_base64"), what + ".image_base64");
    }
    out.push_back(std::move(term));
  }
  return out;
}

json HttpService::search(const std::vector<float>& query, const SearchRequest& request,
                         Clock::time_point t0) {
  const auto where = request.target == SearchTarget::kImages ? Collection::Target::kImages
                                                             : Collection::Target::kTexts;
  const std::vector<SearchResult> results =
      search_filtered(collection_, request.target, request.k, request.filters,
                      [&](int32_t fetch) { return batcher_.search(where, query, fetch).get(); });
  return search_results_json(results, request.target, ms_since(t0));
}

void HttpService::add_routes() {
  get("/", [](const Request&, Response& res) {
    res.set_content(web_page_html(), "text/html; charset=utf-8");
  });
  get("/healthz", [](const Request&, Response& res) { send_json(res, {{"status", "ok"}}); });
  get("/openapi.json",
      [](const Request&, Response& res) { res.set_content(openapi_json(), "application/json"); });
  get("/metrics", [this](const Request&, Response& res) {
    res.set_content(metrics_.render(batcher_.queue_depth(),
                                    collection_.index_info(Collection::Target::kImages).vectors,
                                    collection_.index_info(Collection::Target::kTexts).vectors),
                    "text/plain; version=0.0.4");
  });

  post("/v1/search/text", [this](const Request&, Response& res, const Body& body) {
    const auto t0 = t_request_start;
    const json j = parse_json_object(body);
    const std::string query = string_field(j, "query", limits_.max_text_bytes);
    const SearchRequest request = search_request(j, limits_.max_k);
    send_json(res, search(batcher_.embed_text(query).get(), request, t0));
  });

  post("/v1/search/image", [this](const Request& req, Response& res, const Body& body) {
    const auto t0 = t_request_start;
    const SearchRequest request = search_request(req, limits_.max_k);
    send_json(res, search(embed_upload(body), request, t0));
  });

  post("/v1/search/vector", [this](const Request&, Response& res, const Body& body) {
    const auto t0 = t_request_start;
    const json j = parse_json_object(body);
    if (!j.contains("vector")) throw Error::invalid_argument("missing field \"vector\"");
    const SearchRequest request = search_request(j, limits_.max_k);
    const std::vector<QueryTerm> terms = terms_of(json::array({{{"vector", j["vector"]}}}));
    send_json(res, search(compose_query(collection_, terms, term_embedder()), request, t0));
  });

  post("/v1/search", [this](const Request&, Response& res, const Body& body) {
    const auto t0 = t_request_start;
    const json j = parse_json_object(body);
    const SearchRequest request = search_request(j, limits_.max_k);
    if (!j.contains("query") && !j.contains("terms")) {
      throw Error::invalid_argument("give \"query\" (the query syntax) or \"terms\", or both");
    }
    std::vector<QueryTerm> terms;
    if (j.contains("query")) terms = parse_query(string_field(j, "query", limits_.max_text_bytes));
    if (j.contains("terms")) {
      for (QueryTerm& t : terms_of(j["terms"])) terms.push_back(std::move(t));
    }
    send_json(res, search(compose_query(collection_, terms, term_embedder()), request, t0));
  });

  post("/v1/embed/text", [this](const Request&, Response& res, const Body& body) {
    const json j = parse_json_object(body);
    const std::vector<float> v =
        batcher_.embed_text(string_field(j, "text", limits_.max_text_bytes)).get();
    send_json(res, {{"embedding", v}, {"dim", v.size()}});
  });

  post("/v1/embed/image", [this](const Request&, Response& res, const Body& body) {
    const std::vector<float> v = embed_upload(body);
    send_json(res, {{"embedding", v}, {"dim", v.size()}});
  });

  post("/v1/admin/reload", [this](const Request&, Response& res, const Body&) {
    const bool changed = collection_.reload_indexes();
    send_json(res, {{"reloaded", changed},
                    {"images", collection_.index_info(Collection::Target::kImages).vectors},
                    {"texts", collection_.index_info(Collection::Target::kTexts).vectors}});
  });

  auto item_of = [this](const Request& req) {
    const std::string id_text = req.matches[1];
    const int64_t id = id_text.size() > 18 ? -1 : std::stoll(id_text);
    std::optional<ItemRecord> item = id < 0 ? std::nullopt : collection_.item(id);
    if (!item) throw Error::not_found("item " + id_text + " does not exist");
    return *item;
  };
  get(R"(/v1/items/(\d+))",
      [item_of](const Request& req, Response& res) { send_json(res, item_json(item_of(req))); });
  // Only a catalog item's own file is ever read here, found by its id.
  get(R"(/v1/items/(\d+)/image)", [this, item_of](const Request& req, Response& res) {
    const int64_t size = int_param(req, "size", 256);
    if (size < 16 || size > limits_.max_thumbnail_side) {
      throw Error::invalid_argument("size must be in 16.." +
                                    std::to_string(limits_.max_thumbnail_side));
    }
    const ItemRecord item = item_of(req);
    if (item.status == ItemStatus::kFailed) {
      throw Error::corrupt("item " + std::to_string(item.id) + " could not be read when indexed");
    }
    DecodedImage image;
    try {
      image = load_image_file(item.path, limits_.image, static_cast<int32_t>(size));
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kNotFound) {
        throw Error::not_found("the file of item " + std::to_string(item.id) + " is gone");
      }
      throw;
    }
    const std::vector<uint8_t> jpeg = encode_jpeg_thumbnail(image, static_cast<int32_t>(size), 85);
    res.set_header("Cache-Control", "private, max-age=300");
    res.set_content(std::string(jpeg.begin(), jpeg.end()), "image/jpeg");
  });
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
        server_.stop();
      };
  signals.async_wait(on_signal);
  std::thread signal_thread([&] { signal_io.run(); });
  auto stop_signals = [&] {
    signal_io.stop();
    signal_thread.join();
  };

  if (!server_.bind_to_port(options_.host.c_str(), options_.port)) {
    stop_signals();
    throw Error::io("cannot listen on " + options_.host + ":" + std::to_string(options_.port) +
                    " (in use, or not an address of this machine)");
  }
  // cpp-httplib 0.11 listens with a backlog of 5: a burst of 16 clients connecting at once
  // overflowed it and some saw their connection dropped (HTTP tests, scripts/bench_serve.sh).
  // listen() again on the listening socket only raises the backlog.
  if (listen_socket_ != INVALID_SOCKET) ::listen(listen_socket_, SOMAXCONN);
  std::fprintf(stderr, "mmsearch serve: listening on http://%s:%d (%lld images, %lld texts)\n",
               options_.host.c_str(), options_.port,
               static_cast<long long>(collection_.index_info(Collection::Target::kImages).vectors),
               static_cast<long long>(collection_.index_info(Collection::Target::kTexts).vectors));
  server_.listen_after_bind();  // returns after stop(), once the pool has drained
  stop_signals();
  std::fprintf(stderr, "mmsearch serve: stopped\n");
}

}  // namespace

void run_serve(const ServeOptions& options) {
  set_compute_threads(options.threads);
  const std::unique_ptr<Embedder> embedder = Embedder::load(options.model_dir);
  const std::unique_ptr<Collection> collection =
      Collection::open_for_search(options.index_dir, embedder->fingerprint());
  HttpService service(options, *embedder, *collection);
  service.run();
}

}  // namespace mms
