// A memory of training pairs that both towers consult at inference (retrieval-augmented
// embeddings, as in RA-CLIP): an image's embedding e moves toward what the captions of the
// memory images nearest to it say, a text's toward the images of the memory texts nearest
// to it:
//   image:  e' = normalize(e + image_weight * normalize(sum_j w_j * caption_j))
//   text:   e' = normalize(e + weight * normalize(sum_j w_j * image_j))
// over the k memory entries j of the same modality most similar to e, with
// w = softmax(similarity / temperature), and weight scaled by a gate on the similarity s of
// the nearest entry: 0 up to gate_low, rising linearly to 1 at gate_high. An input unlike
// anything in the memory (a photo, against a memory of clip art) keeps its own embedding
// instead of being pulled toward the least unlike training pairs.
// An image that is one of the memory's own images (its nearest image key at a similarity
// near 1: the same drawing, perhaps re-encoded or rescaled) is also recognised: it moves
// toward that image's own texts by recall_weight, gated from recall_gate_low to
// recall_gate_high, on top of the pull above:
//   image:  e' = normalize(e + weight * ... + recall_weight * gate_r(s) *
//                          normalize(caption_nearest + mean(image keys) - mean(text keys)))
// (its texts carried across the modality gap, so that it stays among the images instead of
// answering every text query before them)
// So a collection that holds training images finds them by the words they were trained
// with; an image the memory has never seen is not affected by it. So an image is also
// described by the words of the training images it resembles, and a text by the pictures
// of the training texts it resembles: each side reaches the other through a same-modality
// comparison, which the encoders make more reliably than the cross-modal one. Embeddings stay unit
// vectors of the model's dimension; nothing downstream changes.
//
// Stored as `memory.safetensors` in a MODEL_DIR: "image_keys" [Ni, dim] and "text_keys"
// [Nt, dim] in F16 (the encoders' own embeddings of the memory's images and texts), "pairs"
// [P, 2] I32 (image row, text row), and the settings in the header's __metadata__. An image
// key's value is the mean of its texts' keys, a text key's value the mean of its images'
// keys, both renormalized. Plain types only (no LibTorch).
//
// Hubness-aware scoring. Some documents sit near every query of the other modality whatever
// it asks (generic captions, drawings the memory recognises): "hubs". A document d found by
// a query of the other modality is therefore ranked by
//   score = cosine(query, d) - hub_weight * h(d),
//   h(d)  = the mean of d's hub_k highest cosines to a bank of that modality's embeddings,
// so that being close to everything costs (query-bank normalisation). h depends on the
// document alone: it is computed once, as the document is embedded (Embedder::image_hubs /
// text_hubs), and stored beside its vector. The banks ("text_bank" and "image_bank", F16
// [n, dim], absent in files written before them: no penalty) are up to kHubBankRows distinct
// memory keys of each modality, each augmented by the memory as the Embedder augments an
// embedding (add_hub_banks, encoders/embedder.h). Within one modality (an example image
// over images) scores stay cosines.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace mms {

// The defaults are those chosen for the shipped model on the validation splits (README).
struct MemorySettings {
  int32_t k = 3;              // neighbours consulted
  double temperature = 0.05;  // softmax temperature over their cosine similarities
  double weight = 0.5;        // how far an embedding moves toward its neighbours' values
  // The gate on the nearest neighbour's similarity; -1 and -1 (what a memory file written
  // before the gate existed holds) is no gate.
  double gate_low = 0.75, gate_high = 0.9;
  // Recognising the memory's own images (images only); a memory file written before it
  // existed holds none (recall_weight 0).
  double recall_weight = 4.0;
  double recall_gate_low = 0.999, recall_gate_high = 0.9999;
  // `weight` for images alone, where it is 0 or more; -1 (what a memory file written before
  // it existed holds) is `weight`. Chosen on the validation splits: pulling an image half as
  // far as a text keeps the pull's gains for text queries and loses less image->text recall.
  double image_weight = 0.25;

  // Hubness-aware scoring (above): the bank neighbours that make h, and h's weight in a score
  // across modalities (0: plain cosines). Chosen on the validation splits (docs/
  // model-experiments.md, "Hubness-aware scoring").
  int32_t hub_k = 10;
  double hub_weight = 0.3;

