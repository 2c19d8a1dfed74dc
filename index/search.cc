#include "index/search.h"

#include "common/error.h"
#include "encoders/embedder.h"
#include "encoders/image_io.h"
#include "index/collection.h"
#include "index/query.h"

namespace mms {

SearchTarget parse_search_target(const std::string& name) {
  if (name == "images") return SearchTarget::kImages;
  if (name == "texts") return SearchTarget::kTexts;
  throw Error::invalid_argument("target '" + name + "' is not 'images' or 'texts'");
}

std::vector<float> embed_text_query(const Embedder& embedder, const std::string& text) {
  return embedder.embed_texts({text});
}

std::vector<float> embed_image_query(const Embedder& embedder, const std::string& image_path) {
  const DecodedImage img = load_image_file(image_path, ImageLimits{}, embedder.image_size());
  const std::vector<float> pixels = preprocess_image(img, embedder.image_size());
  return embedder.embed_pixels(pixels.data(), 1);
}

std::vector<SearchResult> search_collection(const Collection& collection,
                                            const std::vector<float>& query, SearchTarget target,
                                            int32_t k) {
  return search_query(collection, query, target, k, QueryFilters{});
}

std::vector<SearchResult> resolve_hits(const Collection& collection,
                                       const std::vector<SearchHit>& found, SearchTarget target) {
  const bool images = target == SearchTarget::kImages;
  std::vector<SearchResult> hits;
  for (const SearchHit& found_hit : found) {
    SearchResult h;
    h.id = found_hit.id;
    h.score = found_hit.score;
    if (images) {
      const auto item = collection.item(h.id);
      if (!item) continue;  // removed between the index snapshot and now
      h.path = item->path;
      h.caption = item->caption.value_or("");
      h.content_hash = item->content_hash;
    } else {
      const auto text = collection.text(h.id);
      if (!text) continue;
      h.text = text->text;
    }
    hits.push_back(std::move(h));
  }
  return hits;
}

}  // namespace mms
