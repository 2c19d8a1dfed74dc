// Hostile clients against `mmsearch serve`, over raw sockets: bodies without a length, a
// 200 MiB header line, 8 MiB of '[', hundreds of idle and slowloris connections, chunked
// bodies over the limit, smuggled requests, malformed request lines, foreign Host headers, a
// compound query of ten thousand terms, texts over the model's token bound, a PNG whose header
// claims 64 megapixels, CORS and Expect: 100-continue. For each, the server must refuse within
// 2 s (or, for slow clients, stay responsive), cost at most 64 MB of RSS (read from
// /proc/PID/status while the request is open), close the connection after an early answer,
// and answer GET /healthz afterwards. Every wait is a poll with a deadline, so no test hangs.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "index_test_support.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using nlohmann::json;

constexpr int64_t kMiB = int64_t{1} << 20;
// What one hostile request may cost the server, and how soon it must be refused.
// Under ThreadSanitizer (scripts/test.sh --sanitize thread) the server also keeps shadow
// memory and sync metadata beside every byte it touches, four to eight times over, and runs
// five to fifteen times slower: both bounds stretch.
#if defined(__SANITIZE_THREAD__)
constexpr int64_t kMaxRssGrowth = 4 * 64 * kMiB;
constexpr double kRefuseSeconds = 5 * 2.0;
#else
constexpr int64_t kMaxRssGrowth = 64 * kMiB;
constexpr double kRefuseSeconds = 2.0;
#endif
// The test model's text.max_tokens (the shipped default is 16384), so a text over it is short.
constexpr int kMaxTokens = 64;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// --- The server's memory --------------------------------------------------------------------

// The resident set of process `pid` in bytes (VmRSS in /proc/PID/status), or -1.
int64_t rss_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

// Samples a process's RSS every few milliseconds from construction until stop(), which
// returns the most it grew over its value at construction.
class RssWatch {
 public:
  explicit RssWatch(pid_t pid) : pid_(pid), baseline_(rss_bytes(pid)), peak_(baseline_) {
    thread_ = std::thread([this] {
      while (!done_) {
        sample();
        std::this_thread::sleep_for(5ms);
      }
    });
  }
  ~RssWatch() { stop(); }
  RssWatch(const RssWatch&) = delete;
  RssWatch& operator=(const RssWatch&) = delete;

  int64_t stop() {
    if (thread_.joinable()) {
      done_ = true;
      thread_.join();
      sample();
    }
    return peak_ - baseline_;
  }

 private:
  void sample() { peak_ = std::max(peak_, rss_bytes(pid_)); }

  const pid_t pid_;
  const int64_t baseline_;
  int64_t peak_;  // written by the thread until stop() joins it
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Stops `rss` and checks that the server grew by at most kMaxRssGrowth meanwhile.
::testing::AssertionResult rss_bounded(RssWatch& rss) {
  const int64_t growth = rss.stop();
  if (growth <= kMaxRssGrowth) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "the server's RSS grew by " << growth / kMiB
                                       << " MiB; the bound is " << kMaxRssGrowth / kMiB << " MiB";
}

// --- Raw HTTP over a socket -----------------------------------------------------------------

struct Response {
  int status = 0;                              // 0: no complete response arrived
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  // The {"error": {"message"}} of an error answer ("" when the body is not that shape).
  std::string error_message() const {
    const json j = json::parse(body, nullptr, false);
    if (!j.is_object() || !j.contains("error") || !j["error"].is_object() ||
        !j["error"]["message"].is_string() || !j["error"]["code"].is_string()) {
      return "";
    }
    return j["error"]["message"].get<std::string>();
  }
};

std::ostream& operator<<(std::ostream& out, const Response& r) {
  return out << "HTTP " << r.status << " " << r.body.substr(0, 300);
}

// Removes the first complete response from the front of `in` and returns it (its body as long
// as its Content-Length; none for 1xx); nullopt while it is incomplete.
std::optional<Response> take_response(std::string& in) {
  const size_t end = in.find("\r\n\r\n");
  if (end == std::string::npos) return std::nullopt;
  Response r;
  std::istringstream head(in.substr(0, end));
  std::string line;
  std::getline(head, line);
  if (line.rfind("HTTP/1.", 0) != 0 || line.size() < 12) {
    r.status = -1;  // not HTTP: the caller sees the bytes in the body
    r.body = in;
    in.clear();
    return r;
  }
  r.status = std::atoi(line.c_str() + 9);
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    r.headers[lower(line.substr(0, colon))] = value;
  }
  const size_t length = r.status >= 200 ? std::stoull("0" + r.header("content-length")) : 0;
  if (in.size() < end + 4 + length) return std::nullopt;
  r.body = in.substr(end + 4, length);
  in.erase(0, end + 4 + length);
  return r;
}

// A client connection to the server on 127.0.0.1, non-blocking: every wait is a poll with a
// deadline. What arrives is kept until read_response() takes it.
class Conn {
 public:
  explicit Conn(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const sockaddr_in addr = mms::testing::loopback(port);
    if (fd_ >= 0 && connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (fd_ >= 0) fcntl(fd_, F_SETFL, O_NONBLOCK);
  }
  ~Conn() {
    if (fd_ >= 0) ::close(fd_);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  bool eof() const { return eof_; }                   // the server closed or reset the connection
  const std::string& pending() const { return in_; }  // received, not taken as a response

  // What the socket takes now: the bytes sent, 0 when it is full, -1 once the server closed.
  int64_t send_some(std::string_view data) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n >= 0) return n;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  }

