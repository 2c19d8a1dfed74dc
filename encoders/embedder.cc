#include "encoders/embedder.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include "common/error.h"
#include "common/file_io.h"
#include "common/hash.h"
#include "encoders/key_search.h"
#include "encoders/memory.h"
#include "encoders/nn/dual_encoder.h"
#include "encoders/nn/weights.h"
#include "encoders/safetensors.h"

namespace mms {
namespace {

torch::Tensor unit_rows(const torch::Tensor& x) {
  return torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1));
}

// An image's embedding from config.views views of its input (model_config.h): the whole
// input, then squares of view_crop of its side from the corners (top-left, bottom-right,
// top-right, bottom-left), each resized back to the input's side; the mean, renormalized.
// Averaged over positions, an embedding depends less on where exactly the drawing sits in
// the frame, much as the training's random crops showed it to the encoder.
torch::Tensor encode_views(nn::DualEncoder& model, const torch::Tensor& batch,
                           const ImageTowerConfig& config) {
  if (config.views == 1) return nn::encode_images_batched(model, batch);
  namespace F = torch::nn::functional;
  using torch::indexing::Slice;
  const int64_t n = batch.size(0), s = batch.size(2);
  const int64_t side = std::lround(static_cast<double>(s) * config.view_crop);
  const int64_t far = s - side;
  const std::pair<int64_t, int64_t> corners[] = {{0, 0}, {far, far}, {0, far}, {far, 0}};
  std::vector<torch::Tensor> views{batch};
  for (int32_t v = 0; v + 1 < config.views; ++v) {
    const auto [y0, x0] = corners[v];
    const torch::Tensor crop =
        batch.index({Slice(), Slice(), Slice(y0, y0 + side), Slice(x0, x0 + side)});
    views.push_back(F::interpolate(crop, F::InterpolateFuncOptions()
                                             .size(std::vector<int64_t>{s, s})
                                             .mode(torch::kBilinear)
                                             .align_corners(false)));
  }
  // All views in one pass: a lone query image is one batch of `views`, not `views` passes.
  const torch::Tensor e = nn::encode_images_batched(model, torch::cat(views, 0));
  return unit_rows(e.view({config.views, n, e.size(1)}).sum(0));
}

// The memory as the towers consult it: keys and their values, [n, dim] float32 each.
struct MemoryTensors {
  torch::Tensor image_keys, image_values, text_keys, text_values;
  // What a recognised image moves toward (memory.h): its texts' mean, carried across the
  // modality gap (the mean image key minus the mean text key) so that it stays among the
  // images instead of answering every text query before them.
  torch::Tensor image_recall_values;
  MemorySettings settings;
  // Exact nearest keys for small batches, without reading every float key (key_search.h).
  std::shared_ptr<const KeySearch> image_search, text_search;
  // Hubness-aware scoring's banks (memory.h), [n, dim]; undefined without them.
  torch::Tensor text_bank, image_bank;
};

// Identical key rows (one image or text in two sources) merged into the first: its value
// then gathers the pairs of all of them. Left apart, a lookup tied between two copies with
// different values would be decided by scan order, so that the exact top-k of a lone query
// (KeySearch) and of a batch (a matrix product) could differ. Returns the unique rows, in
// order of first appearance, and each old row's new index.
std::pair<std::vector<float>, std::vector<int64_t>> merge_identical_rows(
    const std::vector<float>& keys, int64_t dim) {
  const int64_t n = static_cast<int64_t>(keys.size()) / dim;
  const size_t row_bytes = static_cast<size_t>(dim) * sizeof(float);
  std::unordered_map<std::string_view, int64_t> first;
  std::vector<int64_t> canonical(static_cast<size_t>(n));
  std::vector<float> unique;
  for (int64_t r = 0; r < n; ++r) {
    const std::string_view row(reinterpret_cast<const char*>(keys.data() + r * dim), row_bytes);
    const auto [it, added] = first.emplace(row, static_cast<int64_t>(first.size()));
    if (added) unique.insert(unique.end(), keys.begin() + r * dim, keys.begin() + (r + 1) * dim);
    canonical[r] = it->second;
  }
  return {std::move(unique), std::move(canonical)};
}

