// `mmsearch serve`: the HTTP search service (routes: DESIGN.md "HTTP contract", and the
// OpenAPI document the server itself serves at GET /openapi.json, service/web_assets.cc). Requests
// are served by a bounded pool of connection threads; their text and image encodes and index
// searches go through the micro-batcher (service/batcher.h). Every limit lives in ServeLimits
// below, with its default.
#pragma once

#include <cstdint>
#include <string>

#include "encoders/image_io.h"
#include "service/batcher.h"

namespace mms {

struct ServeLimits {
  // Request body (after any Content-Encoding is undone), chunked or not. Over it: 413.
  int64_t max_body_bytes = int64_t{16} << 20;
  // A text query or text to embed, in UTF-8 bytes; encoded whole (no truncation). Over: 413.
  int64_t max_text_bytes = int64_t{64} << 10;
  // k of a search: 1..max_k, else 400.
  int32_t max_k = 1000;
  // Thumbnails: ?size=N with N in 16..max_thumbnail_side (default 256).
  int32_t max_thumbnail_side = 1024;
  // Uploaded images, checked from the header before decoding (413 when over).
  ImageLimits image;
  // Seconds a connection may take to send a request / accept a response.
  int32_t read_timeout_s = 10;
  int32_t write_timeout_s = 10;
  // An idle keep-alive connection is closed after this many seconds or requests. (Shutdown
  // waits for idle keep-alive connections to time out: cpp-httplib 0.11 does not wake them.)
  int32_t keep_alive_timeout_s = 5;
  int32_t keep_alive_max_count = 100;
  // Connection threads, and connections accepted but waiting for one. Beyond the queue,
  // requests are answered 503 with Retry-After on the accepting thread. cpp-httplib keeps a
  // thread for the life of a keep-alive connection, so http_threads is also how many clients
  // are served at once: with 32, half of 64 keep-alive clients waited ~12 s for a thread
  // (scripts/bench_serve.sh). The threads mostly wait on the batcher, so many are cheap.
  int32_t http_threads = 128;
  int32_t max_waiting_connections = 256;
  // Micro-batching; its max_queue bound answers 503 with Retry-After when exceeded.
  BatcherOptions batch;
};

struct ServeOptions {
  std::string index_dir, model_dir;
  std::string host = "127.0.0.1";
  int port = 8080;
  // When non-empty, every route but GET / and GET /healthz needs `Authorization: Bearer KEY`.
  std::string api_key;
  int threads = 1;  // compute threads (LibTorch intra-op)
  ServeLimits limits;
};

// Loads the model and the index, binds host:port and serves until SIGINT or SIGTERM, then
// stops accepting, finishes the requests in flight and returns. One access-log line per
// request goes to stderr as JSON: {"method", "path", "status", "ms"}. SIGHUP (and POST
// /v1/admin/reload) loads index files a concurrent `mmsearch index` wrote, without failing a
// request. Throws Error for a bad model or index, or io when the address cannot be bound.
void run_serve(const ServeOptions& options);

}  // namespace mms
