// Sliding-window attention must be exactly full attention restricted to the same band.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "encoders/nn/attention.h"

namespace {

using mms::nn::band_attention_reference;
using mms::nn::sliding_window_attention;

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST(SlidingWindowAttention, EqualsBandMaskedFullAttentionForManyLengthsAndWindows) {
  torch::manual_seed(1);
  for (int64_t window : {1, 3, 8, 32}) {
    for (int64_t n = 1; n <= 512; n += (n < 40 ? 1 : 37)) {
      auto q = torch::randn({2, 3, n, 16}), k = torch::randn({2, 3, n, 16}),
           v = torch::randn({2, 3, n, 16});
      auto fast = sliding_window_attention(q, k, v, window, {});
      auto ref = band_attention_reference(q, k, v, window, {});
      ASSERT_EQ(fast.sizes(), ref.sizes());
      ASSERT_LE(max_abs_diff(fast, ref), 1e-4) << "n=" << n << " window=" << window;
    }
  }
}

TEST(SlidingWindowAttention, PaddedKeysAreIgnored) {
  torch::manual_seed(2);
  const int64_t n = 100, window = 8;
  auto q = torch::randn({3, 2, n, 8}), k = torch::randn({3, 2, n, 8}), v = torch::randn({3, 2, n, 8});
  auto lengths = torch::tensor({100, 57, 9});
  auto valid = torch::arange(n).unsqueeze(0) < lengths.unsqueeze(1);
  auto fast = sliding_window_attention(q, k, v, window, valid);
  auto ref = band_attention_reference(q, k, v, window, valid);
  EXPECT_LE(max_abs_diff(fast, ref), 1e-4);
  // A padded row's real tokens give the same answer as the unpadded sequence alone.
  using torch::indexing::Slice;
  auto q1 = q.index({Slice(1, 2), Slice(), Slice(0, 57)});
  auto k1 = k.index({Slice(1, 2), Slice(), Slice(0, 57)});
  auto v1 = v.index({Slice(1, 2), Slice(), Slice(0, 57)});
  auto alone = sliding_window_attention(q1, k1, v1, window, {});
  EXPECT_LE(max_abs_diff(alone, fast.index({Slice(1, 2), Slice(), Slice(0, 57)})), 1e-4);
}

TEST(SlidingWindowAttention, GradientsMatchReference) {
  torch::manual_seed(3);
  auto make = [] { return torch::randn({1, 2, 70, 8}, torch::requires_grad()); };
  auto q = make(), k = make(), v = make();
  sliding_window_attention(q, k, v, 5, {}).pow(2).sum().backward();
  auto gq = q.grad().clone(), gk = k.grad().clone(), gv = v.grad().clone();
  q.grad().zero_(); k.grad().zero_(); v.grad().zero_();
  band_attention_reference(q, k, v, 5, {}).pow(2).sum().backward();
  EXPECT_LE(max_abs_diff(gq, q.grad()), 1e-4);
  EXPECT_LE(max_abs_diff(gk, k.grad()), 1e-4);
  EXPECT_LE(max_abs_diff(gv, v.grad()), 1e-4);
}

TEST(SlidingWindowAttention, FarTokensDoNotInfluenceEachOther) {
  // Changing token 90's key/value must not change the output at token 10 (window 8), while
  // changing token 0 (global) must.
  torch::manual_seed(4);
  auto q = torch::randn({1, 1, 100, 4}), k = torch::randn({1, 1, 100, 4}),
       v = torch::randn({1, 1, 100, 4});
  auto base = sliding_window_attention(q, k, v, 8, {});
  auto k2 = k.clone(), v2 = v.clone();
  k2.index_put_({0, 0, 90}, 5.0);
  v2.index_put_({0, 0, 90}, 5.0);
  auto far = sliding_window_attention(q, k2, v2, 8, {});
  EXPECT_EQ(max_abs_diff(base.index({0, 0, 10}), far.index({0, 0, 10})), 0.0);
  EXPECT_GT(max_abs_diff(base.index({0, 0, 0}), far.index({0, 0, 0})), 0.0);
  auto v3 = v.clone();
  v3.index_put_({0, 0, 0}, 5.0);
  auto global = sliding_window_attention(q, k, v3, 8, {});
  EXPECT_GT(max_abs_diff(base.index({0, 0, 10}), global.index({0, 0, 10})), 0.0);
}

}  // namespace