MemoryTensors memory_tensors(const EmbeddingMemory& m) {
  const int64_t d = m.dim;
  auto [image_keys, image_row] = merge_identical_rows(m.image_keys, d);
  auto [text_keys, text_row] = merge_identical_rows(m.text_keys, d);
  const int64_t ni = static_cast<int64_t>(image_keys.size()) / d;
  const int64_t nt = static_cast<int64_t>(text_keys.size()) / d;
  MemoryTensors t;
  t.settings = m.settings;
  t.image_keys = torch::from_blob(image_keys.data(), {ni, d}).clone();
  t.text_keys = torch::from_blob(text_keys.data(), {nt, d}).clone();
  std::vector<int64_t> image_rows, text_rows;
  for (const auto& [i, j] : m.pairs) {
    image_rows.push_back(image_row.at(i));
    text_rows.push_back(text_row.at(j));
  }
  const torch::Tensor ii = torch::tensor(image_rows, torch::kLong);
  const torch::Tensor tt = torch::tensor(text_rows, torch::kLong);
  // An image's value: the mean of its texts' keys; a text's: the mean of its images' keys.
  t.image_values =
      unit_rows(torch::zeros({ni, d}).index_add_(0, ii, t.text_keys.index_select(0, tt)));
  t.text_values =
      unit_rows(torch::zeros({nt, d}).index_add_(0, tt, t.image_keys.index_select(0, ii)));
  t.image_recall_values =
      unit_rows(t.image_values + (t.image_keys.mean(0, true) - t.text_keys.mean(0, true)));
  t.image_search = std::make_shared<KeySearch>(t.image_keys.data_ptr<float>(), ni, d);
  t.text_search = std::make_shared<KeySearch>(t.text_keys.data_ptr<float>(), nt, d);
  if (m.has_hub_banks()) {
    auto rows = [d](const std::vector<float>& v) {
      return torch::from_blob(const_cast<float*>(v.data()), {static_cast<int64_t>(v.size()) / d, d})
          .clone();
    };
    t.text_bank = rows(m.text_bank);
    t.image_bank = rows(m.image_bank);
  }
  return t;
}

// e' = normalize(e + gate(top similarity) * weight *
//                 normalize(softmax(top-k similarity / temperature) . values)
//                 [+ recall_gate(top similarity) * recall_weight * values[nearest]]),
// the bracketed term where `recall` is set (images: memory.h). `weight` is the side's own
// (settings.image_pull() for images, settings.weight for texts).
// A few rows at a time (a search request), the nearest keys come from `search` instead of a
// product with every key: the same keys and similarities, a fraction of the memory reads.
torch::Tensor augment(const torch::Tensor& e, const torch::Tensor& keys,
                      const torch::Tensor& values, const MemorySettings& s, double weight,
                      const KeySearch& search, const torch::Tensor& recall_values = {}) {
  const bool recall = recall_values.defined();
  constexpr int64_t kChunk = 512;  // bounds the [chunk, n_keys] similarity block
  constexpr int64_t kSmallBatch = 4;
  const int64_t k = std::min<int64_t>(s.k, keys.size(0));
  std::vector<torch::Tensor> out;
  for (int64_t start = 0; start < e.size(0); start += kChunk) {
    const torch::Tensor q = e.slice(0, start, std::min(e.size(0), start + kChunk)).contiguous();
    torch::Tensor sim, idx;
    if (q.size(0) <= kSmallBatch) {
      sim = torch::empty({q.size(0), k});
      idx = torch::empty({q.size(0), k}, torch::kLong);
      for (int64_t r = 0; r < q.size(0); ++r) {
        search.top_k(q.data_ptr<float>() + r * q.size(1), static_cast<int32_t>(k),
                     sim.data_ptr<float>() + r * k, idx.data_ptr<int64_t>() + r * k);
      }
    } else {
      std::tie(sim, idx) = torch::matmul(q, keys.t()).topk(k, 1);
    }
    const torch::Tensor w = torch::softmax(sim / s.temperature, 1);
    const torch::Tensor v = values.index_select(0, idx.flatten()).view({q.size(0), k, -1});
    const torch::Tensor mixed = unit_rows((w.unsqueeze(2) * v).sum(1));
    const torch::Tensor top = sim.select(1, 0).contiguous();  // topk sorts: the nearest first
    torch::Tensor gate = torch::empty({q.size(0), 1});
    torch::Tensor recall_gates = torch::zeros({q.size(0), 1});
    const auto nearest = top.accessor<float, 1>();
    auto g = gate.accessor<float, 2>();
    auto rg = recall_gates.accessor<float, 2>();
    bool recalled = false;
    for (int64_t r = 0; r < q.size(0); ++r) {
      g[r][0] = static_cast<float>(weight * memory_gate(s, nearest[r]));
      if (recall) {
        rg[r][0] = static_cast<float>(s.recall_weight * recall_gate(s, nearest[r]));
        recalled = recalled || rg[r][0] > 0;
      }
    }
    torch::Tensor moved = q + gate * mixed;
    if (recalled) {
      moved = moved + recall_gates * recall_values.index_select(0, idx.select(1, 0).contiguous());
    }
    out.push_back(unit_rows(moved));
  }
  return out.empty() ? e : torch::cat(out, 0);
}

