#include "index/query.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "index/collection.h"

namespace mms {
namespace {

// A piece of the query text: an operator standing alone, or a word / quoted text.
struct Token {
  std::string text;
  size_t at = 0;        // byte offset, for messages
  bool quoted = false;  // a "..." text: never an operator, weight or prefix
};

std::vector<Token> tokenize(const std::string& q) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < q.size()) {
    if (std::isspace(static_cast<unsigned char>(q[i]))) {
      ++i;
      continue;
    }
    Token t;
    t.at = i;
    // A word may end in a quoted part (image:"my photo.jpg"); a token starting with a quote
    // is a quoted text.
    bool in_quote = false;
    while (i < q.size() && (in_quote || !std::isspace(static_cast<unsigned char>(q[i])))) {
      const char c = q[i++];
      if (c == '"') {
        if (t.text.empty() && !in_quote) t.quoted = true;
        in_quote = !in_quote;
        continue;
      }
      if (in_quote && c == '\\' && i < q.size() && (q[i] == '"' || q[i] == '\\')) {
        t.text += q[i++];
        continue;
      }
      t.text += c;
    }
    if (in_quote) {
      throw Error::invalid_argument("query: the quote opened at character " +
                                    std::to_string(t.at + 1) + " is not closed");
    }
    tokens.push_back(std::move(t));
  }
  return tokens;
}

bool is_operator(const Token& t) {
  return !t.quoted && (t.text == "+" || t.text == "-");
}

// A finite number, or nullopt.
std::optional<float> parse_number(const std::string& s) {
  if (s.empty() || s.size() > 32) return std::nullopt;
  size_t used = 0;
  float v = 0;
  try {
    v = std::stof(s, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used != s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::string where(const Token& t) {
  return "query: at character " + std::to_string(t.at + 1) + " ('" + t.text + "')";
}

QueryTerm atom(const Token& t) {
  QueryTerm term;
  auto prefixed = [&](const char* prefix) {
    const size_t n = std::char_traits<char>::length(prefix);
    if (t.quoted || t.text.compare(0, n, prefix) != 0) return false;
    term.text = t.text.substr(n);
    if (term.text.empty()) throw Error::invalid_argument(where(t) + ": nothing after " + prefix);
    return true;
  };
  if (prefixed("image:")) {
    term.kind = QueryTerm::Kind::kImage;
  } else if (prefixed("vector:")) {
    term.kind = QueryTerm::Kind::kVector;
  } else if (prefixed("item:")) {
    term.kind = QueryTerm::Kind::kItem;
    if (term.text.size() > 18 || term.text.find_first_not_of("0123456789") != std::string::npos) {
      throw Error::invalid_argument(where(t) + ": an item id is a non-negative integer");
    }
    term.item = std::stoll(term.text);
    term.text.clear();
  } else {
    term.text = t.text;
  }
  return term;
}

float norm(const std::vector<float>& v) {
  double n2 = 0;
  for (float x : v) n2 += static_cast<double>(x) * x;
  return static_cast<float>(std::sqrt(n2));
}

float dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(s);
}

bool under_prefix(const std::string& path, const std::string& prefix) {
  if (path.compare(0, prefix.size(), prefix) != 0) return false;
  // A folder, not a name prefix: "/photos/cat" holds "/photos/cat/a.jpg", not "/photos/cats.jpg".
  return path.size() == prefix.size() || prefix.back() == '/' || path[prefix.size()] == '/';
}

}  // namespace

std::vector<QueryTerm> parse_query(const std::string& query) {
  const std::vector<Token> tokens = tokenize(query);
  if (tokens.empty()) throw Error::invalid_argument("query: it is empty");
  std::vector<QueryTerm> terms;
  size_t i = 0;
  while (i < tokens.size()) {
    float sign = 1;
    if (is_operator(tokens[i])) {
      sign = tokens[i].text == "-" ? -1.f : 1.f;
      if (++i == tokens.size()) {
        throw Error::invalid_argument(where(tokens[i - 1]) + ": a term must follow");
      }
    } else if (!terms.empty()) {
      throw Error::invalid_argument(where(tokens[i]) + ": expected + or - between terms");
    }
    float weight = 1;
    // "2 * x", "2* x" or "2*x": the weight, then the token the term starts with.
    Token head = tokens[i];
    const size_t star = head.quoted ? std::string::npos : head.text.find('*');
    const bool spaced = star == std::string::npos && !head.quoted && i + 1 < tokens.size() &&
                        !tokens[i + 1].quoted && tokens[i + 1].text == "*";
    if (star != std::string::npos || spaced) {
      const auto w = parse_number(spaced ? head.text : head.text.substr(0, star));
      if (!w) throw Error::invalid_argument(where(head) + ": the weight before * is not a number");
      weight = *w;
      if (spaced || star + 1 == head.text.size()) {
        i += spaced ? 2 : 1;
        if (i >= tokens.size()) {
          throw Error::invalid_argument(where(tokens.back()) + ": a term must follow");
        }
        head = tokens[i];
      } else {
        head = Token{head.text.substr(star + 1), head.at + star + 1, false};
      }
    }
    QueryTerm term = atom(head);
    ++i;
    // Bare words run on until the next operator: `red car - "fruit"` is two terms.
    if (term.kind == QueryTerm::Kind::kText && !head.quoted) {
      while (i < tokens.size() && !is_operator(tokens[i]) && !tokens[i].quoted) {
        term.text += " " + tokens[i].text;
        ++i;
      }
    }
    if (term.kind == QueryTerm::Kind::kText && term.text.empty()) {
      throw Error::invalid_argument(where(tokens[i - 1]) + ": an empty text");
    }
    term.weight = sign * weight;
    terms.push_back(std::move(term));
  }
  return terms;
}

std::vector<float> read_vector_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error::not_found("vector file '" + path + "' does not exist or is unreadable");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    throw Error::invalid_argument("vector file '" + path + "' is not JSON");
  }
  // Also accepts what POST /v1/embed/* answers: {"embedding": [...], "dim": n}.
  if (j.is_object() && j.contains("embedding")) j = j["embedding"];
  if (!j.is_array()) {
    throw Error::invalid_argument("vector file '" + path + "' is not a JSON array of numbers");
  }
  std::vector<float> v;
  for (const auto& x : j) {
    if (!x.is_number()) {
      throw Error::invalid_argument("vector file '" + path +
                                    "' holds something other than numbers");
    }
    const double d = x.get<double>();
    if (!(std::fabs(d) <= std::numeric_limits<float>::max())) {  // (false for NaN too)
      throw Error::invalid_argument("vector file '" + path + "' holds " + x.dump() +
                                    ", beyond a float's range");
    }
    v.push_back(static_cast<float>(d));
  }
  return v;
}

