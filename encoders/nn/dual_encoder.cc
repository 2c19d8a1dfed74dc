#include "encoders/nn/dual_encoder.h"

#include <algorithm>
#include <numeric>

namespace mms::nn {

DualEncoderImpl::DualEncoderImpl(const ModelConfig& config) : config_(config) {
  image_ = register_module("image", ImageEncoder(config.image, config.embed_dim, config.mlp_ratio));
  text_ = register_module("text", TextEncoder(config.text, config.embed_dim, config.mlp_ratio));
  logit_scale_ = register_parameter("logit_scale", torch::tensor(config.logit_scale_init));
}

torch::Tensor DualEncoderImpl::encode_images(const torch::Tensor& pixels) {
  return torch::nn::functional::normalize(
      image_->forward(pixels), torch::nn::functional::NormalizeFuncOptions().dim(1));
}

torch::Tensor DualEncoderImpl::encode_texts(const torch::Tensor& ids, const torch::Tensor& lengths) {
  return torch::nn::functional::normalize(
      text_->forward(ids, lengths), torch::nn::functional::NormalizeFuncOptions().dim(1));
}

torch::Tensor DualEncoderImpl::scale() const {
  return logit_scale_.clamp_max(config_.logit_scale_max).exp();
}

torch::Tensor contrastive_loss(const torch::Tensor& image_emb, const torch::Tensor& text_emb,
                               const torch::Tensor& scale, const torch::Tensor& positives) {
  const torch::Tensor logits = scale * torch::matmul(image_emb, text_emb.t());  // [B, B]
  torch::Tensor targets = positives.defined()
                              ? positives.to(logits.dtype())
                              : torch::eye(logits.size(0), logits.options());
  auto soft_ce = [](const torch::Tensor& l, const torch::Tensor& t) {
    const torch::Tensor p = t / t.sum(1, true);
    return -(p * torch::log_softmax(l, 1)).sum(1).mean();
  };
  return 0.5 * (soft_ce(logits, targets) + soft_ce(logits.t(), targets.t()));
}

namespace {
constexpr size_t kTextBatch = 64;
constexpr int64_t kTextTokensPerBatch = 1 << 16;  // bounds memory for very long texts
constexpr int64_t kImageBatch = 64;
}  // namespace

torch::Tensor encode_texts_batched(DualEncoder& model, const std::vector<std::vector<int32_t>>& ids,
                                   int64_t pad_id) {
  const int64_t d = model->config().embed_dim;
  torch::Tensor out = torch::empty({static_cast<int64_t>(ids.size()), d}, torch::kFloat);
  std::vector<size_t> order(ids.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return ids[a].size() < ids[b].size(); });
  const torch::Device device = model->logit_scale().device();
  size_t start = 0;
  while (start < order.size()) {
    size_t end = start + 1;
    while (end < order.size() && end - start < kTextBatch &&
           static_cast<int64_t>((end - start + 1) * ids[order[end]].size()) <= kTextTokensPerBatch) {
      ++end;
    }
    const int64_t rows = static_cast<int64_t>(end - start);
    const int64_t width = static_cast<int64_t>(ids[order[end - 1]].size());
    torch::Tensor batch = torch::full({rows, width}, pad_id, torch::kLong);
    torch::Tensor lengths = torch::empty({rows}, torch::kLong);
    auto b = batch.accessor<int64_t, 2>();
    auto l = lengths.accessor<int64_t, 1>();
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<int32_t>& row = ids[order[start + r]];
      TORCH_CHECK(!row.empty(), "encode_texts_batched: an id sequence is empty");
      for (size_t c = 0; c < row.size(); ++c) b[r][c] = row[c];
      l[r] = static_cast<int64_t>(row.size());
    }
    const torch::Tensor emb =
        model->encode_texts(batch.to(device), lengths.to(device)).to(torch::kCPU, torch::kFloat);
    for (int64_t r = 0; r < rows; ++r) out[static_cast<int64_t>(order[start + r])] = emb[r];
    start = end;
  }
  return out;
}

torch::Tensor encode_images_batched(DualEncoder& model, const torch::Tensor& pixels) {
  const torch::Device device = model->logit_scale().device();
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < pixels.size(0); start += kImageBatch) {
    const torch::Tensor chunk = pixels.slice(0, start, std::min(pixels.size(0), start + kImageBatch));
    parts.push_back(model->encode_images(chunk.to(device)).to(torch::kCPU, torch::kFloat));
  }
  if (parts.empty()) return torch::empty({0, model->config().embed_dim}, torch::kFloat);
  return torch::cat(parts, 0);
}

std::vector<float> to_vector(const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

}  // namespace mms::nn
