// Searching a collection with a text or an example image: the one implementation behind
// `mmsearch search` and the HTTP service, so both answer the same.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mms {

class Collection;
class Embedder;
struct SearchHit;

enum class SearchTarget { kImages, kTexts };

// "images" / "texts"; throws Error::invalid_argument for anything else.
SearchTarget parse_search_target(const std::string& name);

struct SearchResult {
  int64_t id = 0;
  float score = 0;  // cosine similarity, less the hub penalty across modalities (Collection)
  std::string path;                 // images: the file
  std::string text;                 // texts: the text
  std::string caption;              // images: the attached caption, if any
  std::vector<int64_t> duplicates;  // with dedup: the ids folded into this result
  std::string content_hash;         // images: the file's, for dedup (not serialized)
};

// Query embeddings, [dim] unit norm. The image is loaded with the default ImageLimits.
std::vector<float> embed_text_query(const Embedder& embedder, const std::string& text);
std::vector<float> embed_image_query(const Embedder& embedder, const std::string& image_path);

// Hits of Collection::search turned into results (path and caption, or text), in order;
// hits whose item or text was removed since the index snapshot are dropped.
std::vector<SearchResult> resolve_hits(const Collection& collection,
                                       const std::vector<SearchHit>& hits, SearchTarget target);

// The k best items (or texts) for `query`, best first; hub_weight as Collection::search's
// (hubness-aware scoring: Embedder::hub_weight() for a query of the other modality).
std::vector<SearchResult> search_collection(const Collection& collection,
                                            const std::vector<float>& query, SearchTarget target,
                                            int32_t k, float hub_weight = 0);

}  // namespace mms