std::vector<float> compose_query(const Collection& collection, const std::vector<QueryTerm>& terms,
                                 const TermEmbedder& embedder) {
  if (terms.empty()) throw Error::invalid_argument("a query needs at least one term");
  const size_t dim = static_cast<size_t>(collection.dim());
  std::vector<double> sum(dim, 0.0);
  for (size_t t = 0; t < terms.size(); ++t) {
    const QueryTerm& term = terms[t];
    const std::string what = "query term " + std::to_string(t + 1);
    if (!std::isfinite(term.weight) || term.weight == 0) {
      throw Error::invalid_argument(what + " has weight " + std::to_string(term.weight) +
                                    "; weights are finite and non-zero");
    }
    std::vector<float> v;
    switch (term.kind) {
      case QueryTerm::Kind::kText:
        if (term.text.find_first_not_of(" \t\r\n") == std::string::npos) {
          throw Error::invalid_argument(what + " is an empty text");
        }
        v = embedder.text(term.text);
        break;
      case QueryTerm::Kind::kImage: v = embedder.image_file(term.text); break;
      case QueryTerm::Kind::kItem: {
        auto stored = collection.stored_vector(Collection::Target::kImages, term.item);
        if (!stored) {
          throw Error::not_found(what + ": item " + std::to_string(term.item) +
                                 " does not exist or has no vector (failed or stale)");
        }
        v = std::move(*stored);
        break;
      }
      case QueryTerm::Kind::kVector:
        v = term.vector.empty() && !term.text.empty() ? embedder.vector_file(term.text)
                                                      : term.vector;
        break;
    }
    if (v.size() != dim) {
      throw Error::invalid_argument(what + " is a vector of " + std::to_string(v.size()) +
                                    " values; this index holds " + std::to_string(dim));
    }
    const float n = norm(v);
    if (!std::isfinite(n) || n < 1e-12f) {
      throw Error::invalid_argument(what + " is a vector of zero or non-finite norm");
    }
    for (size_t i = 0; i < dim; ++i) sum[i] += term.weight * (v[i] / n);
  }
  std::vector<float> q(sum.begin(), sum.end());
  const float n = norm(q);
  if (n < 1e-6f) {
    throw Error::invalid_argument("the query's terms cancel out: their weighted sum is zero");
  }
  for (float& x : q) x /= n;
  return q;
}