  // The weight of an image's pull toward its neighbours' captions.
  double image_pull() const { return image_weight >= 0 ? image_weight : weight; }
};

// 0 up to low, rising linearly to 1 at high (a step at high when high <= low).
inline double linear_gate(double low, double high, double s) {
  if (high <= low) return s >= high ? 1.0 : 0.0;
  const double g = (s - low) / (high - low);
  return g < 0 ? 0.0 : (g > 1 ? 1.0 : g);
}

// The fraction of `weight` applied when the nearest memory entry has cosine similarity s.
inline double memory_gate(const MemorySettings& m, double s) {
  return linear_gate(m.gate_low, m.gate_high, s);
}

// The fraction of `recall_weight` applied when the nearest memory image has similarity s.
inline double recall_gate(const MemorySettings& m, double s) {
  return linear_gate(m.recall_gate_low, m.recall_gate_high, s);
}

// Settings to use instead of a memory file's own, each where given (to tune them on a
// validation split without rebuilding the memory).
struct MemoryOverrides {
  std::optional<int32_t> k;
  std::optional<double> temperature, weight, image_weight, gate_low, gate_high;
  std::optional<double> recall_weight, recall_gate_low, recall_gate_high;
  std::optional<int32_t> hub_k;
  std::optional<double> hub_weight;
  MemorySettings applied_to(MemorySettings s) const {
    if (k) s.k = *k;
    if (temperature) s.temperature = *temperature;
    if (weight) s.weight = *weight;
    if (image_weight) s.image_weight = *image_weight;
    if (gate_low) s.gate_low = *gate_low;
    if (gate_high) s.gate_high = *gate_high;
    if (recall_weight) s.recall_weight = *recall_weight;
    if (recall_gate_low) s.recall_gate_low = *recall_gate_low;
    if (recall_gate_high) s.recall_gate_high = *recall_gate_high;
    if (hub_k) s.hub_k = *hub_k;
    if (hub_weight) s.hub_weight = *hub_weight;
    return s;
  }
};

struct EmbeddingMemory {
  int32_t dim = 0;
  std::vector<float> image_keys;  // [n_images, dim], unit rows
  std::vector<float> text_keys;   // [n_texts, dim], unit rows
  std::vector<std::pair<int32_t, int32_t>> pairs;  // (image row, text row)
  MemorySettings settings;
  // Hubness-aware scoring's banks (above): [n, dim] unit rows each, both empty or neither.
  std::vector<float> text_bank, image_bank;

  int64_t n_images() const { return dim ? static_cast<int64_t>(image_keys.size()) / dim : 0; }
  int64_t n_texts() const { return dim ? static_cast<int64_t>(text_keys.size()) / dim : 0; }
  bool has_hub_banks() const { return !text_bank.empty() && !image_bank.empty(); }
};

// Rows of each bank add_hub_banks draws (fewer where the memory has fewer distinct keys).
constexpr int64_t kHubBankRows = 8192;

// Throws Error::invalid_argument for settings out of range (k < 1, temperature <= 0,
// weight < 0, image_weight neither -1 nor 0 or more, gate bounds outside -1 <= gate_low <=
// gate_high <= 1, the same for recall_weight and the recall gate, hub_k < 1, hub_weight < 0),
// naming the setting.
void check_memory_settings(const MemorySettings& settings);

// Writes atomically (temporary file + rename). Throws Error::invalid_argument for an
// inconsistent memory (shapes, pair rows out of range, an entry without a pair, one bank
// without the other).
void write_memory(const std::string& path, const EmbeddingMemory& memory);

// Throws Error::not_found / io / corrupt naming the file, Error::mismatch when its dimension
// is not `dim` (a memory built with another model).
EmbeddingMemory read_memory(const std::string& path, int32_t dim);
// The same, from the file's bytes in data[0, size) (`name` names it in errors).
EmbeddingMemory parse_memory(const uint8_t* data, size_t size, const std::string& name,
                             int32_t dim);

}  // namespace mms
