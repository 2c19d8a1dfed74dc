#include "training/memory_builder.h"

#include <algorithm>
#include <iostream>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"
#include "training/image_store.h"
#include "training/manifest.h"

namespace mms {
namespace {

// The train pairs of one source, limited to `cap` of its images (0: all) by a seeded sample.
std::vector<Pair> train_pairs(const TrainDataSource& source, uint64_t seed) {
  std::vector<Pair> pairs;
  for (Pair& p : read_pairs(source.path)) {
    if (p.split == Split::kTrain) pairs.push_back(std::move(p));
  }
  if (pairs.empty()) {
    throw Error::invalid_argument("memory: training data '" + source.path + "' has no train pairs");
  }
  if (source.max_per_epoch <= 0) return pairs;
  std::vector<std::string> images;
  std::unordered_set<std::string> seen;
  for (const Pair& p : pairs) {
    if (seen.insert(p.image).second) images.push_back(p.image);
  }
  if (static_cast<int64_t>(images.size()) <= source.max_per_epoch) return pairs;
  std::mt19937_64 rng(seed);
  std::shuffle(images.begin(), images.end(), rng);
  const std::unordered_set<std::string> kept(images.begin(), images.begin() + source.max_per_epoch);
  std::vector<Pair> out;
  for (Pair& p : pairs) {
    if (kept.count(p.image)) out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

EmbeddingMemory build_memory(const Embedder& embedder, const TrainConfig& config,
                             const MemorySettings& settings, int32_t threads,
                             MemoryBuildStats* stats, MemoryTexts kinds) {
  if (!kinds.captions && !kinds.titles && !kinds.keywords) {
    throw Error::invalid_argument("memory: no kind of text chosen for the memory");
  }
  check_memory_settings(settings);
  if (embedder.uses_memory()) {
    throw Error::invalid_argument(
        "memory: the model must be loaded without its memory (keys are the encoders' own "
        "embeddings)");
  }
  if (config.data.empty()) throw Error::invalid_argument("memory: the config names no data");
  std::vector<Pair> pairs;
  for (size_t s = 0; s < config.data.size(); ++s) {
    std::vector<Pair> p = train_pairs(config.data[s], config.seed + s);
    pairs.insert(pairs.end(), std::make_move_iterator(p.begin()), std::make_move_iterator(p.end()));
  }

  std::vector<std::string> paths;
  std::unordered_map<std::string, int32_t> image_row;
  for (const Pair& p : pairs) {
    if (image_row.emplace(p.image, static_cast<int32_t>(paths.size())).second) {
      paths.push_back(p.image);
    }
  }
  const ImageStore store = build_image_store(paths, embedder.image_size(), threads, config.cache_dir);

  // Loaded images get memory rows in order; failed ones drop out with their pairs.
  EmbeddingMemory m;
  m.dim = embedder.dim();
  m.settings = settings;
  std::vector<int32_t> row_of_path(paths.size(), -1);
  std::vector<size_t> loaded;
  for (size_t i = 0; i < paths.size(); ++i) {
    if (store.errors[i].empty()) {
      row_of_path[i] = static_cast<int32_t>(loaded.size());
      loaded.push_back(i);
    }
  }
  std::vector<std::string> texts;
  std::unordered_map<std::string, int32_t> text_row;
  std::unordered_set<int64_t> seen_pairs;
  for (const Pair& p : pairs) {
    const int32_t i = row_of_path[image_row.at(p.image)];
    if (i < 0) continue;
    auto pair_with = [&](const std::string& text) {
      auto [it, added] = text_row.emplace(text, static_cast<int32_t>(texts.size()));
      if (added) texts.push_back(text);
      if (seen_pairs.insert((static_cast<int64_t>(i) << 32) | it->second).second) {
        m.pairs.emplace_back(i, it->second);
      }
    };
    if (kinds.captions) pair_with(p.caption);
    if (kinds.titles && !p.title.empty()) pair_with(p.title);
    if (kinds.keywords) {
      for (const std::string& k : p.keywords) pair_with(k);
    }
  }
  if (texts.empty()) throw Error::invalid_argument("memory: the training pairs give no text");
  // An image none of whose texts was chosen (a Fashion-MNIST photo has no title or keywords)
  // leaves the memory: every memory image must have a text.
  std::vector<int32_t> new_row(loaded.size(), -1);
  for (const auto& [image, text] : m.pairs) new_row[image] = 0;
  std::vector<size_t> kept;
  for (size_t i = 0; i < loaded.size(); ++i) {
    if (new_row[i] == 0) {
      new_row[i] = static_cast<int32_t>(kept.size());
      kept.push_back(loaded[i]);
    }
  }
  for (auto& pair : m.pairs) pair.first = new_row[pair.first];
  const int64_t textless = static_cast<int64_t>(loaded.size() - kept.size());
  loaded = std::move(kept);
  if (loaded.empty()) throw Error::invalid_argument("memory: no training image could be loaded");

  m.image_keys = embed_stored_images(embedder, store, loaded);
  m.text_keys = embedder.embed_texts(texts);
  add_hub_banks(m, static_cast<uint64_t>(config.seed));
  if (stats) {
    stats->images = m.n_images();
    stats->texts = m.n_texts();
    stats->pairs = static_cast<int64_t>(m.pairs.size());
    stats->failed_images = static_cast<int64_t>(paths.size() - loaded.size()) - textless;
    stats->textless_images = textless;
  }
  return m;
}

MemoryTexts parse_memory_texts(const std::string& list) {
  MemoryTexts out{false, false, false};
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(',', start);
    const std::string kind = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (kind == "captions") {
      out.captions = true;
    } else if (kind == "titles") {
      out.titles = true;
    } else if (kind == "keywords") {
      out.keywords = true;
    } else {
      throw Error::invalid_argument("memory texts: unknown kind '" + kind +
                                    "' (expected captions, titles or keywords)");
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace mms
