// Retrieval figures by the protocol every mmsearch figure uses: the split's unique images
// and unique texts form two galleries; a text query hits at K if any image paired with that
// exact text is in its top K; an image query hits if any of its texts is in its top K.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "training/manifest.h"

namespace mms {

struct DirectionMetrics {
  double r1 = 0, r5 = 0, r10 = 0;  // percent of queries with a hit in the top 1 / 5 / 10
  double median_rank = 0;          // median over queries of the best relevant item's rank (1 = top)
};

struct RetrievalMetrics {
  DirectionMetrics t2i, i2t;
  int64_t n_images = 0, n_texts = 0;
  // Every query's rank (1 = top) of its best relevant item, in gallery order: t2i_ranks[i]
  // for gallery.texts[i], i2t_ranks[j] for gallery.images[j]. For error analysis.
  std::vector<int64_t> t2i_ranks, i2t_ranks;
};

// Hubness-aware scoring (encoders/memory.h), as search ranks: a gallery item found by a query
// of the other modality scores cosine - weight * its h. Empty: plain cosines.
struct HubPenalty {
  float weight = 0;
  std::vector<float> images, texts;  // h of each gallery image and text (Embedder::*_hubs)
};

// image_emb: [gallery.images.size(), dim], text_emb: [gallery.texts.size(), dim], rows of unit
// norm, row-major. Ties are broken against the query (a relevant item tied with an
// irrelevant one ranks below it), so a constant model scores at chance, never above it.
// With `hubs`, each direction ranks by the hub-penalized score.
RetrievalMetrics retrieval_metrics(const std::vector<float>& image_emb,
                                   const std::vector<float>& text_emb, int32_t dim,
                                   const Gallery& gallery, const HubPenalty& hubs = {});

// The zero-shot task a labelled gallery poses: its classes in first-seen order and each
// image's class index. Both are empty unless every image has a label and there are two or
// more classes.
struct ZeroShotTask {
  std::vector<std::string> classes;
  std::vector<int32_t> labels;  // [gallery.images.size()], indices into classes
};
ZeroShotTask zero_shot_task(const Gallery& gallery);

// The prompt `mmsearch eval` and training validation use unless told otherwise; labels carry
// their article ("a coat").
inline constexpr const char* kDefaultZeroShotTemplate = "a photo of {}";

// One class's prompt: the template with "{}" replaced by the class name, or the class name
// appended after a space when the template has no "{}".
std::string zero_shot_prompt(const std::string& tmpl, const std::string& cls);

// Top-1 accuracy (percent) of classifying each image by its most similar class prompt:
// image_emb [n, dim], prompt_emb [classes, dim], labels [n] indices into the prompts. With
// hub_weight and prompt_hubs [classes] (h of each prompt), by cosine - hub_weight * h.
double zero_shot_accuracy(const std::vector<float>& image_emb, const std::vector<float>& prompt_emb,
                          int32_t dim, const std::vector<int32_t>& labels, float hub_weight = 0,
                          const std::vector<float>& prompt_hubs = {});

// A prompt ensemble, as CLIP's: prompt_sets[t] is template t's [classes, dim] unit rows;
// returns [classes, dim], each class the mean of its rows over the templates, renormalized.
std::vector<float> ensemble_prompts(const std::vector<std::vector<float>>& prompt_sets,
                                    int32_t dim);

// {"t2i": {"r1", "r5", "r10", "median_rank"}, "i2t": {...}, "n_images", "n_texts"}
std::string retrieval_metrics_to_json(const RetrievalMetrics& metrics);

}  // namespace mms
