#include "encoders/nn/towers.h"

#include <cmath>

#include "encoders/nn/attention.h"

namespace mms::nn {
namespace {

using torch::indexing::Slice;

torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const torch::Tensor x1 = x.index({"...", Slice(0, half)});
  const torch::Tensor x2 = x.index({"...", Slice(half, torch::indexing::None)});
  return torch::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
}

// One stride-2 stage of the image stem followed by `blocks` residual 3x3 convs. The first
// block keeps the names of the one-block stem ("down", "bn1", "conv", "bn2"); block i > 0 is
// "conv{i+1}" with norm "bn{i+2}". GroupNorm stems (8 groups) name their norms "gn" likewise.
class StemStageImpl : public torch::nn::Module {
 public:
  StemStageImpl(int64_t in, int64_t out, int64_t blocks, bool group_norm) {
    using namespace torch::nn;
    const std::string norm = group_norm ? "gn" : "bn";
    auto make_norm = [&](int64_t index) {
      const std::string name = norm + std::to_string(index);
      return group_norm ? AnyModule(register_module(name, GroupNorm(GroupNormOptions(8, out))))
                        : AnyModule(register_module(name, BatchNorm2d(out)));
    };
    down_ =
        register_module("down", Conv2d(Conv2dOptions(in, out, 3).stride(2).padding(1).bias(false)));
    down_norm_ = make_norm(1);
    for (int64_t i = 0; i < blocks; ++i) {
      const std::string name = i == 0 ? "conv" : "conv" + std::to_string(i + 1);
      convs_.push_back(
          register_module(name, Conv2d(Conv2dOptions(out, out, 3).padding(1).bias(false))));
      norms_.push_back(make_norm(i + 2));
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::gelu(down_norm_.forward(down_(x)));
    for (size_t i = 0; i < convs_.size(); ++i) {
      x = x + torch::gelu(norms_[i].forward(convs_[i](x)));
    }
    return x;
  }

 private:
  torch::nn::Conv2d down_{nullptr};
  torch::nn::AnyModule down_norm_;
  std::vector<torch::nn::Conv2d> convs_;
  std::vector<torch::nn::AnyModule> norms_;
};
TORCH_MODULE(StemStage);

// Identity whose backward makes the incoming gradient contiguous. LibTorch 1.13's CPU
// convolution / BatchNorm backward reads garbage when handed a gradient with the strides of
// a transposed view (what the tokens' flatten + transpose sends back into the stem); a
// contiguous gradient avoids that path. Found by a test: with no transformer layers the
// stem's gradients must be exactly zero, and they were not.
struct ContiguousGrad : public torch::autograd::Function<ContiguousGrad> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& x) {
    return x.view_as(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list grads) {
    return {grads[0].contiguous()};
  }
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> rotary_tables(int64_t n, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  torch::Tensor inv_freq =
      torch::pow(10000.0, -torch::arange(half, torch::kFloat) / static_cast<double>(half));
  torch::Tensor angles = torch::arange(n, torch::kFloat).unsqueeze(1) * inv_freq.unsqueeze(0);
  return {angles.cos(), angles.sin()};
}

TransformerBlockImpl::TransformerBlockImpl(int64_t width, int64_t heads, int64_t mlp_ratio)
    : heads_(heads) {
  using namespace torch::nn;
  norm1_ = register_module("norm1", LayerNorm(LayerNormOptions({width})));
  qkv_ = register_module("qkv", Linear(width, 3 * width));
  out_ = register_module("out", Linear(width, width));
  norm2_ = register_module("norm2", LayerNorm(LayerNormOptions({width})));
  fc1_ = register_module("fc1", Linear(width, mlp_ratio * width));
  fc2_ = register_module("fc2", Linear(mlp_ratio * width, width));
}

torch::Tensor TransformerBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& key_valid,
                                            int64_t window, const torch::Tensor& rope_cos,
                                            const torch::Tensor& rope_sin) {
  const int64_t batch = x.size(0), n = x.size(1), width = x.size(2);
  const int64_t head_dim = width / heads_;
  // [B, N, 3, H, hd] -> three [B, H, N, hd]
  torch::Tensor qkv =
      qkv_(norm1_(x)).view({batch, n, 3, heads_, head_dim}).permute({2, 0, 3, 1, 4});
  torch::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  if (rope_cos.defined()) {
    q = apply_rotary(q, rope_cos, rope_sin);
    k = apply_rotary(k, rope_cos, rope_sin);
  }
  torch::Tensor a = window > 0 ? sliding_window_attention(q, k, v, window, key_valid)
                               : full_attention(q, k, v, key_valid);
  a = a.transpose(1, 2).reshape({batch, n, width});
  torch::Tensor h = x + out_(a);
  return h + fc2_(torch::gelu(fc1_(norm2_(h))));
}

ImageEncoderImpl::ImageEncoderImpl(const ImageTowerConfig& c, int64_t embed_dim,
                                   int64_t mlp_ratio) {
  using namespace torch::nn;
  mean_ = register_buffer("mean", torch::tensor(c.mean).view({1, 3, 1, 1}));
  std_ = register_buffer("std", torch::tensor(c.std).view({1, 3, 1, 1}));
  stem_ = register_module("stem", Sequential());
  int64_t channels = 3, side = c.image_size;
  for (int32_t out : c.stem_channels) {
    stem_->push_back(StemStage(channels, out, c.stem_blocks, c.stem_norm == "group"));
    channels = out;
    side = (side + 1) / 2;
  }
  to_tokens_ = register_module("to_tokens", Linear(channels, c.width));
  cls_ = register_parameter("cls", torch::randn({1, 1, c.width}) * 0.02);
  pos_ = register_parameter("pos", torch::randn({1, side * side, c.width}) * 0.02);
  blocks_ = register_module("blocks", ModuleList());
  for (int32_t i = 0; i < c.depth; ++i)
    blocks_->push_back(TransformerBlock(c.width, c.heads, mlp_ratio));
  norm_ = register_module("norm", LayerNorm(LayerNormOptions({c.width})));
  proj_ = register_module("proj", Linear(LinearOptions(c.width, embed_dim).bias(false)));
}

torch::Tensor ImageEncoderImpl::forward(const torch::Tensor& pixels) {
  torch::Tensor x = ContiguousGrad::apply(stem_->forward((pixels - mean_) / std_));  // [B, C, g, g]
  x = to_tokens_(x.flatten(2).transpose(1, 2)) + pos_;  // [B, g*g, width]
  x = torch::cat({cls_.expand({x.size(0), 1, x.size(2)}), x}, 1);
  for (const auto& block : *blocks_) {
    x = block->as<TransformerBlock>()->forward(x, {}, 0, {}, {});
  }
  return proj_(norm_(x.select(1, 0)));
}

TextEncoderImpl::TextEncoderImpl(const TextTowerConfig& c, int64_t embed_dim, int64_t mlp_ratio)
    : config_(c) {
  using namespace torch::nn;
  embed_ = register_module("embed", Embedding(c.vocab_size, c.width));
  blocks_ = register_module("blocks", ModuleList());
  for (int32_t i = 0; i < c.depth; ++i)
    blocks_->push_back(TransformerBlock(c.width, c.heads, mlp_ratio));
  norm_ = register_module("norm", LayerNorm(LayerNormOptions({c.width})));
  proj_ = register_module("proj", Linear(LinearOptions(c.width, embed_dim).bias(false)));
  torch::nn::init::normal_(embed_->weight, 0.0, 0.02);
}

torch::Tensor TextEncoderImpl::forward(const torch::Tensor& ids, const torch::Tensor& lengths) {
  const int64_t n = ids.size(1);
  torch::Tensor valid = torch::arange(n, ids.options()).unsqueeze(0) < lengths.unsqueeze(1);
  auto [cos, sin] = rotary_tables(n, config_.width / config_.heads);
  torch::Tensor x = embed_(ids);
  for (const auto& block : *blocks_) {
    x = block->as<TransformerBlock>()->forward(x, valid, config_.window, cos, sin);
  }
  return proj_(norm_(x.select(1, 0)));
}

}  // namespace mms::nn
