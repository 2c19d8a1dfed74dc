#include "encoders/key_search.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"

// The AVX2 and default clones of the inner loops below, picked once at load time by an ifunc
// resolver. Under ThreadSanitizer there is one plain version: the resolver runs while the
// dynamic loader relocates the program, before the TSan runtime is up, and its instrumented
// entry crashed every TSan-built program at start.
#if defined(__SANITIZE_THREAD__)
#define MMS_SIMD_CLONES
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MMS_SIMD_CLONES
#endif
#endif
#ifndef MMS_SIMD_CLONES
#define MMS_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#endif

namespace mms {
namespace {

// The integer inner product of a query and an int8 row. GCC turns the loop into 16-bit
// multiply-adds (vpmaddwd) in the AVX2 clone; the default clone serves older CPUs.
MMS_SIMD_CLONES int32_t int_dot(const int16_t* a, const int8_t* b, int32_t n) {
  int32_t s = 0;
  for (int32_t i = 0; i < n; ++i) s += int32_t{a[i]} * int32_t{b[i]};
  return s;
}

float float_dot(const float* a, const float* b, int32_t n) {
  return inner_product(a, b, static_cast<size_t>(n));
}

// Scores differ by summation order between scans (and from a BLAS product): bounds are
// widened by this much, far above float rounding on unit vectors.
constexpr float kSlack = 1e-4f;

}  // namespace

MMS_SIMD_CLONES float inner_product(const float* a, const float* b, size_t n) {
  float sums[16] = {};
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (size_t j = 0; j < 16; ++j) sums[j] += a[i + j] * b[i + j];
  }
  float s = 0.f;
  for (float x : sums) s += x;
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

KeySearch::KeySearch(const float* keys, int64_t n, int32_t dim)
    : keys_(keys), n_(n), dim_(dim), quantized_(static_cast<size_t>(n) * dim), scale_(n), l1_(n) {
  if (n < 1 || dim < 1) throw Error::invalid_argument("KeySearch needs at least one key row");
  for (int64_t r = 0; r < n; ++r) {
    const float* row = keys + r * dim;
    float max_abs = 0.f, l1 = 0.f;
    for (int32_t i = 0; i < dim; ++i) {
      max_abs = std::max(max_abs, std::fabs(row[i]));
      l1 += std::fabs(row[i]);
    }
    const float scale = max_abs > 0.f ? max_abs / 127.f : 1.f;
    scale_[r] = scale;
    l1_[r] = l1;
    for (int32_t i = 0; i < dim; ++i) {
      quantized_[r * dim + i] = static_cast<int8_t>(std::lround(row[i] / scale));
    }
  }
}

int64_t KeySearch::fallbacks() const {
  return fallbacks_.load();
}

void KeySearch::exact_scan(const float* q, int32_t k, float* sims, int64_t* rows, float weight,
                           const float* penalties) const {
  thread_local std::vector<std::pair<float, int64_t>> scored;
  scored.resize(static_cast<size_t>(n_));
  for (int64_t r = 0; r < n_; ++r) {
    const float s = float_dot(q, keys_ + r * dim_, dim_);
    scored[r] = {penalties ? s - weight * penalties[r] : s, r};
  }
  std::partial_sort(scored.begin(), scored.begin() + k, scored.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
  for (int32_t i = 0; i < k; ++i) {
    sims[i] = scored[i].first;
    rows[i] = scored[i].second;
  }
}

void KeySearch::top_k(const float* q, int32_t k, float* sims, int64_t* rows, float weight,
                      const float* penalties) const {
  if (k < 1 || k > n_) throw Error::invalid_argument("KeySearch: k is outside 1..n");
  if (weight == 0.f) penalties = nullptr;
  const int64_t candidates = std::max<int64_t>(4 * k, 32);
  if (n_ < 8 * candidates) return exact_scan(q, k, sims, rows, weight, penalties);

  // The query in 16 bits: q ~ q_scale * q16, off by at most q_scale / 2 a component.
  float q_max = 0.f, q_l1 = 0.f;
  for (int32_t i = 0; i < dim_; ++i) {
    q_max = std::max(q_max, std::fabs(q[i]));
    q_l1 += std::fabs(q[i]);
  }
  if (!(q_max > 0.f) || !std::isfinite(q_l1))
    return exact_scan(q, k, sims, rows, weight, penalties);
  const float q_scale = q_max / 32767.f;
  thread_local std::vector<int16_t> q16;
  q16.resize(static_cast<size_t>(dim_));
  for (int32_t i = 0; i < dim_; ++i) q16[i] = static_cast<int16_t>(std::lround(q[i] / q_scale));

  // Every row's upper bound: the quantized score plus what quantization can hide,
  // |q.k - q_scale*s_r*(q16.k8)| <= s_r/2*|q|_1 + q_scale/2*|k_r|_1 + dim*q_scale*s_r/4.
  thread_local std::vector<float> upper;
  thread_local std::vector<int64_t> order;
  upper.resize(static_cast<size_t>(n_));
  for (int64_t r = 0; r < n_; ++r) {
    const float s = scale_[r];
    const float approx =
        q_scale * s * static_cast<float>(int_dot(q16.data(), &quantized_[r * dim_], dim_));
    upper[r] = approx + 0.5f * s * q_l1 + 0.5f * q_scale * l1_[r] +
               0.25f * static_cast<float>(dim_) * q_scale * s + kSlack;
    if (penalties) upper[r] -= weight * penalties[r];
  }
  order.resize(static_cast<size_t>(n_));
  std::iota(order.begin(), order.end(), int64_t{0});
  auto higher_bound = [](int64_t a, int64_t b) { return upper[a] > upper[b]; };
  // Candidates by bound, re-scored in float; when the proof fails, four times as many (the
  // ones already scored are kept), up to an eighth of the rows, then the float scan.
  thread_local std::vector<std::pair<float, int64_t>> scored, best;
  scored.clear();
  int64_t done = 0;
  for (int64_t c = candidates; c <= n_ / 8; c *= 4) {
    std::nth_element(order.begin() + done, order.begin() + c, order.end(), higher_bound);
    for (int64_t i = done; i < c; ++i) {
      const int64_t r = order[i];
      const float score = float_dot(q, keys_ + r * dim_, dim_);
      scored.emplace_back(penalties ? score - weight * penalties[r] : score, r);
    }
    done = c;
    // No row outside the first c scores above this bound (nth_element puts the largest of
    // the rest at c).
    const float outside = upper[order[c]];
    best.assign(scored.begin(), scored.end());
    std::partial_sort(best.begin(), best.begin() + k, best.end(),
                      [](const auto& a, const auto& b) { return a.first > b.first; });
    if (outside < best[k - 1].first - kSlack) {
      for (int32_t i = 0; i < k; ++i) {
        sims[i] = best[i].first;
        rows[i] = best[i].second;
      }
      return;
    }
  }
  fallbacks_.fetch_add(1);
  exact_scan(q, k, sims, rows, weight, penalties);
}

}  // namespace mms
