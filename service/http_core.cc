#include "service/http_core.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/error.h"

namespace mms {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

// Handlers that may wait run here: `threads` workers and at most `max_waiting` queued jobs.
class WorkerPool {
 public:
  WorkerPool(int32_t threads, int32_t max_waiting) : max_waiting_(max_waiting) {
    for (int32_t i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~WorkerPool() { shutdown(); }

  // False when the queue is full (the caller answers 503).
  bool submit(std::function<void()> job) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (shutdown_ || static_cast<int32_t>(jobs_.size()) >= max_waiting_) return false;
    jobs_.push_back(std::move(job));
    cond_.notify_one();
    return true;
  }

  // Runs what is queued, then joins the workers.
  void shutdown() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (shutdown_) return;
      shutdown_ = true;
    }
    cond_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cond_.wait(lock, [this] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  const int32_t max_waiting_;
  std::mutex mutex_;
  std::condition_variable cond_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::vector<std::thread> workers_;
};

std::string lower(beast::string_view s) {
  std::string out(s.data(), s.size());
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

class Session;

}  // namespace

struct HttpCore::Impl {
  Impl(const HttpCoreLimits& limits, Admit admit, Handle handle, Log log)
      : limits(limits),
        admit(std::move(admit)),
        handle(std::move(handle)),
        log(std::move(log)),
        ioc(std::max(1, limits.io_threads)),
        acceptor(ioc),
        retry_timer(ioc),
        drain_timer(ioc),
        work(net::make_work_guard(ioc)),
        workers(std::max(1, limits.worker_threads), std::max(1, limits.max_waiting)) {}

  void accept();
  void on_accept(beast::error_code ec, tcp::socket socket);
  void begin_stop();
  void close_idle_sessions();
  void wait_for_in_flight();
  void run_io();

  const HttpCoreLimits limits;
  const Admit admit;
  const Handle handle;
  const Log log;
  net::io_context ioc;
  tcp::acceptor acceptor;
  net::steady_timer retry_timer;  // after a failed accept (out of file descriptors)
  net::steady_timer drain_timer;  // while stopping: polls for the requests in flight
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  WorkerPool workers;
  std::atomic<bool> stopping{false};
  std::atomic<int64_t> in_flight{0};  // requests admitted and not yet answered
  std::atomic<int32_t> connections{0};
  std::mutex mutex;  // guards the two below
  std::unordered_map<std::string, int32_t> per_client;
  // Every open connection, so that stop() can close the idle ones. Weak: a connection lives
  // as long as an operation of its own is pending, and leaves this map when destroyed.
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;
};

namespace {

constexpr const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";

// One connection. Every handler runs on the connection's strand (the workers post their
// answers back to it), so the members need no lock.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, HttpCore::Impl& core, std::string client, bool loopback)
      : stream_(std::move(socket)),
        // Holds a header or a chunked body's trailer whole (the body itself is moved out as
        // it is parsed), so it bounds both; kept under 64 KiB (see max_header_bytes).
        buffer_(static_cast<size_t>(
            std::clamp<int64_t>(core.limits.max_header_bytes + 1024, 4096, 63 << 10))),
        core_(core),
        client_(std::move(client)),
        loopback_(loopback) {}

  ~Session() {
    if (counted_) core_.in_flight.fetch_sub(1);
    core_.connections.fetch_sub(1);
    std::lock_guard<std::mutex> lock(core_.mutex);
    core_.sessions.erase(this);
    if (!loopback_) {
      auto it = core_.per_client.find(client_);
      if (it != core_.per_client.end() && --it->second <= 0) core_.per_client.erase(it);
    }
  }

  void start(const char* refusal) {
    if (refusal != nullptr) {
      req_.client = client_;
      send(error_response(503, "unavailable", refusal), /*early=*/true);
      return;
    }
    read_request(/*first=*/true);
  }

