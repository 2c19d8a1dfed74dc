// The two towers of the dual encoder, as LibTorch modules. Internal to encoders/: include
// only from .cc files and tests.
//
// ImageEncoder: a CNN stem (stride-2 conv stages, BatchNorm or GroupNorm, GELU, stem_blocks
// residual convs each) turns [B, 3, S, S] pixels into a grid of tokens; a pre-norm Transformer
// runs over a class token plus the grid (learned positions); the class token is projected to
// the embedding.
// TextEncoder: token embeddings, rotary positions (any length), pre-norm Transformer layers
// with sliding-window attention; token 0 (BOS) is global and its state is projected.
#pragma once

#include <torch/torch.h>

#include "encoders/model_config.h"

namespace mms::nn {

// Pre-norm Transformer layer. x: [B, N, width]; key_valid: [B, N] bool or undefined;
// window <= 0 means full attention; rope_cos/rope_sin: [N, head_dim / 2] or undefined.
class TransformerBlockImpl : public torch::nn::Module {
 public:
  TransformerBlockImpl(int64_t width, int64_t heads, int64_t mlp_ratio);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& key_valid, int64_t window,
                        const torch::Tensor& rope_cos, const torch::Tensor& rope_sin);

 private:
  int64_t heads_;
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Linear qkv_{nullptr}, out_{nullptr}, fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(TransformerBlock);

class ImageEncoderImpl : public torch::nn::Module {
 public:
  ImageEncoderImpl(const ImageTowerConfig& config, int64_t embed_dim, int64_t mlp_ratio);
  // pixels: [B, 3, S, S] float32 in 0..1 (S = image_size). Returns [B, embed_dim], not
  // normalized.
  torch::Tensor forward(const torch::Tensor& pixels);

 private:
  torch::Tensor mean_, std_;
  torch::nn::Sequential stem_{nullptr};
  torch::nn::Linear to_tokens_{nullptr}, proj_{nullptr};
  torch::Tensor cls_, pos_;
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
};
TORCH_MODULE(ImageEncoder);

class TextEncoderImpl : public torch::nn::Module {
 public:
  TextEncoderImpl(const TextTowerConfig& config, int64_t embed_dim, int64_t mlp_ratio);
  // ids: [B, N] int64 (BOS first, PAD after each row's length); lengths: [B] int64.
  // Returns [B, embed_dim], not normalized. Cost is linear in N.
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& lengths);

 private:
  TextTowerConfig config_;
  torch::nn::Embedding embed_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
  torch::nn::Linear proj_{nullptr};
};
TORCH_MODULE(TextEncoder);

// Rotary position tables for positions 0..n-1: returns {cos, sin}, each [n, head_dim / 2].
std::pair<torch::Tensor, torch::Tensor> rotary_tables(int64_t n, int64_t head_dim);

}  // namespace mms::nn