  // Sends all of `data` within `timeout`; false when the server closed or time ran out.
  bool send_all(std::string_view data, Clock::duration timeout = 5s) {
    const auto deadline = Clock::now() + timeout;
    while (!data.empty()) {
      const int64_t n = send_some(data);
      if (n < 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
      if (n == 0 && !wait(POLLOUT, deadline)) return false;
    }
    return true;
  }

  // Reads what has arrived, waiting up to `timeout` for the first bytes. Sets eof() on the
  // end of the stream or a reset.
  void receive(Clock::duration timeout) {
    if (eof_ || !wait(POLLIN, Clock::now() + timeout)) return;
    std::array<char, 65536> buf;
    for (;;) {
      const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
      if (n > 0) {
        in_.append(buf.data(), static_cast<size_t>(n));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) eof_ = true;
      return;
    }
  }

  // The next response, waiting up to `timeout` for it; status 0 when none came.
  Response read_response(Clock::duration timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (std::optional<Response> r = take_response(in_)) return *r;
      const auto now = Clock::now();
      if (eof_ || now >= deadline) return {};
      receive(deadline - now);
    }
  }

  // Whether the server closes (or resets) the connection within `timeout`; bytes that
  // arrive meanwhile stay in pending().
  bool closed_within(Clock::duration timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!eof_ && Clock::now() < deadline) receive(deadline - Clock::now());
    return eof_;
  }

 private:
  // Whether the socket becomes ready for `events` (or fails) before `deadline`.
  bool wait(short events, Clock::time_point deadline) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p{fd_, events, 0};
    return ::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count()))) > 0;
  }

  int fd_ = -1;
  std::string in_;
  bool eof_ = false;
};

// A request on a fresh connection and its response (status 0 when none came in `timeout`).
Response round_trip(int port, const std::string& request, Clock::duration timeout = 5s) {
  Conn c(port);
  if (!c.connected() || !c.send_all(request)) return {};
  return c.read_response(timeout);
}

// A request with a body as a plain client sends it.
std::string request(const std::string& method, const std::string& target, const std::string& body,
                    const std::string& extra_headers = "",
                    const std::string& content_type = "application/json") {
  return method + " " + target + " HTTP/1.1\r\nHost: localhost\r\nContent-Type: " + content_type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra_headers + "\r\n" +
         body;
}

// GET /healthz on a fresh connection answers 200 within 2 s.
::testing::AssertionResult healthy(int port) {
  const auto t0 = Clock::now();
  const Response r = round_trip(port, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", 2s);
  const double took = seconds_since(t0);
  if (r.status == 200 && took < kRefuseSeconds) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "GET /healthz: " << r << " after " << took << " s";
}

// What a client that streams a body saw.
struct Streamed {
  Response response;       // the answer (status 0: none came)
  double answered_s = -1;  // from the end of the header to the answer
  int64_t sent = 0;        // body bytes the connection took
};

// Sends `head`, then `block` over and over, up to `total` bytes, as fast as the connection
// takes them, reading all the while. After the answer it goes on sending (a hostile client
// does), until the connection fails or `total` is sent. Gives up after `limit`.
Streamed stream_body(Conn& c, const std::string& head, const std::string& block, int64_t total,
                     Clock::duration limit = 15s) {
  Streamed s;
  if (!c.send_all(head)) return s;
  const auto t0 = Clock::now();
  size_t offset = 0;  // into block
  bool sending = total > 0;
  while (Clock::now() < t0 + limit && !c.eof()) {
    pollfd p{c.fd(), static_cast<short>(POLLIN | (sending ? POLLOUT : 0)), 0};
    ::poll(&p, 1, 50);
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) c.receive(0ms);
    if (s.response.status == 0) {
      s.response = c.read_response(0ms);
      if (s.response.status != 0) s.answered_s = seconds_since(t0);
    }
    if (sending && (p.revents & POLLOUT)) {
      const size_t n = static_cast<size_t>(
          std::min<int64_t>(static_cast<int64_t>(block.size() - offset), total - s.sent));
      const int64_t took = c.send_some(std::string_view(block).substr(offset, n));
      if (took < 0) {
        sending = false;  // the server closed; what it answered may still be unread
      } else {
        s.sent += took;
        offset = (offset + static_cast<size_t>(took)) % block.size();
        sending = s.sent < total;
      }
    }
    if (s.response.status != 0 && !sending) break;
  }
  if (s.response.status == 0) {
    s.response = c.read_response(1s);
    if (s.response.status != 0) s.answered_s = seconds_since(t0);
  }
  return s;
}

