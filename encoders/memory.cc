#include "encoders/memory.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>

#include "common/error.h"
#include "encoders/safetensors.h"

namespace mms {
namespace {

TensorData half_rows(const std::vector<float>& rows, int64_t n, int32_t dim) {
  const torch::Tensor h =
      torch::from_blob(const_cast<float*>(rows.data()), {n, dim}, torch::kFloat).to(torch::kHalf);
  TensorData t;
  t.dtype = DType::kF16;
  t.shape = {n, dim};
  t.bytes.resize(static_cast<size_t>(n) * dim * 2);
  std::memcpy(t.bytes.data(), h.data_ptr(), t.bytes.size());
  return t;
}

std::vector<float> float_rows(const TensorData& t) {
  const int64_t n = t.shape[0], dim = t.shape[1];
  const torch::Tensor f =
      torch::from_blob(const_cast<uint8_t*>(t.bytes.data()), {n, dim}, torch::kHalf)
          .to(torch::kFloat)
          .contiguous();
  return std::vector<float>(f.data_ptr<float>(), f.data_ptr<float>() + n * dim);
}

// Shapes agree, pair rows are in range, and every image and text row has a pair (else it
// would have no value).
void check_consistent(const EmbeddingMemory& m, const std::string& what) {
  if (m.dim <= 0) throw Error::invalid_argument(what + ": dimension must be positive");
  if (m.image_keys.size() % m.dim || m.text_keys.size() % m.dim) {
    throw Error::invalid_argument(what + ": keys are not whole rows of " + std::to_string(m.dim));
  }
  const int64_t ni = m.n_images(), nt = m.n_texts();
  if (ni == 0 || nt == 0) throw Error::invalid_argument(what + ": the memory is empty");
  std::vector<char> image_paired(ni, 0), text_paired(nt, 0);
  for (const auto& [i, t] : m.pairs) {
    if (i < 0 || i >= ni || t < 0 || t >= nt) {
      throw Error::invalid_argument(what + ": pair (" + std::to_string(i) + ", " +
                                    std::to_string(t) + ") is outside " + std::to_string(ni) +
                                    " images and " + std::to_string(nt) + " texts");
    }
    image_paired[i] = text_paired[t] = 1;
  }
  for (int64_t i = 0; i < ni; ++i) {
    if (!image_paired[i]) {
      throw Error::invalid_argument(what + ": image row " + std::to_string(i) + " has no text");
    }
  }
  for (int64_t t = 0; t < nt; ++t) {
    if (!text_paired[t]) {
      throw Error::invalid_argument(what + ": text row " + std::to_string(t) + " has no image");
    }
  }
  if (m.text_bank.empty() != m.image_bank.empty()) {
    throw Error::invalid_argument(what + ": one hub bank without the other");
  }
  if (m.text_bank.size() % m.dim || m.image_bank.size() % m.dim) {
    throw Error::invalid_argument(what + ": hub banks are not whole rows of " +
                                  std::to_string(m.dim));
  }
  check_memory_settings(m.settings);
}

std::string metadata_value(const SafeTensors& st, const std::string& key, const std::string& path) {
  auto it = st.metadata.find(key);
  if (it == st.metadata.end()) {
    throw Error::corrupt("memory '" + path + "': the header has no '" + key + "' setting");
  }
  return it->second;
}

double parse_number(const std::string& text, const std::string& key, const std::string& path) {
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  throw Error::corrupt("memory '" + path + "': setting '" + key + "' is not a number: '" + text +
                       "'");
}

// A parsed memory file's tensors and settings, checked; `path` names it in errors.
EmbeddingMemory from_safetensors(const SafeTensors& st, const std::string& path, int32_t dim);

}  // namespace

void check_memory_settings(const MemorySettings& s) {
  if (s.k < 1)
    throw Error::invalid_argument("memory k must be at least 1, got " + std::to_string(s.k));
  if (!(s.temperature > 0) || !std::isfinite(s.temperature)) {
    throw Error::invalid_argument("memory temperature must be positive, got " +
                                  std::to_string(s.temperature));
  }
  if (!(s.weight >= 0) || !std::isfinite(s.weight)) {
    throw Error::invalid_argument("memory weight must be 0 or more, got " +
                                  std::to_string(s.weight));
  }
  if (!((s.image_weight >= 0 || s.image_weight == -1) && std::isfinite(s.image_weight))) {
    throw Error::invalid_argument(
        "memory image_weight must be 0 or more (or -1: the weight), got " +
        std::to_string(s.image_weight));
  }
  if (!(s.gate_low >= -1 && s.gate_low <= s.gate_high && s.gate_high <= 1)) {
    throw Error::invalid_argument(
        "memory gate must satisfy -1 <= gate_low <= gate_high <= 1, got gate_low " +
        std::to_string(s.gate_low) + ", gate_high " + std::to_string(s.gate_high));
  }
  if (!(s.recall_weight >= 0) || !std::isfinite(s.recall_weight)) {
    throw Error::invalid_argument("memory recall_weight must be 0 or more, got " +
                                  std::to_string(s.recall_weight));
  }
  if (!(s.recall_gate_low >= -1 && s.recall_gate_low <= s.recall_gate_high &&
        s.recall_gate_high <= 1)) {
    throw Error::invalid_argument(
        "memory recall gate must satisfy -1 <= recall_gate_low <= recall_gate_high <= 1, got "
        "recall_gate_low " +
        std::to_string(s.recall_gate_low) + ", recall_gate_high " +
        std::to_string(s.recall_gate_high));
  }
  if (s.hub_k < 1) {
    throw Error::invalid_argument("memory hub_k must be at least 1, got " +
                                  std::to_string(s.hub_k));
  }
  if (!(s.hub_weight >= 0) || !std::isfinite(s.hub_weight)) {
    throw Error::invalid_argument("memory hub_weight must be 0 or more, got " +
                                  std::to_string(s.hub_weight));
  }
}

void write_memory(const std::string& path, const EmbeddingMemory& m) {
  check_consistent(m, "memory '" + path + "'");
  SafeTensors st;
  st.tensors["image_keys"] = half_rows(m.image_keys, m.n_images(), m.dim);
  st.tensors["text_keys"] = half_rows(m.text_keys, m.n_texts(), m.dim);
  TensorData pairs;
  pairs.dtype = DType::kI32;
  pairs.shape = {static_cast<int64_t>(m.pairs.size()), 2};
  pairs.bytes.resize(m.pairs.size() * 8);
  for (size_t p = 0; p < m.pairs.size(); ++p) {
    const int32_t row[2] = {m.pairs[p].first, m.pairs[p].second};
    std::memcpy(pairs.bytes.data() + p * 8, row, 8);  // little-endian hosts only, as the format
  }
  st.tensors["pairs"] = std::move(pairs);
  st.metadata["format"] = "mmsearch-memory-1";
  st.metadata["k"] = std::to_string(m.settings.k);
  st.metadata["temperature"] = std::to_string(m.settings.temperature);
  st.metadata["weight"] = std::to_string(m.settings.weight);
  st.metadata["image_weight"] = std::to_string(m.settings.image_weight);
  st.metadata["gate_low"] = std::to_string(m.settings.gate_low);
  st.metadata["gate_high"] = std::to_string(m.settings.gate_high);
  st.metadata["recall_weight"] = std::to_string(m.settings.recall_weight);
  st.metadata["recall_gate_low"] = std::to_string(m.settings.recall_gate_low);
  st.metadata["recall_gate_high"] = std::to_string(m.settings.recall_gate_high);
  if (m.has_hub_banks()) {
    const int64_t d = m.dim;
    st.tensors["text_bank"] =
        half_rows(m.text_bank, static_cast<int64_t>(m.text_bank.size()) / d, m.dim);
    st.tensors["image_bank"] =
        half_rows(m.image_bank, static_cast<int64_t>(m.image_bank.size()) / d, m.dim);
    st.metadata["hub_k"] = std::to_string(m.settings.hub_k);
    st.metadata["hub_weight"] = std::to_string(m.settings.hub_weight);
  }
  write_safetensors(path, st);
}

EmbeddingMemory read_memory(const std::string& path, int32_t dim) {
  return from_safetensors(read_safetensors(path), path, dim);
}

EmbeddingMemory parse_memory(const uint8_t* data, size_t size, const std::string& name,
                             int32_t dim) {
  return from_safetensors(parse_safetensors(data, size, name), name, dim);
}

namespace {

EmbeddingMemory from_safetensors(const SafeTensors& st, const std::string& path, int32_t dim) {
  if (metadata_value(st, "format", path) != "mmsearch-memory-1") {
    throw Error::corrupt("memory '" + path + "': not an mmsearch memory (format '" +
                         st.metadata.at("format") + "')");
  }
  auto tensor = [&](const std::string& name) -> const TensorData& {
    auto it = st.tensors.find(name);
    if (it == st.tensors.end()) {
      throw Error::corrupt("memory '" + path + "': tensor '" + name + "' is missing");
    }
    return it->second;
  };
  auto rows_of = [&](const std::string& name) -> const TensorData& {
    const TensorData& t = tensor(name);
    if (t.dtype != DType::kF16 || t.shape.size() != 2) {
      throw Error::corrupt("memory '" + path + "': tensor '" + name + "' must be F16 [n, dim]");
    }
    if (t.shape[1] != dim) {
      throw Error::mismatch("memory '" + path + "': tensor '" + name + "' has dimension " +
                            std::to_string(t.shape[1]) + ", the model embeds in " +
                            std::to_string(dim) + " (a memory built with another model)");
    }
    return t;
  };
  EmbeddingMemory m;
  m.dim = dim;
  m.image_keys = float_rows(rows_of("image_keys"));
  m.text_keys = float_rows(rows_of("text_keys"));
  const TensorData& pairs = tensor("pairs");
  if (pairs.dtype != DType::kI32 || pairs.shape.size() != 2 || pairs.shape[1] != 2) {
    throw Error::corrupt("memory '" + path + "': tensor 'pairs' must be I32 [n, 2]");
  }
  m.pairs.resize(pairs.shape[0]);
  for (size_t p = 0; p < m.pairs.size(); ++p) {
    int32_t row[2];
    std::memcpy(row, pairs.bytes.data() + p * 8, 8);
    m.pairs[p] = {row[0], row[1]};
  }
  const double k = parse_number(metadata_value(st, "k", path), "k", path);
  if (!(k >= 1 && k <= 1024) || k != std::floor(k)) {
    throw Error::corrupt("memory '" + path + "': setting 'k' must be an integer in 1..1024, got " +
                         metadata_value(st, "k", path));
  }
  m.settings.k = static_cast<int32_t>(k);
  m.settings.temperature =
      parse_number(metadata_value(st, "temperature", path), "temperature", path);
  m.settings.weight = parse_number(metadata_value(st, "weight", path), "weight", path);
  // Settings added after the format's first files, each at what an older file meant: no gate
  // (-1, -1), no recall of its own images (recall_weight 0), images pulled by `weight`
  // (image_weight -1).
  m.settings.gate_low = m.settings.gate_high = -1;
  m.settings.recall_weight = 0;
  m.settings.image_weight = -1;
  for (auto [key, value] :
       {std::pair{"gate_low", &m.settings.gate_low}, std::pair{"gate_high", &m.settings.gate_high},
        std::pair{"recall_weight", &m.settings.recall_weight},
        std::pair{"recall_gate_low", &m.settings.recall_gate_low},
        std::pair{"recall_gate_high", &m.settings.recall_gate_high},
        std::pair{"image_weight", &m.settings.image_weight}}) {
    if (st.metadata.count(key)) *value = parse_number(st.metadata.at(key), key, path);
  }
  // Hubness-aware scoring's banks, in files written since it exists; without them, none.
  const bool text_bank = st.tensors.count("text_bank"), image_bank = st.tensors.count("image_bank");
  if (text_bank != image_bank) {
    throw Error::corrupt("memory '" + path + "': tensor '" +
                         std::string(text_bank ? "image_bank" : "text_bank") +
                         "' is missing (the hub banks come together)");
  }
  if (text_bank) {
    m.text_bank = float_rows(rows_of("text_bank"));
    m.image_bank = float_rows(rows_of("image_bank"));
    const double hub_k = parse_number(metadata_value(st, "hub_k", path), "hub_k", path);
    if (!(hub_k >= 1 && hub_k <= 1024) || hub_k != std::floor(hub_k)) {
      throw Error::corrupt("memory '" + path +
                           "': setting 'hub_k' must be an integer in 1..1024, got " +
                           metadata_value(st, "hub_k", path));
    }
    m.settings.hub_k = static_cast<int32_t>(hub_k);
    m.settings.hub_weight =
        parse_number(metadata_value(st, "hub_weight", path), "hub_weight", path);
  }
  try {
    check_consistent(m, "memory '" + path + "'");
  } catch (const Error& e) {
    throw Error::corrupt(e.what());
  }
  return m;
}

}  // namespace

}  // namespace mms
