#include "index/faiss_store.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexRefine.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/error.h"
#include "common/hash.h"

namespace mms {
namespace {

// Closes a FILE* on scope exit.
struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

// Passes FAISS's serialized bytes to a file while hashing them, so the stamp costs no second
// pass over a file that may be gigabytes.
struct HashingFileWriter : faiss::IOWriter {
  FILE* f = nullptr;
  uint64_t hash = kFnvOffset;
  int64_t size = 0;

  size_t operator()(const void* ptr, size_t size_each, size_t nitems) override {
    if (size_each == 0 || nitems == 0) return nitems;  // FAISS writes empty arrays as nullptr
    const size_t written = std::fwrite(ptr, size_each, nitems, f);
    hash = fnv1a64(ptr, written * size_each, hash);
    size += static_cast<int64_t>(written * size_each);
    return written;
  }
};

// Stamp of an open file, read from its start; nullopt on a read error. Leaves the position at
// the end.
std::optional<FaissFileStamp> stamp_open_file(FILE* f) {
  std::vector<unsigned char> buffer(1 << 20);
  uint64_t hash = kFnvOffset;
  int64_t size = 0;
  std::rewind(f);
  while (true) {
    const size_t got = std::fread(buffer.data(), 1, buffer.size(), f);
    hash = fnv1a64(buffer.data(), got, hash);
    size += static_cast<int64_t>(got);
    if (got < buffer.size()) break;
  }
  if (std::ferror(f)) return std::nullopt;
  return FaissFileStamp{size, hex64(hash)};
}

// Size of an open file without reading it; -1 when unknown.
int64_t open_file_size(FILE* f) {
  struct stat st;
  if (::fstat(::fileno(f), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_size);
}

// The index that does the work under the wrappers we or a factory string may add.
faiss::Index* innermost(faiss::Index* index) {
  while (true) {
    if (auto* idmap = dynamic_cast<faiss::IndexIDMap*>(index)) {
      index = idmap->index;
    } else if (auto* pre = dynamic_cast<faiss::IndexPreTransform*>(index)) {
      index = pre->index;
    } else if (auto* refine = dynamic_cast<faiss::IndexRefine*>(index)) {
      index = refine->base_index;
    } else {
      return index;
    }
  }
}

std::unique_ptr<faiss::Index> make_index(const std::string& type, int32_t dim) {
  return std::unique_ptr<faiss::Index>(
      faiss::index_factory(dim, type.c_str(), faiss::METRIC_INNER_PRODUCT));
}

}  // namespace

void check_faiss_index_type(const std::string& type, int32_t dim) {
  if (type.empty() || type.find("IDMap") != std::string::npos) {
    throw Error::invalid_argument("index type '" + type +
                                  "' is not usable: give a FAISS factory string without IDMap, "
                                  "e.g. 'Flat', 'HNSW32' or 'IVF1024,Flat'");
  }
  try {
    make_index(type, dim);
  } catch (const std::exception& e) {
    throw Error::invalid_argument("index type '" + type + "' is not a FAISS factory string for " +
                                  std::to_string(dim) + "-d vectors: " + e.what());
  }
}

BuiltIndex build_faiss_index(const std::string& type, int32_t dim,
                             const std::vector<float>& vectors, const std::vector<int64_t>& ids) {
  const auto n = static_cast<faiss::Index::idx_t>(ids.size());
  assert(vectors.size() == ids.size() * static_cast<size_t>(dim));
  try {
    BuiltIndex built{make_index(type, dim), type};
    if (!built.index->is_trained) {
      bool trained = false;
      if (n > 0) {
        try {
          built.index->train(n, vectors.data());
          trained = built.index->is_trained;
        } catch (const faiss::FaissException&) {
          // Too few vectors for this type (e.g. fewer than an IVF's lists): exact search below.
        }
      }
      if (!trained) built = {make_index("Flat", dim), "Flat"};
    }
    auto idmap = std::make_unique<faiss::IndexIDMap>(built.index.release());
    idmap->own_fields = true;
    idmap->add_with_ids(n, vectors.data(), ids.data());
    built.index = std::move(idmap);
    return built;
  } catch (const faiss::FaissException& e) {
    throw Error::internal("FAISS cannot build a '" + type + "' index of " + std::to_string(n) +
                          " vectors: " + e.what());
  }
}

FaissFileStamp write_faiss_file(const faiss::Index& index, const std::string& path) {
  FilePtr file(std::fopen(path.c_str(), "wb"));
  if (!file) throw Error::io("cannot write '" + path + "': " + std::strerror(errno));
  HashingFileWriter writer;
  writer.f = file.get();
  writer.name = path;
  try {
    faiss::write_index(&index, &writer);
  } catch (const faiss::FaissException& e) {
    throw Error::io("cannot write '" + path + "': " + e.what());
  }
  if (std::fflush(file.get()) != 0 || ::fsync(::fileno(file.get())) != 0 ||
      std::fclose(file.release()) != 0) {
    throw Error::io("cannot write '" + path + "': " + std::strerror(errno));
  }
  return {writer.size, hex64(writer.hash)};
}

std::optional<FaissFileStamp> stamp_faiss_file(const std::string& path) {
  FilePtr file(std::fopen(path.c_str(), "rb"));
  if (!file) return std::nullopt;
  return stamp_open_file(file.get());
}

std::unique_ptr<faiss::Index> read_verified_faiss_file(const std::string& path,
                                                       const FaissFileStamp& expected, int32_t dim,
                                                       int64_t count) {
  // One open file for the check and the parse: a rename over `path` in between cannot slip
  // unchecked bytes into read_index.
  FilePtr file(std::fopen(path.c_str(), "rb"));
  if (!file || open_file_size(file.get()) != expected.size) return nullptr;
  const auto stamp = stamp_open_file(file.get());
  if (!stamp || !(*stamp == expected)) return nullptr;
  std::rewind(file.get());
  std::unique_ptr<faiss::Index> index;
  try {
    index.reset(faiss::read_index(file.get()));
  } catch (const std::exception&) {
    return nullptr;  // FaissException, or bad_alloc from a size field gone wrong
  }
  const auto* idmap = dynamic_cast<const faiss::IndexIDMap*>(index.get());
  if (!idmap || !idmap->index || index->d != dim || index->ntotal != count ||
      index->metric_type != faiss::METRIC_INNER_PRODUCT || !index->is_trained ||
      static_cast<int64_t>(idmap->id_map.size()) != count || idmap->index->ntotal != count) {
    return nullptr;
  }
  return index;
}

void set_faiss_search_params(faiss::Index* index, int32_t nprobe, int32_t ef_search) {
  faiss::Index* inner = innermost(index);
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(inner)) {
    ivf->nprobe = std::min<size_t>(static_cast<size_t>(nprobe), ivf->nlist);
  } else if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(inner)) {
    hnsw->hnsw.efSearch = ef_search;
  }
}

