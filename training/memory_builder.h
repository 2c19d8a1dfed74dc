// Builds a model's memory (encoders/memory.h) from the training pairs of a train config:
// `mmsearch memory` and scripts/train.sh call it once a model is trained. Plain types only.
#pragma once

#include <cstdint>
#include <string>

#include "encoders/embedder.h"
#include "encoders/memory.h"
#include "training/train_config.h"

namespace mms {

struct MemoryBuildStats {
  int64_t images = 0, texts = 0, pairs = 0;
  int64_t failed_images = 0;    // could not be loaded, left out with their pairs
  int64_t textless_images = 0;  // none of their texts is of the chosen kinds: left out
};

// Every train-split pair of each of config.data's sources, except that a source with
// max_per_epoch > 0 contributes that many of its images (a sample fixed by config.seed)
// with their pairs, as one epoch of training sees it. The keys are `embedder`'s embeddings,
// so load it with use_memory = false (a memory of augmented embeddings is refused).
// Images are decoded through config.cache_dir, as training decodes them. The memory comes
// with its hub banks (add_hub_banks, drawn with config.seed) for hubness-aware scoring.
//
// The memory's texts are the pairs' captions, and with `texts` also their titles and keywords
// (each keyword once, paired with every image it tags), so that a short query ("a cat") finds
// training texts like itself and is pulled toward the images they describe.
struct MemoryTexts {
  bool captions = true, titles = false, keywords = false;
};
EmbeddingMemory build_memory(const Embedder& embedder, const TrainConfig& config,
                             const MemorySettings& settings, int32_t threads,
                             MemoryBuildStats* stats = nullptr, MemoryTexts texts = {});

// Parses "captions,titles,keywords" (any non-empty subset, comma-separated); throws
// Error::invalid_argument naming an unknown kind.
MemoryTexts parse_memory_texts(const std::string& list);

}  // namespace mms