// One streamed request that must be refused early: an answer with a status in `statuses` and
// the JSON error shape within 2 s, the connection closed, and at most kMaxRssGrowth of RSS
// meanwhile. Streams of hundreds of MiB also check that s.sent stayed far below the total.
Streamed expect_refused_while_streaming(int port, pid_t pid, const std::string& head,
                                        const std::string& block, int64_t total,
                                        const std::set<int>& statuses) {
  Conn c(port);
  EXPECT_TRUE(c.connected());
  RssWatch rss(pid);
  Streamed s = stream_body(c, head, block, total);
  const bool closed = c.closed_within(3s);
  EXPECT_TRUE(rss_bounded(rss));
  EXPECT_TRUE(statuses.count(s.response.status)) << s.response;
  EXPECT_NE(s.response.error_message(), "") << s.response;
  EXPECT_GE(s.answered_s, 0);
  EXPECT_LT(s.answered_s, kRefuseSeconds);
  EXPECT_TRUE(closed) << "the connection stayed open after an early answer; " << s.sent
                      << " body bytes sent";
  EXPECT_EQ(c.pending(), "") << "bytes after the answer";
  return s;
}

// --- Test data ------------------------------------------------------------------------------

uint32_t crc32(std::string_view bytes) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

void put_u32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xFF);
}

// A zlib stream (RFC 1950/1951) of n zero bytes, n > 258: one fixed-Huffman block of a literal
// 0 and then copies of length 258 at distance 1 (13 bits per 258 bytes).
std::string zlib_zeros(int64_t n) {
  std::string out = "\x78\x01";
  uint32_t acc = 0;  // bits not yet written, least significant first
  int used = 0;
  auto flush = [&] {
    while (used >= 8) {
      out += static_cast<char>(acc & 0xFF);
      acc >>= 8;
      used -= 8;
    }
  };
  auto bits = [&](uint32_t v, int count) {  // header fields: least significant bit first
    acc |= v << used;
    used += count;
    flush();
  };
  auto code = [&](uint32_t v, int count) {  // Huffman codes: most significant bit first
    for (int i = count - 1; i >= 0; --i) bits((v >> i) & 1, 1);
  };
  bits(1, 1);     // BFINAL
  bits(1, 2);     // BTYPE 01: fixed Huffman codes
  code(0x30, 8);  // literal 0
  int64_t left = n - 1;
  for (; left >= 258; left -= 258) {
    code(0xC5, 8);  // length code 285: 258 bytes
    code(0, 5);     // distance code 0: distance 1
  }
  for (; left > 0; --left) code(0x30, 8);
  code(0, 7);  // end of block (256)
  if (used > 0) bits(0, 8 - used);
  const uint32_t a = 1, b = static_cast<uint32_t>(n % 65521);  // Adler-32 of zeros
  put_u32(out, (b << 16) | a);
  return out;
}

void put_chunk(std::string& png, const std::string& type, const std::string& data) {
  put_u32(png, static_cast<uint32_t>(data.size()));
  png += type + data;
  put_u32(png, crc32(type + data));
}

// A valid, all-zero PNG of `side` x `side` 16-bit RGBA pixels (8 bytes each), about 3 MB
// for 8000 x 8000: decoded, it would take 512 MB.
std::string rgba16_png(uint32_t side) {
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  put_u32(ihdr, side);
  put_u32(ihdr, side);
  ihdr +=
      std::string("\x10\x06\x00\x00\x00", 5);  // 16 bits, RGBA, deflate, no filter, no interlace
  put_chunk(png, "IHDR", ihdr);
  put_chunk(png, "IDAT", zlib_zeros(int64_t{side} * (1 + int64_t{side} * 8)));  // filter byte + row
  put_chunk(png, "IEND", "");
  return png;
}

// --- The servers ----------------------------------------------------------------------------

// `mmsearch serve` on the suite's index with `extra` flags; stopped with SIGTERM on destruction.
struct Server {
  mms::testing::ServeProcess process;
  const int port;

  Server(const fs::path& dir, const std::vector<std::string>& extra, const fs::path& log)
      : process(args(dir, extra), log), port(process.port()) {
    if (!process.up()) ADD_FAILURE() << "the server did not come up; its log:\n" << read_file(log);
  }
  pid_t pid() const { return process.pid(); }

