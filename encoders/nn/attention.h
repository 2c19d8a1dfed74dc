// Attention kernels shared by both towers. Internal to encoders/ (LibTorch types): include
// only from .cc files and tests, never from a public header.
//
// Sliding-window attention is Longformer-style: token i attends to every token j with
// |i - j| <= window, token 0 (the global token) attends to all tokens and is attended by all.
// It is computed blockwise, so time and memory grow as O(n * window), never O(n^2).
#pragma once

#include <torch/torch.h>

namespace mms::nn {

// Full softmax attention. q, k, v: [batch, heads, n, head_dim]; key_valid: [batch, n] bool
// (true = a real token) or an undefined tensor for "all valid". Returns [batch, heads, n,
// head_dim].
torch::Tensor full_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& key_valid);

// Sliding-window attention with a global token 0, computed in blocks of `window` queries
// against the three neighbouring key blocks plus the global key. Shapes as full_attention;
// key_valid must be true at position 0 of every row (the global token is never padding).
torch::Tensor sliding_window_attention(const torch::Tensor& q, const torch::Tensor& k,
                                       const torch::Tensor& v, int64_t window,
                                       const torch::Tensor& key_valid);

// The same function computed the obvious way: full attention under an [n, n] band mask.
// O(n^2); exists to test sliding_window_attention against and to benchmark it.
torch::Tensor band_attention_reference(const torch::Tensor& q, const torch::Tensor& k,
                                       const torch::Tensor& v, int64_t window,
                                       const torch::Tensor& key_valid);

}  // namespace mms::nn
