// KeySearch as the model's memory calls it: the k nearest keys of a query, which must be
// exactly what a float scan over every key gives (the same rows in the same order, the same
// scores up to summation order), whether the quantized bound proves the answer or the
// search falls back to the scan.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "common/error.h"
#include "encoders/key_search.h"

namespace {

std::vector<float> unit(std::vector<float> v) {
  float n = 0;
  for (float x : v) n += x * x;
  for (float& x : v) x /= std::sqrt(n);
  return v;
}

// Keys in clusters around a few centres (as caption embeddings are), unit rows [n, dim].
std::vector<float> clustered_keys(int64_t n, int32_t dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<std::vector<float>> centres(40);
  for (auto& c : centres) {
    c.resize(dim);
    for (float& x : c) x = normal(rng);
  }
  std::vector<float> keys;
  for (int64_t r = 0; r < n; ++r) {
    std::vector<float> v = centres[rng() % centres.size()];
    for (float& x : v) x += 0.6f * normal(rng);
    for (float x : unit(v)) keys.push_back(x);
  }
  return keys;
}

// The reference: every key scored in double, the k best.
std::vector<std::pair<double, int64_t>> brute_force(const std::vector<float>& keys, int32_t dim,
                                                    const float* q, int32_t k) {
  std::vector<std::pair<double, int64_t>> all;
  for (int64_t r = 0; r < static_cast<int64_t>(keys.size()) / dim; ++r) {
    double s = 0;
    for (int32_t i = 0; i < dim; ++i) s += double(q[i]) * keys[r * dim + i];
    all.emplace_back(s, r);
  }
  std::partial_sort(all.begin(), all.begin() + k, all.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
  all.resize(k);
  return all;
}

TEST(KeySearch, FindsExactlyTheNearestKeysOfAFloatScan) {
  const int32_t dim = 64;
  const int64_t n = 5000;
  const std::vector<float> keys = clustered_keys(n, dim, 3);
  const mms::KeySearch search(keys.data(), n, dim);
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal;
  for (int trial = 0; trial < 200; ++trial) {
    // Half the queries are near a key (as a query and its own caption are), half anywhere.
    std::vector<float> q(dim);
    const int64_t near = static_cast<int64_t>(rng() % n);
    for (int32_t i = 0; i < dim; ++i) {
      q[i] = (trial % 2 ? keys[near * dim + i] : 0.f) + 0.3f * normal(rng);
    }
    q = unit(q);
    for (int32_t k : {1, 3, 10}) {
      std::vector<float> sims(k);
      std::vector<int64_t> rows(k);
      search.top_k(q.data(), k, sims.data(), rows.data());
      const auto want = brute_force(keys, dim, q.data(), k);
      for (int32_t i = 0; i < k; ++i) {
        EXPECT_EQ(rows[i], want[i].second) << "trial " << trial << " k " << k << " rank " << i;
        EXPECT_NEAR(sims[i], want[i].first, 1e-5);
      }
    }
  }
  // The bound proves nearly every answer; the scan is the exception.
  EXPECT_LT(search.fallbacks(), 60) << "of 600 searches";
}

TEST(KeySearch, PenalizedScoresAreFoundExactlyToo) {
  // Hubness-aware scoring: a row scores q.k - weight * penalty[row]. Penalties large enough
  // to reorder most answers (the rows nearest a query's cluster carry the heaviest).
  const int32_t dim = 64;
  const int64_t n = 5000;
  const std::vector<float> keys = clustered_keys(n, dim, 5);
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> penalties(n);
  for (float& p : penalties) p = u(rng);
  const mms::KeySearch search(keys.data(), n, dim);
  std::normal_distribution<float> normal;
  int reordered = 0;
  for (int trial = 0; trial < 100; ++trial) {
    std::vector<float> q(dim);
    const int64_t near = static_cast<int64_t>(rng() % n);
    for (int32_t i = 0; i < dim; ++i) q[i] = keys[near * dim + i] + 0.3f * normal(rng);
    q = unit(q);
    for (const float weight : {0.2f, 1.f}) {
      const int32_t k = 10;
      std::vector<std::pair<double, int64_t>> want;
      for (int64_t r = 0; r < n; ++r) {
        double s = 0.0;
        for (int32_t i = 0; i < dim; ++i) s += double(q[i]) * keys[r * dim + i];
        want.emplace_back(s - double(weight) * penalties[r], r);
      }
      std::partial_sort(want.begin(), want.begin() + k, want.end(),
                        [](const auto& a, const auto& b) { return a.first > b.first; });
      std::vector<float> sims(k);
      std::vector<int64_t> rows(k);
      search.top_k(q.data(), k, sims.data(), rows.data(), weight, penalties.data());
      for (int32_t i = 0; i < k; ++i) {
        // (rows whose scores tie within float rounding may come in either order)
        if (i + 1 < k && want[i].first - want[i + 1].first < 1e-6) continue;
        if (i > 0 && want[i - 1].first - want[i].first < 1e-6) continue;
        EXPECT_EQ(rows[i], want[i].second) << "trial " << trial << " weight " << weight;
        EXPECT_NEAR(sims[i], want[i].first, 1e-5);
      }
      const auto plain = brute_force(keys, dim, q.data(), k);
      reordered += plain[0].second != rows[0];
    }
  }
  EXPECT_GT(reordered, 50) << "the penalties should change most answers' first row";
}

TEST(KeySearch, TiesAtTheBoundaryFallBackToTheScan) {
  // Every key is the same row: no bound can separate them, so the scan answers.
  const int32_t dim = 16;
  const int64_t n = 1000;
  const std::vector<float> row = unit(std::vector<float>(dim, 1.f));
  std::vector<float> keys;
  for (int64_t r = 0; r < n; ++r) keys.insert(keys.end(), row.begin(), row.end());
  const mms::KeySearch search(keys.data(), n, dim);
  float sims[3];
  int64_t rows[3];
  search.top_k(row.data(), 3, sims, rows);
  EXPECT_EQ(search.fallbacks(), 1);
  for (float s : sims) EXPECT_NEAR(s, 1.f, 1e-5);
}

TEST(KeySearch, RefusesAKOutsideTheKeys) {
  const std::vector<float> keys = clustered_keys(10, 8, 1);
  const mms::KeySearch search(keys.data(), 10, 8);
  float sims[11];
  int64_t rows[11];
  EXPECT_THROW(search.top_k(keys.data(), 11, sims, rows), mms::Error);
  EXPECT_THROW(search.top_k(keys.data(), 0, sims, rows), mms::Error);
  EXPECT_THROW(mms::KeySearch(keys.data(), 0, 8), mms::Error);
}

}  // namespace
