#include "service/search_json.h"

namespace mms {

nlohmann::json search_results_json(const std::vector<SearchResult>& hits, SearchTarget target,
                                   double took_ms) {
  nlohmann::json results = nlohmann::json::array();
  for (const SearchResult& h : hits) {
    nlohmann::json r = {{"id", h.id}, {"score", h.score}};
    if (target == SearchTarget::kImages) {
      r["path"] = h.path;
      if (!h.caption.empty()) r["caption"] = h.caption;
    } else {
      r["text"] = h.text;
    }
    if (!h.duplicates.empty()) r["duplicates"] = h.duplicates;
    results.push_back(r);
  }
  return nlohmann::json{{"results", results}, {"took_ms", took_ms}};
}

}  // namespace mms
