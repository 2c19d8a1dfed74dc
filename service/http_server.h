// `mmsearch serve`: the HTTP search service (routes: DESIGN.md "HTTP contract", and the
// OpenAPI document the server itself serves at GET /openapi.json, service/web_assets.cc). Requests
// are read and answered by the asynchronous core (service/http_core.h) and handled on its
// workers; their text and image encodes and index searches go through the micro-batcher
// (service/batcher.h). Every limit lives in ServeLimits below, with its default.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "encoders/image_io.h"
#include "service/batcher.h"
#include "service/http_core.h"

namespace mms {

struct ServeLimits {
  // Request bodies, after reading (chunked or not): image uploads and POST /v1/search,
  // whose terms may carry base64 images. Over it: 413, and the connection closes.
  int64_t max_body_bytes = int64_t{16} << 20;
  // JSON bodies of the other routes, and how deep any JSON body may nest (400 beyond).
  int64_t max_json_bytes = int64_t{1} << 20;
  int32_t max_json_depth = 32;
  // A text query or text to embed, in UTF-8 bytes (413 beyond); its tokens are bounded by
  // the model's text.max_tokens: a longer text is refused (413), never silently cut.
  int64_t max_text_bytes = int64_t{64} << 10;
  // k of a search: 1..max_k, else 400.
  int32_t max_k = 1000;
  // Thumbnails: ?size=N with N in 16..max_thumbnail_side (default 256); the most recent
  // ones are kept, up to this many bytes of JPEG.
  int32_t max_thumbnail_side = 1024;
  int64_t thumbnail_cache_bytes = int64_t{32} << 20;
  // Uploaded images, checked from the header before decoding (413 when over): a lower
  // bound than indexing's (encoders/image_io.h ImageLimits), as anyone may send one.
  ImageLimits upload_image = {int64_t{16} << 20, 8192, 16'000'000};
  // Decodes (uploads and thumbnails) running at once; more wait. 0: the core count.
  int32_t max_concurrent_decodes = 0;
  // The HTTP core: header, body and connection bounds, timeouts, I/O threads and workers.
  HttpCoreLimits http;
  // Micro-batching; its max_queue bound answers 503 with Retry-After when exceeded.
  BatcherOptions batch;
};

struct ServeOptions {
  std::string index_dir, model_dir;
  std::string host = "127.0.0.1";
  int port = 8080;
  // When non-empty, every route but GET / and GET /healthz needs `Authorization: Bearer KEY`.
  std::string api_key;
  // Host headers served besides the bound address's own names (the loopback names when
  // bound to loopback); other hosts get 421. Bound to a wildcard address (0.0.0.0, ::) with
  // none given, any Host is served.
  std::vector<std::string> allow_hosts;
  // When set, responses allow this browser origin (CORS) and OPTIONS preflights are answered.
  std::string cors_origin;
  int threads = 1;  // batch workers, each with one compute thread (LibTorch and FAISS)
  ServeLimits limits;
};

// Loads the model and the index, binds host:port and serves until SIGINT or SIGTERM, then
// stops accepting, finishes the requests in flight and returns. One access-log line per
// request goes to stderr as JSON: {"method", "path", "status", "ms"}. SIGHUP (and POST
// /v1/admin/reload) loads index files a concurrent `mmsearch index` wrote, without failing a
// request. Throws Error for a bad model or index, or io when the address cannot be bound.
void run_serve(const ServeOptions& options);

}  // namespace mms
