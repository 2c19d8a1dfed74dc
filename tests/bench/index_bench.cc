// Benchmark: search latency and recall of the FAISS index types mmsearch builds (through the
// same index/faiss_store code the Collection uses), on synthetic clustered unit vectors of
// dimension 256. For each size it builds Flat (exact), IVF and HNSW32, then times single
// queries (p50 / p99) and reports recall@10 against the exact answer. --ef-search times an
// HNSW index once per listed candidate-list length (a query-time knob: no rebuild). The type
// "IVF" is IVF with min(1024, 4 sqrt(n)) lists; "auto" is what an index dir's "auto" builds
// (Collection::auto_index_type); any other is a FAISS factory string.
//   build/index_bench [--sizes 10000,100000,1000000] [--queries 200] [--types Flat,IVF,HNSW32]
//                     [--ef-search 64]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "index/collection.h"
#include "index/faiss_store.h"

#include <faiss/Index.h>

namespace {

constexpr int kDim = 256;
constexpr int kK = 10;

using Clock = std::chrono::steady_clock;

// Vectors around 2,000 random centres (embeddings of real collections are clustered),
// normalized to unit length.
std::vector<float> clustered(int64_t n, uint64_t seed, const std::vector<float>& centres) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.f, 0.35f);
  std::uniform_int_distribution<int64_t> pick(0, static_cast<int64_t>(centres.size() / kDim) - 1);
  std::vector<float> v(n * kDim);
  for (int64_t i = 0; i < n; ++i) {
    const float* c = &centres[pick(rng) * kDim];
    float norm = 0;
    for (int d = 0; d < kDim; ++d) {
      v[i * kDim + d] = c[d] + noise(rng) / std::sqrt(float(kDim)) * 4;
      norm += v[i * kDim + d] * v[i * kDim + d];
    }
    for (int d = 0; d < kDim; ++d) v[i * kDim + d] /= std::sqrt(norm);
  }
  return v;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ',')) out.push_back(std::atoll(part.c_str()));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sizes = {10000, 100000, 1000000};
  int64_t queries = 200;
  std::string types = "Flat,IVF,HNSW32";
  std::vector<int64_t> ef_values = {64};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--sizes") sizes = parse_list(argv[i + 1]);
    else if (a == "--queries") queries = std::atoll(argv[i + 1]);
    else if (a == "--types") types = argv[i + 1];
    else if (a == "--ef-search") ef_values = parse_list(argv[i + 1]);
    else {
      std::fprintf(stderr, "index_bench: unknown option '%s'\n", a.c_str());
      return 2;
    }
  }
  try {
    std::mt19937_64 rng(42);
    std::normal_distribution<float> gauss;
    std::vector<float> centres(2000 * kDim);
    for (float& c : centres) c = gauss(rng) / std::sqrt(float(kDim));
    std::printf("dim %d, k %d, %lld single queries per point, default nprobe 16 / efSearch 64\n", kDim,
                kK, static_cast<long long>(queries));
    std::printf("%9s  %-14s %9s %9s %9s %10s\n", "vectors", "index", "build s", "p50 ms", "p99 ms",
                "recall@10");
    for (const int64_t n : sizes) {
      const std::vector<float> base = clustered(n, 1, centres);
      const std::vector<float> q = clustered(queries, 2, centres);
      std::vector<int64_t> ids(n);
      for (int64_t i = 0; i < n; ++i) ids[i] = i + 1;
      // Ground truth from exact search, whichever types are measured.
      std::vector<std::set<int64_t>> truth(queries);
      {
        mms::BuiltIndex exact = mms::build_faiss_index("Flat", kDim, base, ids);
        for (int64_t i = 0; i < queries; ++i) {
          float scores[kK];
          int64_t found[kK];
          mms::search_faiss(*exact.index, &q[i * kDim], 1, kK, scores, found);
          truth[i] = std::set<int64_t>(found, found + kK);
        }
      }
      std::stringstream list(types);
      std::string type;
      while (std::getline(list, type, ',')) {
        std::string factory = type;
        if (type == "IVF") {
          const int64_t nlist = std::min<int64_t>(1024, std::max<int64_t>(16, int64_t(4 * std::sqrt(double(n)))));
          factory = "IVF" + std::to_string(nlist) + ",Flat";
        } else if (type == "auto") {
          factory = mms::Collection::auto_index_type(n);
        }
        const auto t0 = Clock::now();
        mms::BuiltIndex built = mms::build_faiss_index(factory, kDim, base, ids);
        const double build_s = std::chrono::duration<double>(Clock::now() - t0).count();
        const bool hnsw = factory.rfind("HNSW", 0) == 0;
        for (const int64_t ef : hnsw ? ef_values : std::vector<int64_t>{64}) {
          mms::set_faiss_search_params(built.index.get(), 16, static_cast<int32_t>(ef));
          std::vector<double> ms;
          int64_t hits = 0;
          for (int64_t i = 0; i < queries; ++i) {
            float scores[kK];
            int64_t found[kK];
            const auto s0 = Clock::now();
            mms::search_faiss(*built.index, &q[i * kDim], 1, kK, scores, found);
            ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s0).count());
            for (int j = 0; j < kK; ++j) hits += truth[i].count(found[j]);
          }
          std::sort(ms.begin(), ms.end());
          const std::string name = hnsw ? built.type + " ef" + std::to_string(ef) : built.type;
          std::printf("%9lld  %-14s %9.2f %9.3f %9.3f %9.1f%%\n", static_cast<long long>(n),
                      name.c_str(), build_s, ms[ms.size() / 2], ms[ms.size() * 99 / 100],
                      100.0 * hits / double(queries * kK));
          std::fflush(stdout);
        }
      }
    }
  } catch (const mms::Error& e) {
    std::fprintf(stderr, "index_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