 private:
  static std::vector<std::string> args(const fs::path& dir, const std::vector<std::string>& extra) {
    std::vector<std::string> a = {
        "--index", (dir / "index").string(), "--model", (dir / "model").string(), "--threads", "1"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
};

class HostileClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::signal(SIGPIPE, SIG_IGN);
    dir_ = fs::temp_directory_path() / ("mms_hostile_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "photos");
    mms::testing::make_tiny_model(dir_ / "model");
    json config = json::parse(read_file(dir_ / "model/config.json"));
    config["text"]["max_tokens"] = kMaxTokens;
    std::ofstream(dir_ / "model/config.json") << config.dump(2);
    for (int i = 0; i < 6; ++i) {
      mms::testing::write_test_jpeg(dir_ / "photos" / ("img" + std::to_string(i) + ".jpg"), i + 1);
    }
    const std::string common = "--index " + (dir_ / "index").string() + " --model " +
                               (dir_ / "model").string() + " --threads 1 ";
    ASSERT_EQ(mms::testing::run_program("index " + common + (dir_ / "photos").string()).first, 0);
    std::ofstream(dir_ / "texts.txt") << "a red circle\na blue square on white\n";
    ASSERT_EQ(
        mms::testing::run_program("add-texts " + common + (dir_ / "texts.txt").string()).first, 0);
    server_ = new Server(dir_, {}, dir_ / "server.log");
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    fs::remove_all(dir_);
  }
  void SetUp() override { ASSERT_NE(server_, nullptr) << "the suite's set-up failed"; }
  void TearDown() override {
    // Whatever a test sent, the shared server still answers.
    if (server_ != nullptr) {
      EXPECT_TRUE(healthy(server_->port));
    }
  }

  static int port() { return server_->port; }
  static pid_t pid() { return server_->pid(); }
  // A server with its own flags, for one test.
  static std::unique_ptr<Server> start(const std::vector<std::string>& extra, const char* log) {
    return std::make_unique<Server>(dir_, extra, dir_ / log);
  }

  static fs::path dir_;
  static Server* server_;
};

fs::path HostileClientTest::dir_;
Server* HostileClientTest::server_ = nullptr;

// What the streaming tests send: raw bytes, or 64 KiB chunks of a chunked body.
const std::string kBlock(64 << 10, 'x');
const std::string kChunk = "10000\r\n" + std::string(0x10000, 'x') + "\r\n";

// --- Bodies and headers ---------------------------------------------------------------------

// A request without Content-Length or Transfer-Encoding has no body (RFC 9112 6.3): the
// bytes after it are not read as a body; the early 405 closes the connection instead.
TEST_F(HostileClientTest, StreamWithoutContentLengthOnHealthzIsAnsweredAndClosed) {
  for (const std::string method : {"PUT", "POST"}) {
    SCOPED_TRACE(method);
    const Streamed s = expect_refused_while_streaming(
        port(), pid(), method + " /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", kBlock, 300 * kMiB,
        {405, 413});
    EXPECT_LT(s.sent, 100 * kMiB) << "the server went on reading";
    if (s.response.status == 405) {
      EXPECT_EQ(s.response.header("allow"), "GET");
    }
  }
}

// With an API key, the same (GET /healthz needs no key); and an unauthenticated chunked upload
// is refused from its header, its body never read.
TEST_F(HostileClientTest, StreamWithoutContentLengthIsAnsweredAndClosedWithAnApiKey) {
  const auto keyed = start({"--api-key", "s3cret"}, "keyed.log");
  for (const std::string method : {"PUT", "POST"}) {
    SCOPED_TRACE(method);
    const Streamed s = expect_refused_while_streaming(
        keyed->port, keyed->pid(), method + " /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", kBlock,
        300 * kMiB, {405, 413});
    EXPECT_LT(s.sent, 100 * kMiB) << "the server went on reading";
  }
  const Streamed s = expect_refused_while_streaming(
      keyed->port, keyed->pid(),
      "POST /v1/search/text HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n",
      kChunk, 300 * kMiB, {401});
  EXPECT_LT(s.sent, 100 * kMiB) << "the server read the unauthenticated body";
  EXPECT_TRUE(healthy(keyed->port));
}

// Beast's header limit (64 KiB) stops the read: 431, then the connection closes long before
// the client could send 200 MiB.
TEST_F(HostileClientTest, HugeHeaderLineIsRefused431WithoutReadingIt) {
  const Streamed s = expect_refused_while_streaming(
      port(), pid(),
      "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Long: ", std::string(64 << 10, 'a'),
      200 * kMiB, {431});
  EXPECT_LT(s.sent, 100 * kMiB) << "the server went on reading the header";
}

// /v1/search/text takes at most 1 MiB of JSON: 8 MiB of '[' is refused from its
// Content-Length, and nothing of it stays in the server's memory.
TEST_F(HostileClientTest, EightMebibytesOfBracketsOverTheJsonLimitAreRefused) {
  const int64_t before = rss_bytes(pid());
  expect_refused_while_streaming(
      port(), pid(),
      "POST /v1/search/text HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
          std::to_string(8 * kMiB) + "\r\n\r\n",
      std::string(64 << 10, '['), 8 * kMiB, {400, 413});
  std::this_thread::sleep_for(200ms);
  EXPECT_LE(rss_bytes(pid()) - before, 4 * kMiB);
}

// POST /v1/search takes bodies up to 16 MiB (base64 images): 8 MiB of '[' is read and then
// refused at the 33rd level, as 400 naming the depth. Twice, so that a buffer the allocator
// keeps after the first would show; what the request held is given back.
TEST_F(HostileClientTest, EightMebibytesOfBracketsAreRefusedAsTooDeep) {
  const std::string body(8 * kMiB, '[');
  const int64_t before = rss_bytes(pid());
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round);
    RssWatch rss(pid());
    Conn c(port());
    ASSERT_TRUE(c.connected());
    const auto t0 = Clock::now();
    ASSERT_TRUE(c.send_all(request("POST", "/v1/search", body)));
    const Response r = c.read_response(5s);
    const double took = seconds_since(t0);
    EXPECT_TRUE(rss_bounded(rss));
    EXPECT_EQ(r.status, 400) << r;
    EXPECT_NE(r.error_message().find("deeper than 32"), std::string::npos) << r;
    EXPECT_LT(took, kRefuseSeconds);
  }
  std::this_thread::sleep_for(300ms);
  const int64_t kept = rss_bytes(pid()) - before;
  EXPECT_LE(kept, 4 * kMiB) << "the server kept " << kept / kMiB << " MiB after the requests";
}

