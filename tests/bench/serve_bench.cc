// Benchmark support for scripts/bench_serve.sh, the HTTP load benchmark of `mmsearch serve`.
//
//   build/serve_bench make-index --model MODEL_DIR --out INDEX_DIR [--items 100000]
//                                [--index-type auto] [--seed 1] [--batch 5000]
//     Writes an INDEX_DIR of synthetic items for MODEL_DIR: seeded random unit vectors (not
//     embeddings of real images: they make the scale point, the index size and its search
//     cost, not meaningful results) with made-up paths and captions, through
//     Collection::upsert_items in batches (each item with its h from the model's hub banks),
//     then builds the FAISS index (sync_indexes) and prints the index type it got ("auto": Flat
//     below 100k vectors, HNSW32 from 100k on). A catalog that already holds that many items is
//     kept as it is.
//
//   build/serve_bench stages --model MODEL_DIR --index INDEX_DIR [--queries FILE]
//                            [--threads N] [--k 10] [--rounds 15]
//     The in-process cost of each stage of a text search, for the same query texts the load
//     test sends (FILE: one a line), in ms per query, the median of `rounds` rounds:
//       tokenize     Tokenizer::encode of each text (the tokenizer the Embedder loaded, so
//                    SentencePiece through the plugin, as the server runs it)
//       encode       Embedder::embed_token_ids on batches of 1, 8 and 64 (the text encoder
//                    alone; the Embedder exposes tokenize and encode separately, so encode is
//                    measured directly, not as embed_texts minus tokenize)
//       embed_texts  tokenize + encode, as the server's batcher calls it, for a cross-check
//       search       Collection::search, k hits, single and batched (8, 64), with the
//                    model's hub weight as the server searches a text over images
//       search_cosine  the same by plain cosine (no hub rerank), beside it
//       resolve      resolve_hits: the catalog lookups that turn k hits into paths/captions
//     Lines are "STAGE BATCH MS_PER_QUERY" so that the script can read them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "encoders/embedder.h"
#include "index/collection.h"
#include "index/search.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string model = "data/models/default", out, index, queries = "scripts/bench/queries.txt";
  std::string index_type = "auto";
  int64_t items = 100000, batch = 5000;
  uint64_t seed = 1;
  int threads = 0, k = 10, rounds = 15;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- make-index ----------------------------------------------------------------------------

std::string made_up_caption(std::mt19937_64& rng) {
  static const char* kWords[] = {"red",   "blue",  "green", "cat",    "dog",   "house", "tree",
                                 "car",   "star",  "flag",  "face",   "shoe",  "dress", "bag",
                                 "apple", "sun",   "sea",   "drawing", "icon", "map",   "coffee"};
  std::uniform_int_distribution<int> pick(0, int(std::size(kWords)) - 1);
  std::string s = "a";
  for (int w = 0; w < 4; ++w) s += std::string(" ") + kWords[pick(rng)];
  return s;
}

