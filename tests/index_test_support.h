// Test support for the index and service tests: a tiny randomly initialized MODEL_DIR (so
// tests do not depend on the shipped model), small generated images, and the program itself
// run once or as a `mmsearch serve` on a free loopback port.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "encoders/image_io.h"
#include "encoders/model_config.h"
#include "encoders/nn/dual_encoder.h"
#include "encoders/nn/weights.h"
#include "tokenizer/tokenizer.h"

namespace mms::testing {

// Writes config.json, model.safetensors and tokenizer.model of a small random model into
// `dir`. Different seeds give different fingerprints.
inline void make_tiny_model(const std::filesystem::path& dir, uint64_t seed = 1) {
  std::filesystem::create_directories(dir);
  {
    std::ofstream corpus(dir / "corpus.txt");
    for (int i = 0; i < 50; ++i)
      corpus << "a red circle\na blue square on white\nthe green star " << i << "\n";
  }
  TokenizerTrainOptions tok;
  tok.corpus_path = (dir / "corpus.txt").string();
  tok.vocab_size = 36;  // the corpus has 32 characters and room for a few pieces
  tok.out_path = (dir / "tokenizer.model").string();
  train_tokenizer(tok);
  ModelConfig c;
  c.image.image_size = 32;
  c.image.stem_channels = {8, 16};
  c.image.width = 32;
  c.image.depth = 1;
  c.image.heads = 2;
  c.text.vocab_size = Tokenizer::load(tok.out_path).vocab_size();
  c.text.width = 32;
  c.text.depth = 1;
  c.text.heads = 2;
  c.text.window = 8;
  c.embed_dim = 16;
  std::ofstream(dir / "config.json") << model_config_to_json(c);
  torch::manual_seed(seed);
  nn::DualEncoder model(c);
  write_safetensors((dir / "model.safetensors").string(), nn::model_to_safetensors(model));
}

// A w x h JPEG of two colours split at a position that depends on `variant`.
inline void write_test_jpeg(const std::filesystem::path& path, int variant, int w = 40,
                            int h = 30) {
  DecodedImage img;
  img.width = w;
  img.height = h;
  img.rgb.resize(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const bool left = x < (variant * 7) % w;
      uint8_t* p = &img.rgb[(size_t(y) * w + x) * 3];
      p[0] = left ? 200 : uint8_t(variant * 37);
      p[1] = left ? uint8_t(variant * 11) : 90;
      p[2] = uint8_t((variant * 53 + y) % 256);
    }
  }
  const auto jpeg = encode_jpeg_thumbnail(img, std::max(w, h), 90);
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(jpeg.data()), jpeg.size());
}

// The built program, for tests named *_cli_test.cc (which depend on it).
inline const std::string kProgram = std::string(MMS_BINARY_DIR) + "/mmsearch";

// Runs a shell command line; returns {exit code, stdout}.
inline std::pair<int, std::string> run_command(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Runs `mmsearch ARGS` (stderr discarded); returns {exit code, stdout}.
inline std::pair<int, std::string> run_program(const std::string& args) {
  return run_command(kProgram + " " + args + " 2>/dev/null");
}

inline sockaddr_in loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  return addr;
}

// A loopback port that was free a moment ago (the kernel picks it; another process could
// still take it before the server binds, which a test then reports as a server not up).
inline int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = loopback(0);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// The status code of `GET path` on 127.0.0.1:port, or 0 when nothing answers within a
// second. Plain sockets: the index tests that include this header do not link cpp-httplib.
inline int http_get_status(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  const timeval second{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &second, sizeof second);
  const sockaddr_in addr = loopback(port);
  const std::string request = "GET " + path + " HTTP/1.0\r\n\r\n";
  char head[13] = {};  // "HTTP/1.1 200" and a terminating zero
  const bool answered =
      connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 &&
      send(fd, request.data(), request.size(), MSG_NOSIGNAL) == ssize_t(request.size()) &&
      recv(fd, head, 12, MSG_WAITALL) == 12;
  close(fd);
  return answered ? std::atoi(head + 9) : 0;
}

// `mmsearch serve ARGS --port P` on a free loopback port, its stderr written to `log`. The
// constructor waits (up to 30 s) for GET /healthz to answer 200; up() tells whether it did.
// Stopped with SIGTERM, and reaped, by stop() or on destruction.
class ServeProcess {
 public:
  ServeProcess(std::vector<std::string> args, const std::filesystem::path& log)
      : port_(free_port()) {
    args.insert(args.begin(), {kProgram, "serve"});
    args.insert(args.end(), {"--port", std::to_string(port_)});
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {  // only async-signal-safe calls between fork and exec
      // If the test dies, so does its server: an orphan would hold ctest's output pipe open.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) dup2(fd, STDERR_FILENO);
      execv(kProgram.c_str(), argv.data());
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!up_ && std::chrono::steady_clock::now() < deadline) {
      up_ = http_get_status(port_, "/healthz") == 200;
      if (!up_) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;
  ~ServeProcess() { stop(); }

  bool up() const { return up_; }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }  // for signals; -1 once stopped

  // Sends SIGTERM; returns the exit status (or -1 when killed by a signal or already stopped).
  int stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  int port_;
  pid_t pid_ = -1;
  bool up_ = false;
};

}  // namespace mms::testing