// Over the upload limit (16 MiB) in chunks: 413 and close, whatever the capitalisation of
// "chunked" (transfer codings are case-insensitive, RFC 9112 7).
TEST_F(HostileClientTest, ChunkedBodyOverTheLimitIsRefused413InAnyCapitalisation) {
  for (const char* coding : {"chunked", "Chunked", "CHUNKED"}) {
    SCOPED_TRACE(coding);
    const Streamed s = expect_refused_while_streaming(
        port(), pid(),
        std::string("POST /v1/search/image HTTP/1.1\r\nHost: localhost\r\n"
                    "Content-Type: image/jpeg\r\nTransfer-Encoding: ") +
            coding + "\r\n\r\n",
        kChunk, 256 * kMiB, {413});
    EXPECT_LT(s.sent, 100 * kMiB) << "the server went on reading";
  }
}

// The trailer of a chunked body is a header block too, and as bounded as the header: a
// 70,000-byte trailer field is refused, and the server goes on serving. (On its own server:
// a server that dies here would fail every later test of the suite.)
TEST_F(HostileClientTest, ChunkedTrailerOver64KiBIsRefusedAndTheServerSurvives) {
  const auto server = start({}, "trailer.log");
  RssWatch rss(server->pid());
  Conn c(server->port);
  ASSERT_TRUE(c.send_all(
      "POST /v1/search/text HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: " +
      std::string(70000, 'a') + "\r\n\r\n"));
  const Response r = c.read_response(2s);
  EXPECT_TRUE(r.status == 400 || r.status == 413 || r.status == 431) << r;
  EXPECT_TRUE(c.closed_within(3s));
  EXPECT_TRUE(rss_bounded(rss));
  EXPECT_TRUE(healthy(server->port)) << "the server's log:\n" << read_file(dir_ / "trailer.log");
}

// A GET that carries a body (by length or chunked) on a route that takes none: refused, closed.
TEST_F(HostileClientTest, GetWithABodyIsRefused413AndClosed) {
  RssWatch rss(pid());
  for (const std::string target : {"/healthz", "/metrics", "/v1/items/1", "/"}) {
    for (const std::string& framing : std::vector<std::string>{
             std::string("Content-Length: 5\r\n\r\nhello"),
             std::string("Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")}) {
      SCOPED_TRACE(target + " " + framing.substr(0, 20));
      Conn c(port());
      ASSERT_TRUE(c.send_all("GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" + framing));
      const Response r = c.read_response(2s);
      EXPECT_EQ(r.status, 413) << r;
      EXPECT_NE(r.error_message().find("takes no body"), std::string::npos) << r;
      EXPECT_TRUE(c.closed_within(3s));
      EXPECT_EQ(c.pending(), "");
    }
  }
  EXPECT_TRUE(rss_bounded(rss));
}

// A body that is itself a request must never be answered as one: exactly one response comes
// back and the connection closes. Also with both Content-Length and Transfer-Encoding (the
// classic CL.TE / TE.CL desync), in either order.
TEST_F(HostileClientTest, SmuggledRequestGetsNoSecondResponse) {
  const std::string inner = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
  const std::string length = "Content-Length: " + std::to_string(inner.size()) + "\r\n";
  const std::string chunked_then_inner = "0\r\n\r\n" + inner;
  const std::string both_length =
      "Content-Length: " + std::to_string(chunked_then_inner.size()) + "\r\n";
  const std::vector<std::string> attacks = {
      "GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + length + "\r\n" + inner,
      "POST /v1/search/text HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
          both_length + "Transfer-Encoding: chunked\r\n\r\n" + chunked_then_inner,
      "POST /v1/search/text HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n" +
          both_length + "\r\n" + chunked_then_inner,
  };
  RssWatch rss(pid());
  for (const std::string& attack : attacks) {
    SCOPED_TRACE(attack);
    Conn c(port());
    ASSERT_TRUE(c.send_all(attack));
    const Response r = c.read_response(2s);
    EXPECT_GE(r.status, 400) << r;
    EXPECT_TRUE(c.closed_within(3s)) << "the connection stayed open";
    EXPECT_EQ(c.pending(), "") << "a second response";
  }
  EXPECT_TRUE(rss_bounded(rss));
}

// --- Connections ----------------------------------------------------------------------------

TEST_F(HostileClientTest, FourHundredIdleConnectionsLeaveHealthzResponsive) {
  RssWatch rss(pid());
  std::vector<std::unique_ptr<Conn>> idle;
  for (int i = 0; i < 400; ++i) {
    idle.push_back(std::make_unique<Conn>(port()));
    ASSERT_TRUE(idle.back()->connected()) << "connection " << i;
  }
  std::this_thread::sleep_for(300ms);  // the server has accepted them
  EXPECT_TRUE(healthy(port()));
  EXPECT_TRUE(rss_bounded(rss));
}