// h of each row of e (memory.h): the mean of its k highest cosines to `bank`'s rows.
std::vector<float> hubs_against(const float* e, int64_t n, int64_t dim, const torch::Tensor& bank,
                                int32_t k) {
  if (n == 0) return {};
  c10::InferenceMode inference;
  constexpr int64_t kChunk = 1024;  // bounds the [chunk, bank rows] similarity block
  const torch::Tensor rows = torch::from_blob(const_cast<float*>(e), {n, dim}, torch::kFloat);
  const int64_t top = std::min<int64_t>(k, bank.size(0));
  std::vector<float> h;
  h.reserve(static_cast<size_t>(n));
  for (int64_t start = 0; start < n; start += kChunk) {
    const torch::Tensor sim =
        torch::matmul(rows.slice(0, start, std::min(n, start + kChunk)), bank.t());
    const torch::Tensor mean = std::get<0>(sim.topk(top, 1)).mean(1).contiguous();
    h.insert(h.end(), mean.data_ptr<float>(), mean.data_ptr<float>() + mean.numel());
  }
  return h;
}

// Up to `count` of `n` rows, a sample fixed by `seed` (Fisher-Yates on a 64-bit Mersenne
// Twister, which every standard library runs alike), in increasing order.
std::vector<int64_t> sample_rows(int64_t n, int64_t count, uint64_t seed) {
  std::vector<int64_t> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rows[i] = i;
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(rows[i], rows[rng() % static_cast<uint64_t>(i + 1)]);
  rows.resize(static_cast<size_t>(std::min(n, count)));
  std::sort(rows.begin(), rows.end());
  return rows;
}

}  // namespace

void add_hub_banks(EmbeddingMemory& memory, uint64_t seed) {
  c10::InferenceMode inference;
  memory.text_bank.clear();
  memory.image_bank.clear();
  const MemoryTensors t = memory_tensors(memory);  // (keys merged: each distinct one once)
  auto bank = [&](const torch::Tensor& keys, const torch::Tensor& values, double weight,
                  const KeySearch& search, const torch::Tensor& recall_values) {
    const std::vector<int64_t> rows = sample_rows(keys.size(0), kHubBankRows, seed);
    const torch::Tensor picked = keys.index_select(0, torch::tensor(rows, torch::kLong));
    const torch::Tensor e =
        weight > 0 || recall_values.defined()
            ? augment(picked, keys, values, t.settings, weight, search, recall_values)
            : picked;
    return nn::to_vector(e.contiguous());
  };
  const MemorySettings& s = t.settings;
  memory.text_bank = bank(t.text_keys, t.text_values, s.weight, *t.text_search, {});
  memory.image_bank = bank(t.image_keys, t.image_values, s.image_pull(), *t.image_search,
                           s.recall_weight > 0 ? t.image_recall_values : torch::Tensor());
}

struct Embedder::Impl {
  ModelConfig config;
  Tokenizer tokenizer;
  std::string fingerprint;
  nn::DualEncoder model{nullptr};
  std::optional<MemoryTensors> memory;
};

Embedder::Embedder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Embedder::~Embedder() = default;

