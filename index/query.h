// Compound queries and result filters: the one implementation behind `mmsearch search` and
// every search route of the HTTP service, so both answer the same.
//
// A query is a sum of weighted terms, each a text, an image, an indexed item (its stored
// vector) or a raw embedding: q = normalize(sum_i w_i * unit(e_i)). A negative weight
// subtracts a concept: 2 x "golden retriever" + this photo - "fruit". The written syntax,
// shared by `mmsearch search --query` and the "query" field of POST /v1/search:
//
//   2 * "golden retriever" + image:photo.jpg - "fruit" + item:42 + 0.5 * vector:emb.json
//
// Terms are separated by a `+` or `-` standing alone between spaces (so "t-shirt" stays one
// word); a weight is a number before `*`; texts may be quoted ("..." with \" and \\) or
// bare words; image: and vector: name files (a JSON array of floats for vector:), item: an
// item id. Filters then shape the ranked list: a minimum score instead of always k results,
// a folder to search within, and collapsing near-identical results.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "index/search.h"

namespace mms {

class Collection;

struct QueryTerm {
  enum class Kind { kText, kImage, kItem, kVector };
  Kind kind = Kind::kText;
  float weight = 1.f;         // finite, non-zero; negative subtracts
  std::string text;           // kText: the text; kImage / kVector from the syntax: the file
  int64_t item = 0;           // kItem: an item id of the collection
  std::vector<float> vector;  // kVector given as values: [dim], any non-zero norm
  bool from_image = false;    // kVector: an image's embedding (an uploaded image), not raw
};

// Parses the syntax above. Throws Error::invalid_argument naming the position and what was
// expected, for an empty query, a dangling operator, a bad weight or an empty term.
std::vector<QueryTerm> parse_query(const std::string& query);

// How a caller turns texts and image files into embeddings ([dim], unit norm): the CLI calls
// the Embedder, the HTTP service goes through its batcher (and refuses files on the server).
struct TermEmbedder {
  std::function<std::vector<float>(const std::string& text)> text;
  std::function<std::vector<float>(const std::string& image_file)> image_file;
  std::function<std::vector<float>(const std::string& vector_file)> vector_file;
};

// Reads a raw embedding file: a JSON array of numbers.
std::vector<float> read_vector_file(const std::string& path);

// The unit query vector of `terms` (see above). kItem terms use the item's stored vector.
// Throws Error::invalid_argument for no terms, a zero or non-finite weight, a vector of the
// wrong size or zero norm, or terms that cancel out; Error::not_found for an unknown item,
// or one without a vector (failed, or stale).
std::vector<float> compose_query(const Collection& collection, const std::vector<QueryTerm>& terms,
                                 const TermEmbedder& embedder);

// Hubness-aware scoring (encoders/memory.h): the hub weight of a query of `terms` over
// `target`, for Collection::search: `model_weight` (Embedder::hub_weight) times the share,
// by absolute weight, of its terms of the other modality (texts over images; images and
// items over texts, and vectors from_image); raw vectors are of neither. A text query over images
// takes the whole weight, an example image over images none.
float query_hub_weight(const std::vector<QueryTerm>& terms, SearchTarget target,
                       float model_weight);

struct QueryFilters {
  std::optional<float> min_score;  // drop results scoring below it (in [-1, 1])
  std::string path_prefix;         // images only: within this folder (or exactly this file)
  bool dedup = false;              // collapse near-identical results into the best of them
  float dedup_threshold = 0.99f;   // cosine of two results' vectors that counts as identical
};

// Throws Error::invalid_argument for a min_score or dedup_threshold out of range, or a
// path_prefix with target texts.
void check_filters(const QueryFilters& filters, SearchTarget target);

// The best `fetch` hits of the query, best first; called again with a larger `fetch` while
// filters leave fewer than k results and more hits exist.
using HitFetcher = std::function<std::vector<SearchHit>(int32_t fetch)>;

// How many hits search_filtered asks its fetcher for first: k, or more when filters may drop
// some (so a caller can fetch them ahead, e.g. in the same pass as the query's embedding).
int32_t first_fetch(int32_t k, const QueryFilters& filters);

// The k best results that pass `filters`. With dedup, a result whose file has the same
// content hash as a better one, or whose vector is within dedup_threshold of it, is folded
// into that result's `duplicates`.
std::vector<SearchResult> search_filtered(const Collection& collection, SearchTarget target,
                                          int32_t k, const QueryFilters& filters,
                                          const HitFetcher& fetch);

// search_filtered with Collection::search as the fetcher (with the query's hub weight,
// query_hub_weight).
std::vector<SearchResult> search_query(const Collection& collection,
                                       const std::vector<float>& query, SearchTarget target,
                                       int32_t k, const QueryFilters& filters,
                                       float hub_weight = 0);

}  // namespace mms