int make_index(const Args& a) {
  const auto embedder = mms::Embedder::load(a.model);
  const int dim = embedder->dim();
  mms::CollectionOptions options;
  options.model_fingerprint = embedder->fingerprint();
  options.dim = dim;
  options.index_type = a.index_type;
  const auto collection = mms::Collection::open(a.out, options);
  const auto t0 = Clock::now();
  const int64_t existing = collection->item_count();
  if (existing >= a.items) {
    std::printf("%s already holds %lld items; kept as it is\n", a.out.c_str(),
                static_cast<long long>(existing));
  } else {
    std::printf("writing %lld synthetic items (random unit vectors, seed %llu, dim %d) to %s\n",
                static_cast<long long>(a.items), static_cast<unsigned long long>(a.seed), dim,
                a.out.c_str());
    std::mt19937_64 rng(a.seed);
    std::normal_distribution<float> gauss;
    for (int64_t first = 0; first < a.items; first += a.batch) {
      std::vector<mms::ItemWrite> writes;
      for (int64_t i = first; i < std::min(a.items, first + a.batch); ++i) {
        mms::ItemWrite w;
        char path[96];
        std::snprintf(path, sizeof path, "/synthetic/serve-bench/%03lld/img-%06lld.png",
                      static_cast<long long>(i / 1000), static_cast<long long>(i));
        w.path = path;
        w.size = 1000 + i % 5000;
        w.mtime_ns = 1'700'000'000'000'000'000 + i;
        w.content_hash = "synthetic-" + std::to_string(i);
        w.width = w.height = 64;
        w.caption = made_up_caption(rng);
        w.vector.resize(dim);
        double norm2 = 0;
        for (float& x : w.vector) {
          x = gauss(rng);
          norm2 += double(x) * x;
        }
        const float inv = float(1.0 / std::sqrt(norm2));
        for (float& x : w.vector) x *= inv;
        writes.push_back(std::move(w));
      }
      // Each item's h, as the indexer stores it (hubness-aware scoring), so that searches
      // take the served path.
      std::vector<float> vectors;
      for (const mms::ItemWrite& w : writes)
        vectors.insert(vectors.end(), w.vector.begin(), w.vector.end());
      const std::vector<float> hubs =
          embedder->image_hubs(vectors.data(), static_cast<int64_t>(writes.size()));
      for (size_t i = 0; i < writes.size(); ++i) writes[i].hub = hubs[i];
      collection->upsert_items(writes);
    }
    std::printf("catalog written in %.1f s\n", seconds_since(t0));
  }
  const auto t1 = Clock::now();
  collection->sync_indexes();
  const mms::IndexInfo info = collection->index_info(mms::Collection::Target::kImages);
  std::printf("index: %lld image vectors, type %s (requested '%s'), synced in %.1f s\n",
              static_cast<long long>(info.vectors), info.index_type.c_str(),
              collection->index_type().c_str(), seconds_since(t1));
  return 0;
}

// ---- stages --------------------------------------------------------------------------------

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw mms::Error::not_found("cannot read the query file '" + path + "'");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  if (out.empty()) throw mms::Error::invalid_argument("the query file '" + path + "' is empty");
  return out;
}

