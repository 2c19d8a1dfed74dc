#include "encoders/embedder.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/hash.h"
#include "encoders/nn/dual_encoder.h"
#include "encoders/nn/weights.h"
#include "encoders/safetensors.h"

namespace mms {
namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error::not_found("model file '" + path + "' does not exist or is unreadable");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

struct Embedder::Impl {
  ModelConfig config;
  Tokenizer tokenizer;
  std::string fingerprint;
  nn::DualEncoder model{nullptr};
};

Embedder::Embedder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Embedder::~Embedder() = default;

std::unique_ptr<Embedder> Embedder::load(const std::string& model_dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(model_dir)) {
    throw Error::not_found("model directory '" + model_dir + "' does not exist");
  }
  const std::string weights_path = (fs::path(model_dir) / "model.safetensors").string();
  ModelConfig config = load_model_config((fs::path(model_dir) / "config.json").string());
  Tokenizer tokenizer = Tokenizer::load((fs::path(model_dir) / "tokenizer.model").string());
  if (tokenizer.vocab_size() != config.text.vocab_size) {
    throw Error::mismatch("model '" + model_dir + "': tokenizer.model has " +
                          std::to_string(tokenizer.vocab_size()) + " pieces but config.json says " +
                          std::to_string(config.text.vocab_size));
  }
  const std::string bytes = read_bytes(weights_path);
  const SafeTensors weights =
      parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), weights_path);
  nn::DualEncoder model(config);
  nn::load_model_weights(model, weights, weights_path);
  model->eval();
  auto impl = std::unique_ptr<Impl>(
      new Impl{config, std::move(tokenizer), hex64(fnv1a64(bytes.data(), bytes.size())), model});
  return std::unique_ptr<Embedder>(new Embedder(std::move(impl)));
}

const ModelConfig& Embedder::config() const {
  return impl_->config;
}
const Tokenizer& Embedder::tokenizer() const {
  return impl_->tokenizer;
}
int32_t Embedder::dim() const {
  return impl_->config.embed_dim;
}
int32_t Embedder::image_size() const {
  return impl_->config.image.image_size;
}
const std::string& Embedder::fingerprint() const {
  return impl_->fingerprint;
}

std::vector<float> Embedder::embed_pixels(const float* pixels, int64_t n) const {
  const int64_t s = image_size();
  torch::NoGradGuard no_grad;
  const torch::Tensor batch =
      torch::from_blob(const_cast<float*>(pixels), {n, 3, s, s}, torch::kFloat);
  return nn::to_vector(nn::encode_images_batched(impl_->model, batch));
}

std::vector<float> Embedder::embed_texts(const std::vector<std::string>& texts) const {
  std::vector<std::vector<int32_t>> ids;
  ids.reserve(texts.size());
  for (const std::string& text : texts) ids.push_back(impl_->tokenizer.encode(text));
  return embed_token_ids(ids);
}

std::vector<float> Embedder::embed_token_ids(const std::vector<std::vector<int32_t>>& ids) const {
  for (const std::vector<int32_t>& row : ids) {
    if (row.empty()) throw Error::invalid_argument("embed_token_ids: an id sequence is empty");
    for (int32_t id : row) {
      if (id < 0 || id >= impl_->config.text.vocab_size) {
        throw Error::invalid_argument("embed_token_ids: token id " + std::to_string(id) +
                                      " is outside the vocabulary");
      }
    }
  }
  torch::NoGradGuard no_grad;
  return nn::to_vector(nn::encode_texts_batched(impl_->model, ids, impl_->tokenizer.pad_id()));
}

}  // namespace mms

namespace mms {

void set_compute_threads(int32_t threads) {
  torch::set_num_threads(std::max(1, threads));
}

}  // namespace mms