  // While stopping: a connection waiting for a request is closed now; one whose request is
  // being answered closes after the answer.
  void close_if_idle() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->busy_) self->close();
    });
  }

 private:
  const HttpCoreLimits& limits() const { return core_.limits; }

  void read_request(bool first) {
    if (core_.stopping) return close();
    busy_ = false;
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(limits().max_header_bytes));
    parser_->body_limit(static_cast<uint64_t>(limits().max_body_bytes));
    req_ = HttpRequest{};
    req_.client = client_;
    if (first || buffer_.size() > 0) return read_header();
    // An idle keep-alive connection waits for its next request's first bytes this long;
    // the header deadline starts when they come.
    stream_.expires_after(limits().idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec) return self->close();
                              self->buffer_.commit(n);
                              self->read_header();
                            });
  }

  void read_header() {
    req_.start = std::chrono::steady_clock::now();
    stream_.expires_after(limits().header_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) return read_failed(ec, "header");
    const auto& head = parser_->get();
    req_.method = std::string(head.method_string());
    req_.target = std::string(head.target());
    if (static_cast<int64_t>(req_.method.size() + req_.target.size() + 10) >
        limits().max_request_line) {
      return refuse(
          414, "uri_too_long",
          "the request line is over " + std::to_string(limits().max_request_line) + " bytes");
    }
    int32_t count = 0;
    for (const auto& field : head) {
      if (++count > limits().max_header_count) {
        return refuse(431, "header_too_large",
                      "more than " + std::to_string(limits().max_header_count) + " header fields");
      }
      if (static_cast<int64_t>(field.name_string().size() + field.value().size() + 4) >
          limits().max_header_line) {
        return refuse(
            431, "header_too_large",
            "a header line is over " + std::to_string(limits().max_header_line) + " bytes");
      }
      req_.headers.emplace_back(lower(field.name_string()), std::string(field.value()));
    }
    try {
      split_target(req_.target, req_.path, req_.params);
      admission_ = core_.admit(req_);
    } catch (const Error& e) {
      return send(error_response(e), /*early=*/true);
    }
    if (admission_.early) return send(std::move(*admission_.early), /*early=*/true);
    const auto length = parser_->content_length();
    const bool has_body = parser_->chunked() || (length && *length > 0);
    if (has_body && admission_.max_body <= 0) {
      return refuse(413, "too_large", req_.method + " " + req_.path + " takes no body");
    }
    if (length && *length > static_cast<uint64_t>(admission_.max_body)) {
      return refuse(413, "too_large",
                    "the request body is over the limit of " + std::to_string(admission_.max_body) +
                        " bytes");
    }
    if (parser_->is_done()) return dispatch();
    parser_->body_limit(static_cast<uint64_t>(admission_.max_body));
    stream_.expires_after(limits().body_timeout);
    if (beast::iequals(head[http::field::expect], "100-continue")) {
      net::async_write(stream_, net::buffer(kContinue, sizeof kContinue - 1),
                       [self = shared_from_this()](beast::error_code ec, size_t) {
                         if (ec) return self->close();
                         self->read_body();
                       });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->read_failed(ec, "body");
                       self->dispatch();
                     });
  }

  // A read that failed: a parse error or a limit gets its answer (and the connection
  // closes); a timeout, a reset or the end of the stream just closes.
  void read_failed(beast::error_code ec, const char* what) {
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      return refuse(
          431, "header_too_large",
          "the request header is over " + std::to_string(limits().max_header_bytes) + " bytes");
    }
    if (ec == http::error::body_limit) {
      const int64_t limit =
          parser_->is_header_done() ? admission_.max_body : limits().max_body_bytes;
      return refuse(413, "too_large",
                    "the request body is over the limit of " + std::to_string(limit) + " bytes");
    }
    if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      return refuse(400, "invalid_argument",
                    std::string("malformed HTTP request ") + what + ": " + ec.message());
    }
    close();
  }

  void refuse(int status, const std::string& code, const std::string& message) {
    send(error_response(status, code, message), /*early=*/true);
  }

  void dispatch() {
    busy_ = true;
    core_.in_flight.fetch_add(1);
    counted_ = true;
    req_.body = std::move(parser_->get().body());
    keep_alive_ = parser_->keep_alive();
    if (admission_.inline_handler) return send(run_handler(), false);
    auto self = shared_from_this();
    const bool queued = core_.workers.submit([self] {
      HttpResponse res = self->run_handler();
      net::post(self->stream_.get_executor(),
                [self, res = std::move(res)]() mutable { self->send(std::move(res), false); });
    });
    if (!queued)
      send(error_response(503, "unavailable", "the server is busy; retry shortly"), false);
  }

  HttpResponse run_handler() {
    try {
      return core_.handle(req_);
    } catch (const Error& e) {
      return error_response(e);
    } catch (const std::exception& e) {
      return error_response(Error::internal(e.what()));
    }
  }

  // Sends an answer; an early one (the request was not read whole, or was refused) closes
  // the connection after it.
  void send(HttpResponse res, bool early) {
    busy_ = true;
    const bool close = early || res.close || !keep_alive_ || core_.stopping ||
                       ++served_ >= limits().keep_alive_max_requests;
    res_ = {};
    res_.version(11);
    res_.result(static_cast<unsigned>(res.status));
    res_.set(http::field::content_type, res.content_type);
    for (const auto& [name, value] : res.headers) res_.insert(name, value);
    res_.keep_alive(!close);
    res_.body() = std::move(res.body);
    res_.prepare_payload();
    status_ = res.status;
    stream_.expires_after(limits().write_timeout);
    http::async_write(stream_, res_,
                      [self = shared_from_this(), close](beast::error_code ec, size_t) {
                        self->on_write(ec, close);
                      });
  }

  void on_write(beast::error_code ec, bool close) {
    if (core_.log) {
      HttpResponse logged;
      logged.status = status_;
      core_.log(req_, logged);
    }
    res_ = {};
    if (counted_) {
      core_.in_flight.fetch_sub(1);
      counted_ = false;
    }
    if (ec) return this->close();
    if (close) return linger_close();
    read_request(/*first=*/false);
  }

  // After a closing answer: stop sending, then read and drop what the client still sends
  // (at most 1 MiB, 1 s), so that closing does not reset the connection before the client has
  // read the answer.
  void linger_close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::chrono::seconds(1));
    drain();
  }

  void drain() {
    stream_.async_read_some(net::buffer(drain_),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              self->drained_ += n;
                              if (ec || self->drained_ > (1 << 20)) return self->close();
                              self->drain();
                            });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  HttpCore::Impl& core_;
  const std::string client_;
  const bool loopback_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  HttpRequest req_;
  Admission admission_;
  int status_ = 0;
  int32_t served_ = 0;
  bool busy_ = false;       // a request is being answered
  bool counted_ = false;    // this request is counted in core_.in_flight
  bool keep_alive_ = true;  // as the client asked
  size_t drained_ = 0;
  std::array<char, 8192> drain_{};
};

}  // namespace