// 400 connections that each send one byte of a header a second: /healthz keeps answering,
// and each is cut by the header deadline (10 s from its first byte, HttpCoreLimits).
TEST_F(HostileClientTest, FourHundredSlowlorisConnectionsLeaveHealthzResponsiveAndAreCut) {
  const std::string header =
      "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + std::string(100, 'a');
  RssWatch rss(pid());
  std::vector<std::unique_ptr<Conn>> slow;
  for (int i = 0; i < 400; ++i) {
    slow.push_back(std::make_unique<Conn>(port()));
    ASSERT_TRUE(slow.back()->connected()) << "connection " << i;
  }
  const auto t0 = Clock::now();
  size_t open = slow.size();
  int round = 0;
  double all_cut_s = -1;
  for (; seconds_since(t0) < 16 && open > 0; ++round) {
    const auto next = Clock::now() + 1s;
    open = 0;
    for (auto& c : slow) {
      if (c->eof()) continue;
      c->receive(0ms);
      if (!c->eof() && c->send_some(std::string_view(header).substr(round, 1)) < 0)
        c->receive(100ms);
      open += !c->eof();
    }
    if (round == 2 || round == 5 || round == 8) {
      EXPECT_TRUE(healthy(port())) << "round " << round;
    }
    if (open == 0) all_cut_s = seconds_since(t0);
    std::this_thread::sleep_until(next);
  }
  EXPECT_TRUE(rss_bounded(rss));
  EXPECT_EQ(open, 0u) << "slowloris connections still open after " << seconds_since(t0) << " s";
  EXPECT_GT(all_cut_s, 8.0);  // not cut before the deadline: they were sending
}

// --- Request lines and metrics --------------------------------------------------------------

// The request-count series of GET /metrics, and whether every line is valid exposition text.
std::vector<std::string> request_series(int port, std::string* invalid_lines) {
  const Response r = round_trip(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
  EXPECT_EQ(r.status, 200) << r;
  static const std::regex sample(
      R"(^[a-zA-Z_:][a-zA-Z0-9_:]*)"
      R"((\{[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*")*\})?)"
      R"( (-?[0-9][0-9.eE+-]*|[+-]Inf|NaN)$)");
  std::vector<std::string> series;
  std::istringstream lines(r.body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    if (!std::regex_match(line, sample)) *invalid_lines += line + "\n";
    if (line.rfind("mmsearch_http_requests_total{", 0) == 0) {
      series.push_back(line.substr(0, line.rfind(' ')));
    }
  }
  return series;
}

// Made-up and malformed methods, paths with quotes and plain garbage: each is answered (or
// closed), and /metrics gains no series for them; every label stays in the route table's and
// HTTP's vocabulary, and the output stays valid.
TEST_F(HostileClientTest, MalformedRequestLinesMintNoMetricSeries) {
  std::string invalid;
  const std::vector<std::string> before = request_series(port(), &invalid);
  EXPECT_EQ(invalid, "");
  RssWatch rss(pid());
  int answered = 0;
  for (int i = 0; i < 300; ++i) {
    const std::string n = std::to_string(i);
    const std::string lines[] = {
        "FOO\"BAR" + n + " /x HTTP/1.1",    "BREW" + n + " /healthz HTTP/1.1",
        "get" + n + " /v1/search HTTP/1.1", "\x01\x02garbage\"" + n,
        "GET /x\"" + n + "\" HTTP/1.1",     "P{OST" + n + "} /metrics HTTP/1.1"};
    const Response r =
        round_trip(port(), lines[i % 6] + "\r\nHost: localhost\r\nX-N: " + n + "\r\n\r\n", 2s);
    if (r.status >= 400 && r.status < 500) ++answered;
  }
  EXPECT_EQ(answered, 300);
  EXPECT_TRUE(rss_bounded(rss));
  const std::vector<std::string> after = request_series(port(), &invalid);
  EXPECT_EQ(invalid, "") << "invalid exposition lines";
  const std::set<std::string> methods = {"GET",     "HEAD",  "POST",  "PUT",   "DELETE", "CONNECT",
                                         "OPTIONS", "TRACE", "PATCH", "other", "-"};
  static const std::regex labels(R"re(route="([^"]*)",method="([^"]*)",status="[0-9]{3}")re");
  for (const std::string& s : after) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(s, m, labels)) << s;
    EXPECT_TRUE(methods.count(m[2].str())) << s;
    EXPECT_TRUE(m[1].str() == "unmatched" || m[1].str().rfind("/", 0) == 0) << s;
    for (const char* made_up : {"FOO", "BREW", "get", "garbage", "x\\\"", "P{OST", "/x"}) {
      EXPECT_EQ(s.find(made_up), std::string::npos) << s;
    }
  }
  EXPECT_LE(after.size(), before.size() + 10)
      << "300 bad requests made " << after.size() - before.size() << " new series";
}

// --- Host, CORS, Expect ---------------------------------------------------------------------