void search_faiss(const faiss::Index& index, const float* queries, int64_t nq, int64_t k,
                  float* scores, int64_t* ids) {
  try {
    index.search(nq, queries, k, scores, ids);
  } catch (const faiss::FaissException& e) {
    throw Error::internal(std::string("FAISS search failed: ") + e.what());
  }
}

namespace {

// A Flat inner-product storage whose distance computer uses inner_product (encoders/key_search.h);
// HNSW asks its storage for one per search, so the graph walk gets the vector code.
struct SimdFlatIP : faiss::IndexFlat {
  explicit SimdFlatIP(faiss::IndexFlat&& from)
      : faiss::IndexFlat(from.d, faiss::METRIC_INNER_PRODUCT) {
    codes.swap(from.codes);
    ntotal = from.ntotal;
    from.ntotal = 0;
  }

  struct Distances : faiss::FlatCodesDistanceComputer {
    explicit Distances(const SimdFlatIP& index)
        : faiss::FlatCodesDistanceComputer(index.codes.data(), index.code_size),
          d(static_cast<size_t>(index.d)),
          base(index.get_xb()) {}
    void set_query(const float* x) override { query = x; }
    float distance_to_code(const uint8_t* code) override {
      return inner_product(query, reinterpret_cast<const float*>(code), d);
    }
    float symmetric_dis(idx_t i, idx_t j) override {
      return inner_product(base + i * d, base + j * d, d);
    }
    size_t d;
    const float* base;
    const float* query = nullptr;
  };

  faiss::FlatCodesDistanceComputer* get_FlatCodesDistanceComputer() const override {
    return new Distances(*this);
  }
};

}  // namespace

void use_simd_distances(faiss::Index* index) {
  auto* map = dynamic_cast<faiss::IndexIDMap*>(index);
  auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(map != nullptr ? map->index : index);
  if (hnsw == nullptr) return;
  auto* flat = dynamic_cast<faiss::IndexFlat*>(hnsw->storage);
  if (flat == nullptr || flat->metric_type != faiss::METRIC_INNER_PRODUCT ||
      dynamic_cast<SimdFlatIP*>(flat) != nullptr) {
    return;
  }
  auto* simd = new SimdFlatIP(std::move(*flat));
  if (hnsw->own_fields) delete flat;
  hnsw->storage = simd;
  hnsw->own_fields = true;
}

FlatShortcut::FlatShortcut(const float* vectors, int64_t n, int32_t dim, const int64_t* ids)
    : keys_(vectors, n, dim), ids_(ids) {}

std::unique_ptr<FlatShortcut> FlatShortcut::make(const faiss::Index& index) {
  const auto* map = dynamic_cast<const faiss::IndexIDMap*>(&index);
  if (map == nullptr || map->ntotal < 1) return nullptr;
  const auto* flat = dynamic_cast<const faiss::IndexFlat*>(map->index);
  if (flat == nullptr || flat->metric_type != faiss::METRIC_INNER_PRODUCT ||
      static_cast<int64_t>(map->id_map.size()) != flat->ntotal) {
    return nullptr;
  }
  static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "FAISS ids are 64-bit");
  return std::unique_ptr<FlatShortcut>(
      new FlatShortcut(flat->get_xb(), flat->ntotal, static_cast<int32_t>(flat->d),
                       reinterpret_cast<const int64_t*>(map->id_map.data())));
}

void FlatShortcut::search(const float* queries, int64_t nq, int64_t k, float* scores, int64_t* ids,
                          const float* weights, const float* row_hubs) const {
  for (int64_t q = 0; q < nq; ++q) {
    float* s = scores + q * k;
    int64_t* rows = ids + q * k;
    keys_.top_k(queries + q * keys_.dim(), static_cast<int32_t>(k), s, rows,
                weights && row_hubs ? weights[q] : 0.f, row_hubs);
    for (int64_t j = 0; j < k; ++j) rows[j] = ids_[rows[j]];
  }
}

}  // namespace mms