std::unique_ptr<Embedder> Embedder::load(const std::string& model_dir, bool use_memory,
                                         const MemoryOverrides& overrides) {
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
  const std::string bytes = read_file_bytes(weights_path, "model file");
  const SafeTensors weights =
      parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), weights_path);
  nn::DualEncoder model(config);
  nn::load_model_weights(model, weights, weights_path);
  model->eval();
  uint64_t hash = fnv1a64(bytes.data(), bytes.size());
  if (config.image.views != 1) {  // (absent from the fingerprints of single-view models)
    const std::string views = "views " + std::to_string(config.image.views) + "/" +
                              std::to_string(config.image.view_crop);
    hash = fnv1a64(views.data(), views.size(), hash);
  }
  std::optional<MemoryTensors> memory;
  const std::string memory_path = (fs::path(model_dir) / "memory.safetensors").string();
  if (use_memory && fs::exists(memory_path)) {
    const std::string memory_bytes = read_file_bytes(memory_path, "model file");
    EmbeddingMemory m = parse_memory(reinterpret_cast<const uint8_t*>(memory_bytes.data()),
                                     memory_bytes.size(), memory_path, config.embed_dim);
    m.settings = overrides.applied_to(m.settings);
    check_memory_settings(m.settings);
    if (m.settings.weight > 0 || m.settings.image_pull() > 0 || m.settings.recall_weight > 0) {
      memory = memory_tensors(m);
      hash = fnv1a64(memory_bytes.data(), memory_bytes.size(), hash);
      std::string settings =
          std::to_string(m.settings.k) + "/" + std::to_string(m.settings.temperature) + "/" +
          std::to_string(m.settings.weight) + "/" + std::to_string(m.settings.gate_low) + "/" +
          std::to_string(m.settings.gate_high) + "/merged-keys";
      if (m.settings.recall_weight > 0) {  // (absent from the fingerprints of older memories)
        settings += "/recall " + std::to_string(m.settings.recall_weight) + "/" +
                    std::to_string(m.settings.recall_gate_low) + "/" +
                    std::to_string(m.settings.recall_gate_high);
      }
      // (absent where images are pulled by `weight`, as by every memory before image_weight)
      if (m.settings.image_pull() != m.settings.weight) {
        settings += "/image-weight " + std::to_string(m.settings.image_pull());
      }
      // (hub_weight weighs h at query time: the stored h depends on the banks and hub_k only)
      if (m.has_hub_banks()) settings += "/hub-k " + std::to_string(m.settings.hub_k);
      hash = fnv1a64(settings.data(), settings.size(), hash);
    }
  }
  auto impl = std::unique_ptr<Impl>(
      new Impl{config, std::move(tokenizer), hex64(hash), model, std::move(memory)});
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
bool Embedder::uses_memory() const {
  return impl_->memory.has_value();
}

std::vector<float> Embedder::embed_pixels(const float* pixels, int64_t n) const {
  const int64_t s = image_size();
  c10::InferenceMode inference;  // no autograd bookkeeping at all (cheaper than NoGradGuard)
  const torch::Tensor batch =
      torch::from_blob(const_cast<float*>(pixels), {n, 3, s, s}, torch::kFloat);
  torch::Tensor e = encode_views(impl_->model, batch, impl_->config.image);
  if (impl_->memory) {
    const MemoryTensors& m = *impl_->memory;
    e = augment(e, m.image_keys, m.image_values, m.settings, m.settings.image_pull(),
                *m.image_search, m.image_recall_values);
  }
  return nn::to_vector(e);
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
  c10::InferenceMode inference;  // no autograd bookkeeping at all (cheaper than NoGradGuard)
  torch::Tensor e = nn::encode_texts_batched(impl_->model, ids, impl_->tokenizer.pad_id());
  if (impl_->memory && impl_->memory->settings.weight > 0) {  // (recall is for images only)
    const MemoryTensors& m = *impl_->memory;
    e = augment(e, m.text_keys, m.text_values, m.settings, m.settings.weight, *m.text_search);
  }
  return nn::to_vector(e);
}

float Embedder::hub_weight() const {
  const auto& m = impl_->memory;
  return m && m->text_bank.defined() ? static_cast<float>(m->settings.hub_weight) : 0.f;
}

std::vector<float> Embedder::image_hubs(const float* embeddings, int64_t n) const {
  if (hub_weight() == 0) return std::vector<float>(static_cast<size_t>(n), 0.f);
  return hubs_against(embeddings, n, dim(), impl_->memory->text_bank,
                      impl_->memory->settings.hub_k);
}

std::vector<float> Embedder::text_hubs(const float* embeddings, int64_t n) const {
  if (hub_weight() == 0) return std::vector<float>(static_cast<size_t>(n), 0.f);
  return hubs_against(embeddings, n, dim(), impl_->memory->image_bank,
                      impl_->memory->settings.hub_k);
}

}  // namespace mms

namespace mms {

void set_compute_threads(int32_t threads) {
  torch::set_num_threads(std::max(1, threads));
}

}  // namespace mms