// Median over `rounds` of the ms per query of `run_round`, which handles `per_round` queries.
double median_ms_per_query(int rounds, int64_t per_round, const std::function<void()>& run_round) {
  run_round();  // warm-up
  std::vector<double> ms;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = Clock::now();
    run_round();
    ms.push_back(seconds_since(t0) * 1000.0 / double(per_round));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void report(const char* stage, int batch, double ms) {
  std::printf("%-12s %5d %10.4f\n", stage, batch, ms);
  std::fflush(stdout);
}

int stages(const Args& a) {
  if (a.threads > 0) mms::set_compute_threads(a.threads);
  const auto embedder = mms::Embedder::load(a.model);
  const auto collection = mms::Collection::open_for_search(a.index, embedder->fingerprint());
  const mms::IndexInfo info = collection->index_info(mms::Collection::Target::kImages);
  const std::vector<std::string> texts = read_lines(a.queries);
  const int dim = embedder->dim();
  // Every round handles the same 64 queries: the query texts, repeated.
  constexpr int kPerRound = 64;
  std::vector<std::string> round_texts;
  for (int i = 0; i < kPerRound; ++i) round_texts.push_back(texts[i % texts.size()]);

  const mms::Tokenizer& tokenizer = embedder->tokenizer();
  std::vector<std::vector<int32_t>> ids;
  for (const auto& t : round_texts) ids.push_back(tokenizer.encode(t));
  const std::vector<float> queries = embedder->embed_texts(round_texts);

  std::printf("model %s (dim %d), index %s: %lld image vectors, type %s\n", a.model.c_str(), dim,
              a.index.c_str(), static_cast<long long>(info.vectors), info.index_type.c_str());
  std::printf("%zu query texts from %s, k %d, compute threads %d, median of %d rounds\n",
              texts.size(), a.queries.c_str(), a.k, a.threads, a.rounds);
  std::printf("%-12s %5s %10s\n", "stage", "batch", "ms/query");

  size_t sink = 0;  // keeps results alive so nothing is optimized away
  report("tokenize", 1, median_ms_per_query(a.rounds, kPerRound, [&] {
           for (const auto& t : round_texts) sink += tokenizer.encode(t).size();
         }));
  for (const int b : {1, 8, 64}) {
    report("encode", b, median_ms_per_query(a.rounds, kPerRound, [&] {
             for (int i = 0; i < kPerRound; i += b) {
               std::vector<std::vector<int32_t>> chunk(ids.begin() + i, ids.begin() + i + b);
               sink += embedder->embed_token_ids(chunk).size();
             }
           }));
  }
  for (const int b : {1, 8, 64}) {
    report("embed_texts", b, median_ms_per_query(a.rounds, kPerRound, [&] {
             for (int i = 0; i < kPerRound; i += b) {
               std::vector<std::string> chunk(round_texts.begin() + i, round_texts.begin() + i + b);
               sink += embedder->embed_texts(chunk).size();
             }
           }));
  }
  std::vector<std::vector<mms::SearchHit>> hits;
  // As the server searches a text over images: with the model's hub weight (the penalty's
  // rerank); beside it the same searches by plain cosine, what they cost without it.
  const std::vector<float> hub_weights(kPerRound, embedder->hub_weight());
  for (const int b : {1, 8, 64}) {
    report("search", b, median_ms_per_query(a.rounds, kPerRound, [&] {
             hits.clear();
             for (int i = 0; i < kPerRound; i += b) {
               auto found =
                   collection->search(mms::Collection::Target::kImages, &queries[size_t(i) * dim],
                                      b, a.k, hub_weights.data());
               for (auto& h : found) hits.push_back(std::move(h));
             }
           }));
  }
  for (const int b : {1, 8, 64}) {
    report("search_cosine", b, median_ms_per_query(a.rounds, kPerRound, [&] {
             for (int i = 0; i < kPerRound; i += b) {
               sink +=
                   collection
                       ->search(mms::Collection::Target::kImages, &queries[size_t(i) * dim], b, a.k)
                       .size();
             }
           }));
  }
  report("resolve", 1, median_ms_per_query(a.rounds, kPerRound, [&] {
           for (const auto& h : hits) {
             sink += mms::resolve_hits(*collection, h, mms::SearchTarget::kImages).size();
           }
         }));
  return sink == 0 ? 1 : 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: serve_bench make-index --out INDEX_DIR [--model DIR] [--items N] "
               "[--index-type auto|FACTORY] [--seed N] [--batch N]\n"
               "       serve_bench stages --index INDEX_DIR [--model DIR] [--queries FILE] "
               "[--threads N] [--k N] [--rounds N]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string command = argv[1];
  Args a;
  for (int i = 2; i < argc; i += 2) {
    const std::string o = argv[i];
    if (i + 1 >= argc) return usage();
    const char* v = argv[i + 1];
    if (o == "--model") a.model = v;
    else if (o == "--out") a.out = v;
    else if (o == "--index") a.index = v;
    else if (o == "--queries") a.queries = v;
    else if (o == "--index-type") a.index_type = v;
    else if (o == "--items") a.items = std::atoll(v);
    else if (o == "--batch") a.batch = std::max<int64_t>(1, std::atoll(v));
    else if (o == "--seed") a.seed = std::strtoull(v, nullptr, 10);
    else if (o == "--threads") a.threads = std::atoi(v);
    else if (o == "--k") a.k = std::atoi(v);
    else if (o == "--rounds") a.rounds = std::max(1, std::atoi(v));
    else {
      std::fprintf(stderr, "serve_bench: unknown option '%s'\n", o.c_str());
      return usage();
    }
  }
  try {
    if (command == "make-index" && !a.out.empty()) return make_index(a);
    if (command == "stages" && !a.index.empty()) return stages(a);
    return usage();
  } catch (const mms::Error& e) {
    std::fprintf(stderr, "serve_bench: %s\n", e.what());
    return 1;
  }
}
