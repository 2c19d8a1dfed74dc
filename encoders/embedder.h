// Inference with a trained dual encoder: loads a MODEL_DIR (config.json, model.safetensors,
// tokenizer.model) and turns images and texts into L2-normalized vectors of one space.
// LibTorch stays behind this header. After load, every const method is safe to call from
// any number of threads at once (no state changes; autograd off).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "encoders/memory.h"
#include "encoders/model_config.h"
#include "tokenizer/tokenizer.h"

namespace mms {

class Embedder {
 public:
  // Throws Error::not_found for a missing MODEL_DIR or file, Error::corrupt / mismatch for
  // weights that do not fit the config, each naming the file. Where the MODEL_DIR holds a
  // memory.safetensors (encoders/memory.h) and use_memory is set, every embedding is
  // augmented by that memory (with `overrides` replacing its stored settings where given;
  // Error::invalid_argument when they are out of range); with use_memory false the
  // encoders' own embeddings come back.
  static std::unique_ptr<Embedder> load(const std::string& model_dir, bool use_memory = true,
                                        const MemoryOverrides& overrides = {});
  ~Embedder();

  const ModelConfig& config() const;
  const Tokenizer& tokenizer() const;
  int32_t dim() const;         // embedding size (config().embed_dim)
  int32_t image_size() const;  // side of the square input preprocess_image must produce
  // Identifies the weights (a hash of model.safetensors, and of memory.safetensors and its
  // settings when it is used): indexes built with one model refuse another.
  const std::string& fingerprint() const;
  // Whether embeddings are augmented by the MODEL_DIR's memory.
  bool uses_memory() const;

  // pixels: n images as preprocess_image(img, image_size()) makes them, concatenated:
  // [n, 3, S, S] float32 0..1. Returns [n, dim] row-major, each row of unit L2 norm.
  std::vector<float> embed_pixels(const float* pixels, int64_t n) const;

  // Texts of any length (encoded whole by the sliding-window encoder, never truncated).
  // Batched internally by length so short texts do not pay for long ones. Returns [n, dim].
  std::vector<float> embed_texts(const std::vector<std::string>& texts) const;

  // Texts as token ids (each with BOS .. EOS, as Tokenizer::encode gives). Returns [n, dim].
  std::vector<float> embed_token_ids(const std::vector<std::vector<int32_t>>& ids) const;

  // Hubness-aware scoring (encoders/memory.h): a document found by a query of the other
  // modality scores cosine - hub_weight() * h(document). hub_weight() is 0 (plain cosines)
  // without a memory or where the memory has no hub banks.
  float hub_weight() const;
  // h of documents: embeddings [n, dim] as embed_pixels (image_hubs) or embed_texts
  // (text_hubs) return them, each row's mean of its hub_k highest cosines to the memory's bank
  // of the other modality. Returns [n]; zeros where hub_weight() is 0.
  std::vector<float> image_hubs(const float* embeddings, int64_t n) const;
  std::vector<float> text_hubs(const float* embeddings, int64_t n) const;

 private:
  struct Impl;
  explicit Embedder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mms

namespace mms {

// Fills memory.text_bank and image_bank for hubness-aware scoring: up to kHubBankRows
// distinct keys of each modality (a sample fixed by `seed`), each augmented by the memory
// itself as Embedder augments an embedding, so that the banks are what queries look like to
// the search. `mmsearch memory` calls it once the keys are built.
void add_hub_banks(EmbeddingMemory& memory, uint64_t seed);

// Sets the number of threads LibTorch's CPU kernels use (intra-op). Call once at start-up,
// before the first model runs; `mmsearch --threads` lands here.
void set_compute_threads(int32_t threads);

}  // namespace mms