// On a loopback bind, only loopback names are served (DNS rebinding); a request without Host
// (HTTP/1.0 tools) is served.
TEST_F(HostileClientTest, ForeignHostIsMisdirected421OnLoopback) {
  for (const std::string host :
       {"evil.example", "evil.example:80", "localhost:abc", "localhost.evil.example"}) {
    SCOPED_TRACE(host);
    Conn c(port());
    ASSERT_TRUE(c.send_all("GET /healthz HTTP/1.1\r\nHost: " + host + "\r\n\r\n"));
    const Response r = c.read_response(2s);
    EXPECT_EQ(r.status, 421) << r;
    EXPECT_NE(r.error_message().find(host), std::string::npos) << r;
    EXPECT_TRUE(c.closed_within(3s));
  }
  // Refused from the header: the body of an upload is never read. (A Content-Length over the
  // core's 16 MiB is refused by the parser itself, 413, before the Host is looked at.)
  for (const auto& [framing, statuses] : std::vector<std::pair<std::string, std::set<int>>>{
           {"Transfer-Encoding: chunked\r\n\r\n", {421}},
           {"Content-Length: " + std::to_string(300 * kMiB) + "\r\n\r\n", {421, 413}}}) {
    SCOPED_TRACE(framing);
    const Streamed s = expect_refused_while_streaming(
        port(), pid(),
        "POST /v1/search/image HTTP/1.1\r\nHost: evil.example\r\nContent-Type: image/jpeg\r\n" +
            framing,
        kChunk, 300 * kMiB, statuses);
    EXPECT_LT(s.sent, 100 * kMiB) << "the server read the body of a misdirected request";
  }
  const std::string p = std::to_string(port());
  for (const std::string& raw :
       std::vector<std::string>{"GET /healthz HTTP/1.1\r\nHost: localhost:" + p + "\r\n\r\n",
                                "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:" + p + "\r\n\r\n",
                                "GET /healthz HTTP/1.1\r\nHost: LOCALHOST\r\n\r\n",
                                std::string("GET /healthz HTTP/1.0\r\n\r\n"),
                                std::string("GET /healthz HTTP/1.1\r\n\r\n")}) {
    SCOPED_TRACE(raw);
    EXPECT_EQ(round_trip(port(), raw).status, 200);
  }
}

// Two Host fields make the request's target ambiguous (a proxy may route by one, the server
// check the other): RFC 9112 3.2 requires 400, whichever comes first.
TEST_F(HostileClientTest, DuplicateHostHeadersAreRefused) {
  for (const std::string hosts :
       {"Host: localhost\r\nHost: evil.example\r\n", "Host: evil.example\r\nHost: localhost\r\n",
        "Host: localhost\r\nHost: localhost:1\r\n"}) {
    SCOPED_TRACE(hosts);
    Conn c(port());
    ASSERT_TRUE(c.send_all("GET /healthz HTTP/1.1\r\n" + hosts + "\r\n"));
    const Response r = c.read_response(2s);
    EXPECT_TRUE(r.status == 400 || r.status == 421) << r;
    EXPECT_TRUE(c.closed_within(3s));
  }
}

TEST_F(HostileClientTest, AllowHostAddsANameToServe) {
  const auto server = start({"--allow-host", "evil.example"}, "allow_host.log");
  for (const char* host : {"evil.example", "EVIL.example:8080", "localhost"}) {
    EXPECT_EQ(
        round_trip(server->port, std::string("GET /healthz HTTP/1.1\r\nHost: ") + host + "\r\n\r\n")
            .status,
        200)
        << host;
  }
  EXPECT_EQ(round_trip(server->port, "GET /healthz HTTP/1.1\r\nHost: other.example\r\n\r\n").status,
            421);
}

