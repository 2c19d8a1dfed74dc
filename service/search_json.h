// Search results as JSON, the one shape `mmsearch search --json` prints and
// `POST /v1/search/*` answers: {"results": [{"id", "score", "path" or "text", "caption"?,
// "duplicates"?}], "took_ms"}; "duplicates" lists the ids a dedup folded into a result.
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "index/search.h"

namespace mms {

nlohmann::json search_results_json(const std::vector<SearchResult>& hits, SearchTarget target,
                                   double took_ms);

}  // namespace mms
