// Timing for the benchmark programs: the median wall time of several calls.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace mms::bench {

// Median seconds of `repeats` calls of f (after `warmup` untimed calls).
template <typename F>
double median_seconds(int repeats, F&& f, int warmup = 0) {
  for (int w = 0; w < warmup; ++w) f();
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace mms::bench
