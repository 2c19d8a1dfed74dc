// Natural-query evaluation: how well a model answers what people type ("a cat", "skull",
// "a picture of a car") rather than whole test captions. Queries come from a manifest's
// keywords: each keyword with enough images becomes one query per template, and an image is
// relevant when the keyword is among its keywords or its title's words. Figures are
// precision@10 and mAP@100, over the whole collection (every image of the manifest, all
// splits, as a user would index the folder) and over one split's images alone (the test
// split, or validation when tuning).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "training/manifest.h"

namespace mms {

struct QueryEvalOptions {
  int32_t min_images = 8;        // a keyword needs this many relevant images in the collection
  int32_t min_split_images = 2;  // and this many in the evaluated split
  std::vector<std::string> templates = {"a {}", "{}", "a picture of {}"};
};

// Words too generic to be a query ("clip art", "icon", "symbol", ...): left out of the
// keywords. Compared after normalize_keyword.
bool is_generic_keyword(std::string_view keyword);

// Lower-case (ASCII), trimmed, inner whitespace collapsed to one space.
std::string normalize_keyword(std::string_view keyword);

// The queries a manifest poses (built by natural_queries).
struct NaturalQueries {
  std::vector<std::string> images;  // the collection: unique images, first-seen order
  std::vector<uint8_t> in_split;    // [images]: the image is in the evaluated split
  std::vector<std::string> keywords;
  std::vector<std::vector<int32_t>> relevant;  // [keywords]: sorted indices into images
};

// Keywords come from the pairs' "keywords" (or, for a pair without them, from a caption
// written as "<text> Keywords: a, b."); an image's terms are the union over its pairs of its
// keywords, and its title's words and word sequences. Keywords are kept when they are not
// generic, have a letter, and reach options.min_images / min_split_images relevant images;
// they are listed alphabetically.
NaturalQueries natural_queries(const std::vector<Pair>& pairs, Split split,
                               const QueryEvalOptions& options);

struct QueryFigures {
  double p10 = 0;     // precision@10, percent, mean over queries
  double map100 = 0;  // mean average precision over the top 100, percent
  int64_t n_images = 0, n_queries = 0;
};

struct KeywordFigures {
  std::string keyword;
  double p10 = 0, ap100 = 0;  // over the collection, mean over the templates, percent
};

struct QueryMetrics {
  QueryFigures collection, split;        // all images; the evaluated split's images
  std::vector<KeywordFigures> keywords;  // in NaturalQueries::keywords order
  std::vector<std::string> templates;
};

// image_emb: [queries.images.size(), dim] and query_emb: [keywords * templates, dim], keyword
// major (row k * templates + t is keyword k in template t), rows of unit norm. Ties are
// broken against the query (an irrelevant image tied with a relevant one ranks first).
// With hub_weight and image_hubs [images] (h of each image, encoders/memory.h), images are
// ranked as search ranks them: cosine - hub_weight * h.
QueryMetrics query_metrics(const NaturalQueries& queries, const std::vector<float>& image_emb,
                           const std::vector<float>& query_emb, int32_t dim,
                           const std::vector<std::string>& templates, float hub_weight = 0,
                           const std::vector<float>& image_hubs = {});

// {"collection": {"p10", "map100", "n_images", "n_queries"}, "<split>": {...}, "templates",
//  "n_keywords", "best": [{"keyword", "p10", "ap100"}] (top `shown` by p10), "worst": [...]}
std::string query_metrics_to_json(const QueryMetrics& metrics, Split split, size_t shown = 10);

// The `shown` best and worst keywords by collection precision@10 (ties by keyword).
std::vector<KeywordFigures> best_keywords(const QueryMetrics& metrics, size_t shown);
std::vector<KeywordFigures> worst_keywords(const QueryMetrics& metrics, size_t shown);

}  // namespace mms
