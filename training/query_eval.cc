#include "training/query_eval.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <unordered_map>

#include "common/error.h"
#include "training/augment.h"  // split_keyword_caption

namespace mms {
namespace {

// Words that name the medium or the collection, not what a picture shows. Every source's
// keywords carry some ("clip art", "icon"); as queries they would match thousands of images.
const std::set<std::string, std::less<>>& generic_keywords() {
  static const std::set<std::string, std::less<>> words = {
      "clip art",      "clipart",      "clip-art",
      "icon",          "icons",        "symbol",
      "symbols",       "image",        "picture",
      "drawing",       "illustration", "graphic",
      "graphics",      "art",          "svg",
      "png",           "vector",       "openclipart",
      "public domain", "inkscape",     "black and white",
      "color",         "colour",       "outline",
      "line",          "fill",         "filled",
      "solid",         "simple",       "design",
      "shape",         "shapes",       "sign",
      "object",        "objects",      "stamp",
      "emoji",         "smiley",       "unsorted",
      "other",         "misc",         "new",
      "remix",         "cartoon",      "sketch",
      "photo",         "logo",         "people",
      "person",        "thing",        "things",
      "stuff",         "set",          "collection",
      "media",         "animal",       "animals",
      "nature",        "decoration",   "decorative",
      "element",       "elements",
  };
  return words;
}

bool has_letter(std::string_view text) {
  // Any ASCII letter, or any non-ASCII byte (letters of other scripts).
  return std::any_of(text.begin(), text.end(), [](char c) {
    const unsigned char u = static_cast<unsigned char>(c);
    return u >= 0x80 || std::isalpha(u);
  });
}

// Lower-case words of a title, split at anything but letters, digits and non-ASCII bytes.
std::vector<std::string> title_words(std::string_view title) {
  std::vector<std::string> words;
  std::string word;
  for (char c : title) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x80 || std::isalnum(u)) {
      word += static_cast<char>(std::tolower(u));
    } else if (!word.empty()) {
      words.push_back(std::move(word));
      word.clear();
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

// precision@10 and AP@100 (fractions) of one query's scores over `gallery` (indices into the
// score row), with `relevant` a sorted list of gallery positions.
std::pair<double, double> rank_figures(const std::vector<float>& scores,
                                       const std::vector<uint8_t>& is_relevant,
                                       int64_t n_relevant) {
  const size_t n = scores.size();
  const size_t top = std::min<size_t>(100, n);
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Higher score first; on a tie the irrelevant image ranks first (against the query).
  auto before = [&](int32_t a, int32_t b) {
    if (scores[a] != scores[b]) return scores[a] > scores[b];
    if (is_relevant[a] != is_relevant[b]) return is_relevant[a] < is_relevant[b];
    return a < b;
  };
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(top), order.end(),
                    before);
  int64_t hits = 0, hits10 = 0;
  double ap = 0;
  for (size_t r = 0; r < top; ++r) {
    if (!is_relevant[order[r]]) continue;
    ++hits;
    if (r < 10) ++hits10;
    ap += static_cast<double>(hits) / static_cast<double>(r + 1);
  }
  const double p10 = static_cast<double>(hits10) / 10.0;
  return {p10, ap / static_cast<double>(std::min<int64_t>(n_relevant, 100))};
}

}  // namespace

std::string normalize_keyword(std::string_view keyword) {
  std::string out;
  bool space = false;
  for (char c : keyword) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (std::isspace(u)) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += static_cast<char>(std::tolower(u));
  }
  return out;
}

bool is_generic_keyword(std::string_view keyword) {
  return generic_keywords().count(normalize_keyword(keyword)) > 0;
}

NaturalQueries natural_queries(const std::vector<Pair>& pairs, Split split,
                               const QueryEvalOptions& options) {
  NaturalQueries q;
  std::unordered_map<std::string, int32_t> index_of;
  std::vector<std::set<std::string>> terms;  // per image: keywords and title word sequences
  std::set<std::string> candidates;
  for (const Pair& p : pairs) {
    auto [it, added] = index_of.emplace(p.image, static_cast<int32_t>(q.images.size()));
    if (added) {
      q.images.push_back(p.image);
      q.in_split.push_back(0);
      terms.emplace_back();
    }
    const int32_t i = it->second;
    if (p.split == split) q.in_split[i] = 1;
    std::vector<std::string> keywords;
    for (const std::string& k : p.keywords) keywords.push_back(normalize_keyword(k));
    if (keywords.empty()) {
      for (const std::string& k : split_keyword_caption(p.caption).keywords) {
        keywords.push_back(normalize_keyword(k));
      }
    }
    for (std::string& k : keywords) {
      if (k.empty()) continue;
      if (!is_generic_keyword(k) && has_letter(k)) candidates.insert(k);
      terms[i].insert(std::move(k));
    }
    // The title's words and every run of up to three of them, so "christmas tree" matches
    // the title "Decorated Christmas tree".
    const std::vector<std::string> words = title_words(p.title);
    for (size_t a = 0; a < words.size(); ++a) {
      std::string run;
      for (size_t b = a; b < std::min(words.size(), a + 3); ++b) {
        run += (b == a ? "" : " ") + words[b];
        terms[i].insert(run);
      }
    }
  }
  for (const std::string& k : candidates) {
    std::vector<int32_t> relevant;
    int32_t n_in_split = 0;
    for (size_t i = 0; i < q.images.size(); ++i) {
      if (terms[i].count(k)) {
        relevant.push_back(static_cast<int32_t>(i));
        n_in_split += q.in_split[i];
      }
    }
    if (static_cast<int32_t>(relevant.size()) < options.min_images ||
        n_in_split < options.min_split_images) {
      continue;
    }
    q.keywords.push_back(k);
    q.relevant.push_back(std::move(relevant));
  }
  return q;
}

