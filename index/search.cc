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
                                            int32_t k, float hub_weight) {
  return search_query(collection, query, target, k, QueryFilters{}, hub_weight);
}

std::vector<SearchResult> resolve_hits(const Collection& collection,
                                       const std::vector<SearchHit>& found, SearchTarget target) {
  const bool images = target == SearchTarget::kImages;
  std::vector<int64_t> ids;
  ids.reserve(found.size());
  for (const SearchHit& hit : found) ids.push_back(hit.id);
  // One catalog query for all the hits; one removed between the index snapshot and now is
  // left out.
  std::vector<std::optional<ItemRecord>> items;
  std::vector<std::optional<TextRecord>> texts;
  if (images) {
    items = collection.items(ids);
  } else {
    texts = collection.texts(ids);
  }
  std::vector<SearchResult> hits;
  for (size_t i = 0; i < found.size(); ++i) {
    SearchResult h;
    h.id = found[i].id;
    h.score = found[i].score;
    if (images) {
      if (!items[i]) continue;
      h.path = std::move(items[i]->path);
      h.caption = items[i]->caption.value_or("");
      h.content_hash = std::move(items[i]->content_hash);
    } else {
      if (!texts[i]) continue;
      h.text = std::move(texts[i]->text);
    }
    hits.push_back(std::move(h));
  }
  return hits;
}

}  // namespace mms
