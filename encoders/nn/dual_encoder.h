// Both towers, L2-normalized embeddings of one dimension, a learnable temperature, and the
// symmetric InfoNCE loss. Internal to encoders/ and training/ (LibTorch types).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "encoders/model_config.h"
#include "encoders/nn/towers.h"

namespace mms::nn {

class DualEncoderImpl : public torch::nn::Module {
 public:
  explicit DualEncoderImpl(const ModelConfig& config);

  // pixels: [B, 3, S, S] float32 0..1 -> [B, embed_dim], unit L2 norm.
  torch::Tensor encode_images(const torch::Tensor& pixels);
  // ids: [B, N] int64, lengths: [B] int64 -> [B, embed_dim], unit L2 norm.
  torch::Tensor encode_texts(const torch::Tensor& ids, const torch::Tensor& lengths);
  // exp(logit_scale) clamped to exp(logit_scale_max): the inverse temperature.
  torch::Tensor scale() const;

  const ModelConfig& config() const { return config_; }
  ImageEncoder& image() { return image_; }
  TextEncoder& text() { return text_; }
  torch::Tensor& logit_scale() { return logit_scale_; }

 private:
  ModelConfig config_;
  ImageEncoder image_{nullptr};
  TextEncoder text_{nullptr};
  torch::Tensor logit_scale_;
};
TORCH_MODULE(DualEncoder);

// Symmetric InfoNCE over a batch. image_emb, text_emb: [B, D], unit norm; scale: scalar.
// positives: [B, B] bool, true where image i and text j are a true pair (at least the
// diagonal; also duplicates such as the same caption in two rows), or undefined for the
// diagonal alone. Each row's target spreads evenly over its positives.
torch::Tensor contrastive_loss(const torch::Tensor& image_emb, const torch::Tensor& text_emb,
                               const torch::Tensor& scale, const torch::Tensor& positives);

// Embeds token-id sequences (each BOS .. EOS) in batches of similar length, so a batch pads
// to its own longest text. Returns [ids.size(), embed_dim] on the CPU, in input order.
torch::Tensor encode_texts_batched(DualEncoder& model, const std::vector<std::vector<int32_t>>& ids,
                                   int64_t pad_id);

// pixels: [n, 3, S, S] float32 0..1 -> [n, embed_dim], in chunks that bound memory.
torch::Tensor encode_images_batched(DualEncoder& model, const torch::Tensor& pixels);

// A float32 tensor's values in row-major order, e.g. the [n, embed_dim] the encoders return.
std::vector<float> to_vector(const torch::Tensor& t);

}  // namespace mms::nn
