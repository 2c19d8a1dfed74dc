// Exact top-k inner-product search over a fixed set of key rows, fast for a few queries at a
// time: the model's memory (encoders/memory.h) looks up the nearest of ~40k keys for every
// embedding, and at batch 1 a float scan reads all of them (40 MB) for one query.
//
// The scan here reads an int8 copy of the keys (a quarter of the bytes, one scale per row)
// to bound every row's score, re-scores the best candidates from the float keys, and proves
// the result: a row left out has an upper bound below the k-th exact score. When the proof
// fails (near-ties at the boundary), the float scan answers instead. The answer is therefore
// exactly the float scan's: the same rows, the same scores up to summation order.
//
// Thread-safety: top_k is const and may run on any number of threads at once.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mms {

// The inner product of two float vectors in 16 running sums, which the compiler turns into
// AVX2 code where the CPU has it (Debian's libraries are built for the x86-64 baseline, so
// FAISS's own is a scalar loop). KeySearch re-scores with it; HNSW search uses it too
// (index/faiss_store.h use_simd_distances).
float inner_product(const float* a, const float* b, size_t n);

class KeySearch {
 public:
  // keys: [n, dim] row-major, kept by pointer (the caller keeps them alive and unchanged).
  KeySearch(const float* keys, int64_t n, int32_t dim);

  // The k best rows for query q ([dim] floats), best first, written to sims[k] and rows[k].
  // k is at most n. With `penalties` ([n], one per row), a row scores its inner product less
  // weight * penalties[row] instead (hubness-aware scoring, index/collection.h), found by the
  // same proof.
  void top_k(const float* q, int32_t k, float* sims, int64_t* rows, float weight = 0.f,
             const float* penalties = nullptr) const;

  int64_t size() const { return n_; }
  int32_t dim() const { return dim_; }
  // How many top_k calls fell back to the float scan (for tests and benchmarks).
  int64_t fallbacks() const;

 private:
  void exact_scan(const float* q, int32_t k, float* sims, int64_t* rows, float weight,
                  const float* penalties) const;

  const float* keys_;
  int64_t n_;
  int32_t dim_;
  std::vector<int8_t> quantized_;  // [n, dim]: row r is about scale_[r] * quantized row
  std::vector<float> scale_;
  std::vector<float> l1_;  // each float row's L1 norm
  mutable std::atomic<int64_t> fallbacks_{0};
};

}  // namespace mms
