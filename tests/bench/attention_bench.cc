// Benchmark: sliding-window attention against full attention under the same band mask, for
// sequence lengths 256..8192. Prints time per call (median of repeats) and the peak resident
// memory of a process that ran only that case, so the growth with length is visible:
// linear for the sliding window, quadratic for the full n x n score matrix.
//   build/attention_bench [--window 32] [--heads 4] [--head-dim 48] [--threads 1]
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "encoders/nn/attention.h"

namespace {

struct Args {
  int64_t window = 32, heads = 4, head_dim = 48, threads = 1;
};

// Runs in a fresh child process: the parent never touches LibTorch, so each child's peak
// RSS is that case's alone.
double run_case(const Args& a, int64_t n, bool sliding, int repeats) {
  torch::set_num_threads(static_cast<int>(a.threads));
  torch::NoGradGuard no_grad;
  auto q = torch::randn({1, a.heads, n, a.head_dim});
  auto k = torch::randn({1, a.heads, n, a.head_dim});
  auto v = torch::randn({1, a.heads, n, a.head_dim});
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    auto out = sliding ? mms::nn::sliding_window_attention(q, k, v, a.window, {})
                       : mms::nn::band_attention_reference(q, k, v, a.window, {});
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const int64_t value = std::atoll(argv[i + 1]);
    if (key == "--window") a.window = value;
    else if (key == "--heads") a.heads = value;
    else if (key == "--head-dim") a.head_dim = value;
    else if (key == "--threads") a.threads = value;
    else {
      std::fprintf(stderr, "attention_bench: unknown option '%s'\n", key.c_str());
      return 2;
    }
  }
  std::printf("sliding-window vs band-masked full attention: window %lld, %lld heads x %lld, %lld thread(s)\n",
              (long long)a.window, (long long)a.heads, (long long)a.head_dim, (long long)a.threads);
  std::printf("%8s %14s %14s %16s %16s\n", "length", "sliding ms", "full ms", "sliding peak MB",
              "full peak MB");
  for (int64_t n = 256; n <= 8192; n *= 2) {
    double ms[2] = {0, 0}, mb[2] = {0, 0};
    for (int mode = 0; mode < 2; ++mode) {
      int fds[2];
      if (pipe(fds) != 0) return 1;
      const pid_t pid = fork();
      if (pid == 0) {
        close(fds[0]);
        const double t = run_case(a, n, mode == 0, n >= 4096 ? 3 : 7);
        if (write(fds[1], &t, sizeof t) != sizeof t) _exit(1);
        _exit(0);
      }
      close(fds[1]);
      double t = -1;
      if (read(fds[0], &t, sizeof t) != sizeof t) t = -1;
      close(fds[0]);
      int status = 0;
      struct rusage usage {};
      wait4(pid, &status, 0, &usage);
      ms[mode] = t;
      mb[mode] = usage.ru_maxrss / 1024.0;
    }
    std::printf("%8lld %14.2f %14.2f %16.1f %16.1f\n", (long long)n, ms[0], ms[1], mb[0], mb[1]);
    std::fflush(stdout);
  }
  return 0;
}