QueryMetrics query_metrics(const NaturalQueries& queries, const std::vector<float>& image_emb,
                           const std::vector<float>& query_emb, int32_t dim,
                           const std::vector<std::string>& templates, float hub_weight,
                           const std::vector<float>& image_hubs) {
  const size_t n_images = queries.images.size();
  const size_t n_templates = templates.size();
  const size_t n_keywords = queries.keywords.size();
  if (dim <= 0 || n_templates == 0 || image_emb.size() != n_images * size_t(dim) ||
      query_emb.size() != n_keywords * n_templates * size_t(dim)) {
    throw Error::invalid_argument("query_metrics: embeddings do not match the queries");
  }
  const bool penalized = hub_weight != 0 && !image_hubs.empty();
  if (penalized && image_hubs.size() != n_images) {
    throw Error::invalid_argument("query_metrics: image hubs do not match the images");
  }
  QueryMetrics m;
  m.templates = templates;
  std::vector<int32_t> split_images;
  for (size_t i = 0; i < n_images; ++i) {
    if (queries.in_split[i]) split_images.push_back(static_cast<int32_t>(i));
  }
  m.collection.n_images = static_cast<int64_t>(n_images);
  m.split.n_images = static_cast<int64_t>(split_images.size());

  std::vector<float> scores(n_images), split_scores(split_images.size());
  std::vector<uint8_t> relevant(n_images), split_relevant(split_images.size());
  for (size_t k = 0; k < n_keywords; ++k) {
    std::fill(relevant.begin(), relevant.end(), 0);
    for (int32_t i : queries.relevant[k]) relevant[i] = 1;
    int64_t n_split_relevant = 0;
    for (size_t t = 0; t < split_images.size(); ++t) {
      split_relevant[t] = relevant[split_images[t]];
      n_split_relevant += split_relevant[t];
    }
    KeywordFigures figures{queries.keywords[k], 0, 0};
    for (size_t t = 0; t < n_templates; ++t) {
      const float* query = query_emb.data() + (k * n_templates + t) * size_t(dim);
      for (size_t i = 0; i < n_images; ++i) {
        const float* image = image_emb.data() + i * size_t(dim);
        float s = 0;
        for (int32_t d = 0; d < dim; ++d) s += query[d] * image[d];
        scores[i] = penalized ? s - hub_weight * image_hubs[i] : s;
      }
      const auto [p10, ap] =
          rank_figures(scores, relevant, static_cast<int64_t>(queries.relevant[k].size()));
      figures.p10 += 100.0 * p10 / static_cast<double>(n_templates);
      figures.ap100 += 100.0 * ap / static_cast<double>(n_templates);
      m.collection.p10 += 100.0 * p10;
      m.collection.map100 += 100.0 * ap;
      ++m.collection.n_queries;
      if (n_split_relevant == 0) continue;
      for (size_t j = 0; j < split_images.size(); ++j) split_scores[j] = scores[split_images[j]];
      const auto [tp10, tap] = rank_figures(split_scores, split_relevant, n_split_relevant);
      m.split.p10 += 100.0 * tp10;
      m.split.map100 += 100.0 * tap;
      ++m.split.n_queries;
    }
    m.keywords.push_back(std::move(figures));
  }
  for (QueryFigures* f : {&m.collection, &m.split}) {
    if (f->n_queries == 0) continue;
    f->p10 /= static_cast<double>(f->n_queries);
    f->map100 /= static_cast<double>(f->n_queries);
  }
  return m;
}

namespace {

std::vector<KeywordFigures> ranked_keywords(const QueryMetrics& metrics, size_t shown, bool best) {
  std::vector<KeywordFigures> sorted = metrics.keywords;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [&](const KeywordFigures& a, const KeywordFigures& b) {
                     if (a.p10 != b.p10) return best ? a.p10 > b.p10 : a.p10 < b.p10;
                     if (a.ap100 != b.ap100) return best ? a.ap100 > b.ap100 : a.ap100 < b.ap100;
                     return a.keyword < b.keyword;
                   });
  if (sorted.size() > shown) sorted.resize(shown);
  return sorted;
}

nlohmann::json keyword_list(const std::vector<KeywordFigures>& list) {
  nlohmann::json out = nlohmann::json::array();
  for (const KeywordFigures& k : list) {
    out.push_back({{"keyword", k.keyword}, {"p10", k.p10}, {"ap100", k.ap100}});
  }
  return out;
}

nlohmann::json figures_json(const QueryFigures& f) {
  return {
      {"p10", f.p10}, {"map100", f.map100}, {"n_images", f.n_images}, {"n_queries", f.n_queries}};
}

}  // namespace

std::vector<KeywordFigures> best_keywords(const QueryMetrics& metrics, size_t shown) {
  return ranked_keywords(metrics, shown, true);
}

std::vector<KeywordFigures> worst_keywords(const QueryMetrics& metrics, size_t shown) {
  return ranked_keywords(metrics, shown, false);
}

std::string query_metrics_to_json(const QueryMetrics& metrics, Split split, size_t shown) {
  const nlohmann::json out = {
      {"collection", figures_json(metrics.collection)},
      {split_name(split), figures_json(metrics.split)},
      {"templates", metrics.templates},
      {"n_keywords", metrics.keywords.size()},
      {"best", keyword_list(best_keywords(metrics, shown))},
      {"worst", keyword_list(worst_keywords(metrics, shown))},
  };
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace mms