void HttpCore::Impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    on_accept(ec, std::move(socket));
  });
}

void HttpCore::Impl::on_accept(beast::error_code ec, tcp::socket socket) {
  if (stopping || !acceptor.is_open()) return;
  if (ec) {
    // Out of file descriptors (or another transient failure): try again shortly rather
    // than spin.
    retry_timer.expires_after(std::chrono::milliseconds(100));
    retry_timer.async_wait([this](beast::error_code) {
      if (!stopping) accept();
    });
    return;
  }
  beast::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  const tcp::endpoint peer = socket.remote_endpoint(ignored);
  const bool loopback = peer.address().is_loopback();
  std::string client = peer.address().to_string();
  const char* refusal = nullptr;
  if (connections.fetch_add(1) >= limits.max_connections) refusal = "too many connections";
  if (!loopback) {
    std::lock_guard<std::mutex> lock(mutex);
    if (++per_client[client] > limits.max_connections_per_client && refusal == nullptr) {
      refusal = "too many connections from this address";
    }
  }
  auto session = std::make_shared<Session>(std::move(socket), *this, std::move(client), loopback);
  {
    std::lock_guard<std::mutex> lock(mutex);
    sessions.emplace(session.get(), session);
  }
  session->start(refusal);
  accept();
}

void HttpCore::Impl::begin_stop() {
  if (stopping.exchange(true)) return;
  beast::error_code ignored;
  acceptor.close(ignored);
  retry_timer.cancel();
  close_idle_sessions();
  wait_for_in_flight();
}

void HttpCore::Impl::close_idle_sessions() {
  std::vector<std::shared_ptr<Session>> open;
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (const auto& [raw, weak] : sessions) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
  }
  for (const auto& s : open) s->close_if_idle();
}

void HttpCore::Impl::wait_for_in_flight() {
  // Connections still answering close after their answer; once none is in flight, the I/O
  // threads may run out of work and return.
  if (in_flight.load() == 0) {
    work.reset();
    close_idle_sessions();
    return;
  }
  drain_timer.expires_after(std::chrono::milliseconds(10));
  drain_timer.async_wait([this](beast::error_code) { wait_for_in_flight(); });
}

HttpCore::HttpCore(const HttpCoreLimits& limits, Admit admit, Handle handle, Log log)
    : impl_(std::make_unique<Impl>(limits, std::move(admit), std::move(handle), std::move(log))) {}

HttpCore::~HttpCore() {
  impl_->workers.shutdown();
}

void HttpCore::listen(const std::string& host, int port) {
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(host, ec);
  if (ec)
    throw Error::io("cannot listen on " + host + ": not an IP address (" + ec.message() + ")");
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  tcp::acceptor& a = impl_->acceptor;
  a.open(endpoint.protocol(), ec);
  // SO_REUSEADDR only: a second server must not be able to bind a port that is in use.
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    beast::error_code ignored;
    a.close(ignored);
    throw Error::io("cannot listen on " + host + ":" + std::to_string(port) + " (" + ec.message() +
                    ")");
  }
}

int HttpCore::port() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

// Runs the I/O loop until it runs out of work. An exception thrown inside an I/O operation
// (Boost.Beast 1.74 throws std::length_error for a chunked trailer field over 64 KiB) ends
// only the connection it belongs to: its operation is gone, so is the last reference to it.
void HttpCore::Impl::run_io() {
  for (;;) {
    try {
      ioc.run();
      return;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mmsearch serve: a connection failed and was closed: %s\n", e.what());
    }
  }
}

void HttpCore::run() {
  impl_->accept();
  std::vector<std::thread> threads;
  for (int32_t i = 1; i < impl_->limits.io_threads; ++i) {
    threads.emplace_back([this] { impl_->run_io(); });
  }
  impl_->run_io();
  for (std::thread& t : threads) t.join();
  impl_->workers.shutdown();
}

void HttpCore::stop() {
  net::post(impl_->ioc, [this] { impl_->begin_stop(); });
}

}  // namespace mms