void check_filters(const QueryFilters& f, SearchTarget target) {
  if (f.min_score && !(*f.min_score >= -1.f && *f.min_score <= 1.f)) {
    throw Error::invalid_argument("min_score " + std::to_string(*f.min_score) +
                                  " is outside -1..1 (scores are cosine similarities)");
  }
  if (!(f.dedup_threshold > 0.f && f.dedup_threshold <= 1.f)) {
    throw Error::invalid_argument("the dedup threshold must be in (0, 1]");
  }
  if (!f.path_prefix.empty() && target != SearchTarget::kImages) {
    throw Error::invalid_argument("path_prefix applies to images only");
  }
}

int32_t first_fetch(int32_t k, const QueryFilters& filters) {
  const bool filtering = !filters.path_prefix.empty() || filters.dedup;
  return filtering ? std::min(std::max(4 * k, 64), Collection::kMaxSearchK) : k;
}

std::vector<SearchResult> search_filtered(const Collection& collection, SearchTarget target,
                                          int32_t k, const QueryFilters& filters,
                                          const HitFetcher& fetch) {
  if (k < 1) throw Error::invalid_argument("k must be at least 1, got " + std::to_string(k));
  check_filters(filters, target);
  const bool images = target == SearchTarget::kImages;
  const auto where = images ? Collection::Target::kImages : Collection::Target::kTexts;
  const bool filtering = !filters.path_prefix.empty() || filters.dedup;
  // Filters that drop hits need more than k of them; fetch more until k pass or none are left.
  int32_t want = first_fetch(k, filters);
  for (;;) {
    const std::vector<SearchHit> hits = fetch(want);
    std::vector<SearchResult> out;
    std::vector<std::vector<float>> kept_vectors;
    std::vector<std::string> kept_hashes;
    // Hits come best first: none after the first below min_score passes.
    size_t usable = hits.size();
    bool below_min = false;
    for (size_t i = 0; filters.min_score && i < hits.size(); ++i) {
      if (hits[i].score < *filters.min_score) {
        usable = i;
        below_min = true;
        break;
      }
    }
    // The catalog records of every hit that may be kept, in one lookup: without filters the
    // first k (an item removed since the index snapshot leaves a gap, refetched below).
    if (!filtering) usable = std::min(usable, static_cast<size_t>(k));
    std::vector<SearchResult> resolved = resolve_hits(
        collection, std::vector<SearchHit>(hits.begin(), hits.begin() + usable), target);
    for (SearchResult& r : resolved) {
      if (static_cast<int32_t>(out.size()) == k) break;
      if (!filters.path_prefix.empty() && !under_prefix(r.path, filters.path_prefix)) continue;
      if (filters.dedup) {
        const std::string& hash = r.content_hash;  // empty for texts
        std::vector<float> v = collection.stored_vector(where, r.id).value_or(std::vector<float>());
        size_t same = kept_vectors.size();
        for (size_t j = 0; j < kept_vectors.size(); ++j) {
          if ((!hash.empty() && hash == kept_hashes[j]) ||
              (!v.empty() && dot(v, kept_vectors[j]) >= filters.dedup_threshold)) {
            same = j;
            break;
          }
        }
        if (same < kept_vectors.size()) {
          out[same].duplicates.push_back(r.id);
          continue;
        }
        kept_vectors.push_back(std::move(v));
        kept_hashes.push_back(hash);
      }
      out.push_back(std::move(r));
    }
    const bool exhausted = static_cast<int32_t>(hits.size()) < want;
    if (static_cast<int32_t>(out.size()) == k || below_min || exhausted ||
        want == Collection::kMaxSearchK) {
      return out;
    }
    want = std::min(want * 4, Collection::kMaxSearchK);
  }
}

std::vector<SearchResult> search_query(const Collection& collection,
                                       const std::vector<float>& query, SearchTarget target,
                                       int32_t k, const QueryFilters& filters, float hub_weight) {
  const auto where =
      target == SearchTarget::kImages ? Collection::Target::kImages : Collection::Target::kTexts;
  return search_filtered(collection, target, k, filters, [&](int32_t fetch) {
    return collection.search(where, query.data(), 1, fetch, &hub_weight).at(0);
  });
}

float query_hub_weight(const std::vector<QueryTerm>& terms, SearchTarget target,
                       float model_weight) {
  double across = 0, all = 0;
  for (const QueryTerm& t : terms) {
    const double w = std::fabs(t.weight);
    all += w;
    const bool text = t.kind == QueryTerm::Kind::kText;
    const bool image = t.kind == QueryTerm::Kind::kImage || t.kind == QueryTerm::Kind::kItem ||
                       (t.kind == QueryTerm::Kind::kVector && t.from_image);
    if (target == SearchTarget::kImages ? text : image) across += w;
  }
  return all > 0 ? static_cast<float>(model_weight * across / all) : 0.f;
}

}  // namespace mms