TEST_F(HostileClientTest, NoCorsHeadersWithoutCorsOrigin) {
  const Response r = round_trip(
      port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\nOrigin: https://a.example\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.count("access-control-allow-origin"), 0u);
  // No preflight answer either: OPTIONS is not a method of the route.
  const Response preflight = round_trip(
      port(),
      "OPTIONS /v1/search/text HTTP/1.1\r\nHost: localhost\r\nOrigin: https://a.example\r\n"
      "Access-Control-Request-Method: POST\r\n\r\n");
  EXPECT_EQ(preflight.status, 405) << preflight;
  EXPECT_EQ(preflight.headers.count("access-control-allow-origin"), 0u);
}

TEST_F(HostileClientTest, CorsOriginIsAllowedAndPreflightsAreAnswered) {
  const auto server =
      start({"--cors-origin", "https://a.example", "--api-key", "s3cret"}, "cors.log");
  const std::string origin = "Origin: https://a.example\r\n";
  // A preflight carries no key (browsers never send one): 204 with the methods and headers.
  const Response preflight = round_trip(
      server->port, "OPTIONS /v1/search/text HTTP/1.1\r\nHost: localhost\r\n" + origin +
                        "Access-Control-Request-Method: POST\r\n"
                        "Access-Control-Request-Headers: authorization, content-type\r\n\r\n");
  EXPECT_EQ(preflight.status, 204) << preflight;
  EXPECT_EQ(preflight.header("access-control-allow-origin"), "https://a.example");
  EXPECT_NE(preflight.header("access-control-allow-methods").find("POST"), std::string::npos);
  const std::string allowed = lower(preflight.header("access-control-allow-headers"));
  EXPECT_NE(allowed.find("authorization"), std::string::npos) << allowed;
  EXPECT_NE(allowed.find("content-type"), std::string::npos) << allowed;
  // Answers, errors included, carry the origin so that the page can read them.
  const std::string search = R"({"query": "a red circle", "k": 2})";
  for (const auto& [req, status] : std::vector<std::pair<std::string, int>>{
           {"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + origin + "\r\n", 200},
           {"GET /no/such HTTP/1.1\r\nHost: localhost\r\n" + origin + "\r\n", 404},
           {request("POST", "/v1/search/text", search, origin), 401},
           {request("POST", "/v1/search/text", search, origin + "Authorization: Bearer s3cret\r\n"),
            200}}) {
    SCOPED_TRACE(req);
    const Response r = round_trip(server->port, req);
    EXPECT_EQ(r.status, status) << r;
    EXPECT_EQ(r.header("access-control-allow-origin"), "https://a.example");
  }
}

TEST_F(HostileClientTest, ExpectContinueGets100ThenTheAnswer) {
  const std::string jpeg = read_file(dir_ / "photos/img2.jpg");
  Conn c(port());
  ASSERT_TRUE(c.send_all(
      "POST /v1/search/image?k=2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
      "Expect: 100-continue\r\nContent-Length: " +
      std::to_string(jpeg.size()) + "\r\n\r\n"));
  const Response interim = c.read_response(2s);
  ASSERT_EQ(interim.status, 100) << interim;
  ASSERT_TRUE(c.send_all(jpeg));
  const Response r = c.read_response(10s);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(json::parse(r.body)["results"].size(), 2u);

  // Over the limit, the answer is 413 at once, never 100 Continue.
  RssWatch rss(pid());
  Conn big(port());
  ASSERT_TRUE(big.send_all(
      "POST /v1/search/image HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
      "Expect: 100-continue\r\nContent-Length: " +
      std::to_string(300 * kMiB) + "\r\n\r\n"));
  const Response refused = big.read_response(2s);
  EXPECT_EQ(refused.status, 413) << refused;
  EXPECT_TRUE(big.closed_within(3s));
  EXPECT_TRUE(rss_bounded(rss));
}

// --- Queries, texts and images --------------------------------------------------------------

// 10,800 terms in the query syntax (or as "terms") are refused at once with the bound.
TEST_F(HostileClientTest, CompoundQueryOfTenThousandTermsIsRefusedFast) {
  std::string query = "a";
  for (int i = 1; i < 10800; ++i) query += " + a";
  json terms = json::array();
  for (int i = 0; i < 10800; ++i) terms.push_back({{"text", "a"}});
  for (const json& body : {json{{"query", query}}, json{{"terms", terms}}}) {
    RssWatch rss(pid());
    const auto t0 = Clock::now();
    const Response r = round_trip(port(), request("POST", "/v1/search", body.dump()));
    const double took = seconds_since(t0);
    EXPECT_EQ(r.status, 400) << r;
    EXPECT_NE(r.error_message().find("at most 16 terms"), std::string::npos) << r;
    EXPECT_LT(took, kRefuseSeconds);
    EXPECT_TRUE(rss_bounded(rss));
  }
}

// A text over the model's text.max_tokens is refused (413), never cut, on every route that
// embeds a text, from 1 KB up to the 64 KiB a text may have; a short one is served.
TEST_F(HostileClientTest, TextOverMaxTokensIsRefused413) {
  for (const int repeats : {100, 5800}) {  // 1.1 KB and 63.8 KB: hundreds to ~20k tokens
    std::string text;
    for (int i = 0; i < repeats; ++i) text += "red circle ";
    for (const auto& [path, body] : std::vector<std::pair<std::string, json>>{
             {"/v1/search/text", {{"query", text}}},
             {"/v1/embed/text", {{"text", text}}},
             {"/v1/search", {{"query", "\"" + text + "\""}}},
             {"/v1/search", {{"terms", {{{"text", text}}}}}}}) {
      SCOPED_TRACE(path + " " + body.dump().substr(0, 40) + " " + std::to_string(text.size()));
      RssWatch rss(pid());
      const auto t0 = Clock::now();
      const Response r = round_trip(port(), request("POST", path, body.dump()));
      EXPECT_EQ(r.status, 413) << r;
      EXPECT_NE(r.error_message().find("text.max_tokens"), std::string::npos) << r;
      EXPECT_NE(r.error_message().find(std::to_string(kMaxTokens)), std::string::npos) << r;
      EXPECT_LT(seconds_since(t0), kRefuseSeconds);
      EXPECT_TRUE(rss_bounded(rss));
    }
  }
  EXPECT_EQ(
      round_trip(port(), request("POST", "/v1/search/text", R"({"query": "red circle"})")).status,
      200);
}

// An 8000 x 8000 16-bit RGBA PNG is 3 MB on the wire and 512 MB decoded: refused (413) from
// its header, over the upload pixel bound, whether raw, in a multipart field or to be embedded.
TEST_F(HostileClientTest, HugePngUploadIsRefused413BeforeDecoding) {
  const std::string png = rgba16_png(8000);
  ASSERT_LT(png.size(), size_t{4} << 20);
  const std::string multipart =
      "--b0undary\r\nContent-Disposition: form-data; name=\"image\"; "
      "filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n" +
      png + "\r\n--b0undary--\r\n";
  for (const std::string& req :
       std::vector<std::string>{request("POST", "/v1/search/image", png, "", "image/png"),
                                request("POST", "/v1/embed/image", png, "", "image/png"),
                                request("POST", "/v1/search/image?k=3", multipart, "",
                                        "multipart/form-data; boundary=b0undary")}) {
    SCOPED_TRACE(req.substr(0, 40));
    RssWatch rss(pid());
    const auto t0 = Clock::now();
    const Response r = round_trip(port(), req);
    const double took = seconds_since(t0);
    EXPECT_TRUE(rss_bounded(rss));
    EXPECT_EQ(r.status, 413) << r;
    EXPECT_NE(r.error_message().find("8000x8000"), std::string::npos) << r;
    EXPECT_LT(took, kRefuseSeconds);
  }
}

}  // namespace
