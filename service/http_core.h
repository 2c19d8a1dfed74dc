// The HTTP/1.1 server core of `mmsearch serve`, on Boost.Beast: asynchronous connections on a
// fixed pool of I/O threads (no thread per connection), handlers on a fixed pool of workers.
// Every limit is enforced while the request is read, before anything beyond it is buffered:
// request-line and header-line length, header count and total header bytes, the body's bytes
// (Content-Length or chunked, against the route's own limit), one deadline for the whole
// header and one for the whole body, an idle keep-alive timeout, and caps on connections in
// all and per client address. An early answer (a refused header, route, key or body) closes
// the connection, so no byte of an unread body is ever taken for a next request.
//
// The core knows nothing of mmsearch's routes: the application admits each request from its
// header (Admission) and answers it (Handle). Thread-safety: stop() may be called from any
// thread; the callbacks run on I/O threads (admit, log, inline handlers) and workers.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "service/http_request.h"
#include "service/http_response.h"

namespace mms {

struct HttpCoreLimits {
  int64_t max_request_line = 8 << 10;  // method, target and version: over it, 414
  int64_t max_header_line = 8 << 10;   // one header field, name and value: over it, 431
  int32_t max_header_count = 100;      // 431 beyond
  // Request line and every header together, and a chunked body's trailer: 431 beyond. At
  // most 63 KiB: Boost.Beast 1.74 throws on one field over 64 KiB.
  int64_t max_header_bytes = 60 << 10;
  int64_t max_body_bytes = int64_t{16} << 20;  // no route accepts more (413)
  std::chrono::milliseconds header_timeout{
      10'000};  // from a request's first byte to its header's end
  std::chrono::milliseconds body_timeout{30'000};   // from the header's end to the body's end
  std::chrono::milliseconds write_timeout{10'000};  // to send a response
  std::chrono::milliseconds idle_timeout{5'000};    // between requests on a keep-alive connection
  int32_t keep_alive_max_requests = 1000;  // then the connection is closed after its answer
  int32_t max_connections = 4096;          // open at once; beyond, 503 and close
  // Open at once from one client address; beyond, 503 and close. Loopback peers are not
  // counted: behind a reverse proxy every connection comes from the proxy's address.
  int32_t max_connections_per_client = 64;
  int32_t io_threads = 1;
  int32_t worker_threads = 32;  // handlers that may wait (on the batcher) at once
  int32_t max_waiting = 1024;   // requests waiting for a worker; beyond, 503
};

// The application's verdict on a request whose header is in.
struct Admission {
  std::optional<HttpResponse> early;  // answer this at once, then close
  int64_t max_body = 0;               // the route's body limit (0: it takes none)
  bool inline_handler = false;        // run the handler on the I/O thread (cheap routes)
};

class HttpCore {
 public:
  using Admit = std::function<Admission(HttpRequest&)>;  // may fill path_params
  using Handle = std::function<HttpResponse(HttpRequest&)>;
  // After each answer is sent (or failed to send): the request as far as it was read.
  using Log = std::function<void(const HttpRequest&, const HttpResponse&)>;

  HttpCore(const HttpCoreLimits& limits, Admit admit, Handle handle, Log log);
  ~HttpCore();
  HttpCore(const HttpCore&) = delete;
  HttpCore& operator=(const HttpCore&) = delete;

  // Binds host:port (port 0: any free one). Throws Error::io when it cannot.
  void listen(const std::string& host, int port);
  int port() const;
  // Serves on the I/O threads until stop(); returns once the requests in flight have been
  // answered and every connection is closed.
  void run();
  // Stops accepting, closes idle connections, lets requests in flight finish. Any thread.
  void stop();

  struct Impl;  // the server and its connections (http_core.cc)

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mms
