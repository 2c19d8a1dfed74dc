#include "encoders/nn/attention.h"

#include <cmath>
#include <limits>

namespace mms::nn {
namespace {

using torch::indexing::None;
using torch::indexing::Slice;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Softmax attention of q against k/v with an additive-or-masked score tensor `allowed`
// broadcastable to the scores ([.., n_q, n_k] bool).
torch::Tensor masked_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& allowed) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * scale;
  if (allowed.defined()) scores = scores.masked_fill(allowed.logical_not(), kNegInf);
  return torch::matmul(torch::softmax(scores, -1), v);
}

}  // namespace

torch::Tensor full_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& key_valid) {
  torch::Tensor allowed;
  if (key_valid.defined()) allowed = key_valid.index({Slice(), None, None, Slice()});
  return masked_attention(q, k, v, allowed);
}

torch::Tensor band_attention_reference(const torch::Tensor& q, const torch::Tensor& k,
                                       const torch::Tensor& v, int64_t window,
                                       const torch::Tensor& key_valid) {
  const int64_t n = q.size(2);
  torch::Tensor pos = torch::arange(n, torch::kLong);
  torch::Tensor band = (pos.unsqueeze(1) - pos.unsqueeze(0)).abs() <= window;
  band.index_put_({0}, true);
  band.index_put_({Slice(), 0}, true);
  torch::Tensor allowed = band.unsqueeze(0).unsqueeze(0);  // [1, 1, n, n]
  if (key_valid.defined()) {
    allowed = allowed.logical_and(key_valid.index({Slice(), None, None, Slice()}));
  }
  return masked_attention(q, k, v, allowed);
}

torch::Tensor sliding_window_attention(const torch::Tensor& q, const torch::Tensor& k,
                                       const torch::Tensor& v, int64_t window,
                                       const torch::Tensor& key_valid) {
  TORCH_CHECK(window >= 1, "sliding_window_attention: window must be >= 1");
  const int64_t batch = q.size(0), heads = q.size(1), n = q.size(2), dim = q.size(3);
  torch::Tensor valid = key_valid.defined()
                            ? key_valid
                            : torch::ones({batch, n}, torch::TensorOptions().dtype(torch::kBool));
  // When the band already covers every pair, banded and full attention are the same
  // function; one dense block is then the cheapest exact computation.
  if (n <= window + 1) return full_attention(q, k, v, valid);

  const int64_t w = window;
  const int64_t blocks = (n + w - 1) / w;
  const int64_t padded = blocks * w;
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));

  // Keys and values padded by one block on each side (plus the tail up to a whole block),
  // so query block b sees key blocks b-1, b, b+1 as one window of 3w keys.
  auto pad_seq = [&](const torch::Tensor& t) {
    return torch::constant_pad_nd(t, {0, 0, w, padded - n + w});
  };
  auto windows_of = [&](const torch::Tensor& t) {  // [B, H, P + 2w, D] -> [B, H, nb, 3w, D]
    return t.unfold(2, 3 * w, w).transpose(-2, -1);
  };
  const torch::Tensor k_win = windows_of(pad_seq(k));
  const torch::Tensor v_win = windows_of(pad_seq(v));
  const torch::Tensor q_blocks = torch::constant_pad_nd(q, {0, 0, 0, padded - n})
                                     .view({batch, heads, blocks, w, dim});

  // Which of the 3w keys each query may see: inside the band, a real token, and not the
  // global token (that one enters once, through its own column below).
  torch::Tensor key_ok = torch::constant_pad_nd(valid, {w, padded - n + w}, 0);
  key_ok = key_ok.clone();
  key_ok.index_put_({Slice(), w}, false);                    // global token's slot
  key_ok = key_ok.unfold(1, 3 * w, w);                       // [B, nb, 3w]
  torch::Tensor r = torch::arange(w, torch::kLong).unsqueeze(1);
  torch::Tensor c = torch::arange(3 * w, torch::kLong).unsqueeze(0);
  torch::Tensor in_band = (c >= r).logical_and(c <= r + 2 * w);  // |i - j| <= w
  torch::Tensor band_ok = in_band.index({None, None, Slice(), Slice()})
                              .logical_and(key_ok.unsqueeze(2))  // [B, nb, w, 3w]
                              .unsqueeze(1);                     // [B, 1, nb, w, 3w]

  torch::Tensor band_scores = torch::matmul(q_blocks, k_win.transpose(-2, -1)) * scale;
  band_scores = band_scores.masked_fill(band_ok.logical_not(), kNegInf);
  const torch::Tensor k0 = k.index({Slice(), Slice(), Slice(0, 1)});  // [B, H, 1, D]
  const torch::Tensor v0 = v.index({Slice(), Slice(), Slice(0, 1)});
  torch::Tensor global_scores =
      torch::matmul(q_blocks, k0.unsqueeze(2).transpose(-2, -1)) * scale;  // [B, H, nb, w, 1]

  torch::Tensor probs = torch::softmax(torch::cat({band_scores, global_scores}, -1), -1);
  torch::Tensor out = torch::matmul(probs.index({"...", Slice(0, 3 * w)}), v_win) +
                      probs.index({"...", Slice(3 * w, None)}) * v0.unsqueeze(2);
  out = out.reshape({batch, heads, padded, dim}).index({Slice(), Slice(), Slice(1, n)});

  // The global token's own row sees every real token: one O(n) row.
  const torch::Tensor q0 = q.index({Slice(), Slice(), Slice(0, 1)});
  const torch::Tensor row0 = full_attention(q0, k, v, valid);
  return torch::cat({row0, out}, 2);
}

}  // namespace mms::nn
