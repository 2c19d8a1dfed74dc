// FAISS indexes as the Collection uses them: built from catalog vectors with catalog ids
// (an IndexIDMap around any factory type, inner product), written to plain FAISS files with a
// size + FNV-1a stamp, and read back only when the file's bytes match a stamp recorded in the
// catalog, because faiss::read_index trusts its input. Every faiss::FaissException is turned
// into an mms::Error here. Internal to index/; FAISS types appear only forward-declared.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "encoders/key_search.h"

namespace faiss {
struct Index;
}

namespace mms {

// What a FAISS file held when it was written: its byte size and fnv1a64 of its bytes (hex).
struct FaissFileStamp {
  int64_t size = 0;
  std::string hash;
  bool operator==(const FaissFileStamp& o) const { return size == o.size && hash == o.hash; }
};

struct BuiltIndex {
  std::unique_ptr<faiss::Index> index;  // an IndexIDMap whose ids are catalog ids
  std::string type;                     // the factory string actually built
};

// Throws Error::invalid_argument naming `type` when FAISS cannot make an index of that
// factory string for `dim`-d vectors, or when it names an IDMap (ids are ours to add).
void check_faiss_index_type(const std::string& type, int32_t dim);

// Builds an index of factory `type` over vectors [n, dim] float32 row-major with ids [n],
// metric inner product, training it on those vectors when the type needs training. When the
// vectors cannot train it (none, or fewer than an IVF has lists) it builds "Flat" instead
// and says so in BuiltIndex::type.
BuiltIndex build_faiss_index(const std::string& type, int32_t dim,
                             const std::vector<float>& vectors, const std::vector<int64_t>& ids);

// Writes `index` to `path` (created or truncated) and flushes it to disk. Throws Error::io.
FaissFileStamp write_faiss_file(const faiss::Index& index, const std::string& path);

// The stamp of the file at `path` as it is now; nullopt when it cannot be read.
std::optional<FaissFileStamp> stamp_faiss_file(const std::string& path);

// Reads the index at `path` only after its bytes match `expected`, and only returns it when it
// is an IndexIDMap of `count` vectors of `dim` with inner-product metric. Returns nullptr when
// anything is off (missing, other size or hash, FAISS refuses it, other shape): the caller
// rebuilds from the catalog.
std::unique_ptr<faiss::Index> read_verified_faiss_file(const std::string& path,
                                                       const FaissFileStamp& expected, int32_t dim,
                                                       int64_t count);

// Sets query-time knobs on whatever `index` wraps: nprobe of an IVF (capped at its list count),
// efSearch of an HNSW. Other types ignore them. Not safe while another thread searches `index`.
void set_faiss_search_params(faiss::Index* index, int32_t nprobe, int32_t ef_search);

// queries [nq, d]; fills scores and ids [nq, k], best first (id -1 where fewer than k vectors
// exist). Safe to call concurrently on one index. Throws Error::internal.
void search_faiss(const faiss::Index& index, const float* queries, int64_t nq, int64_t k,
                  float* scores, int64_t* ids);

// Gives an HNSW index over Flat inner-product storage (inside its IndexIDMap) a distance
// computer with vector code, for the same graph walk faster; other indexes are left alone.
// Not while another thread uses `index`.
void use_simd_distances(faiss::Index* index);

// A few queries on an exact (Flat, inner-product) index, searched through KeySearch
// (encoders/key_search.h): the same hits as FAISS's scan of every float vector, from an int8
// copy a quarter of the size. Larger batches are better served by FAISS's matrix product.
class FlatShortcut {
 public:
  static constexpr int64_t kMaxQueries = 4;
  // nullptr unless `index` is an IndexIDMap over an IndexFlat with inner product. The index
  // must outlive the shortcut and not change.
  static std::unique_ptr<FlatShortcut> make(const faiss::Index& index);
  // As search_faiss, for k <= the index's size. With weights ([nq]) and row_hubs (one per
  // stored vector, in storage order: row_ids()), query q's vectors score their inner product
  // less weights[q] * row_hubs[row] (hubness-aware scoring), exactly.
  void search(const float* queries, int64_t nq, int64_t k, float* scores, int64_t* ids,
              const float* weights = nullptr, const float* row_hubs = nullptr) const;

  int64_t size() const { return keys_.size(); }
  // Each stored vector's catalog id, in storage order.
  const int64_t* row_ids() const { return ids_; }

 private:
  FlatShortcut(const float* vectors, int64_t n, int32_t dim, const int64_t* ids);
  KeySearch keys_;
  const int64_t* ids_;
};

}  // namespace mms
