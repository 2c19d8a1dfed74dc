// The FAISS half of Collection: keeping images.faiss / texts.faiss in step with the catalog,
// loading them only after verification, and searching them.
#include <faiss/utils/distances.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <system_error>

#include "common/error.h"
#include "index/collection.h"
#include "index/collection_impl.h"

namespace mms {
namespace {

namespace fs = std::filesystem;
using Target = Collection::Target;

// Where a target's vectors live in the catalog and which file caches its index.
struct TargetSpec {
  const char* name;  // key in faiss_files
  const char* file;
  const char* generation_key;
  const char* count_sql;
  const char* vectors_sql;
};

const TargetSpec& spec(Target target) {
  static const TargetSpec kImages{"images", "images.faiss", "images_generation",
                                  "SELECT COUNT(*) FROM items WHERE status = 'ok'",
                                  "SELECT id, vector FROM items WHERE status = 'ok' ORDER BY id"};
  static const TargetSpec kTexts{
      "texts", "texts.faiss", "texts_generation",
      "SELECT COUNT(*) FROM texts WHERE vector IS NOT NULL",
      "SELECT id, vector FROM texts WHERE vector IS NOT NULL ORDER BY id"};
  return target == Target::kImages ? kImages : kTexts;
}

constexpr Target kTargets[] = {Target::kImages, Target::kTexts};

// What the catalog recorded about the FAISS file it last saw written.
struct FaissRow {
  int64_t generation = 0;
  int64_t count = 0;
  std::string model;
  int64_t dim = 0;
  std::string requested_type;
  std::string index_type;
  FaissFileStamp stamp;
};

// One consistent view of a target in the catalog (read in one transaction).
struct CatalogState {
  std::string model;
  int64_t dim = 0;
  std::string index_type;  // requested: "auto" or a factory string
  int64_t generation = 0;
  int64_t count = 0;
  std::optional<FaissRow> row;
  std::vector<int64_t> ids;    // only when read with vectors
  std::vector<float> vectors;  // [count, dim]
};

// The factory string to build for `count` vectors when `requested` was asked for.
std::string resolve_index_type(const std::string& requested, int64_t count) {
  return requested == "auto" ? Collection::auto_index_type(count) : requested;
}

CatalogState read_state(Collection::Impl& impl, Target target, bool with_vectors) {
  const TargetSpec& t = spec(target);
  std::lock_guard<std::mutex> lock(impl.db_mutex);
  SqliteDb& db = *impl.db;
  SqliteTransaction txn(db, /*immediate=*/false);
  CatalogState s;
  {
    SqliteStatement st(db,
                       "SELECT key, value FROM meta WHERE key IN "
                       "('model_fingerprint', 'dim', 'index_type', ?1)");
    st.bind(1, std::string(t.generation_key));
    while (st.step()) {
      const std::string key = st.column_text(0);
      if (key == "model_fingerprint") s.model = st.column_text(1);
      if (key == "dim") s.dim = st.column_int64(1);
      if (key == "index_type") s.index_type = st.column_text(1);
      if (key == t.generation_key) s.generation = st.column_int64(1);
    }
  }
  {
    SqliteStatement st(db,
                       "SELECT generation, count, model_fingerprint, dim, requested_type, "
                       "index_type, size, hash FROM faiss_files WHERE target = ?1");
    st.bind(1, std::string(t.name));
    if (st.step()) {
      FaissRow row;
      row.generation = st.column_int64(0);
      row.count = st.column_int64(1);
      row.model = st.column_text(2);
      row.dim = st.column_int64(3);
      row.requested_type = st.column_text(4);
      row.index_type = st.column_text(5);
      row.stamp = {st.column_int64(6), st.column_text(7)};
      s.row = std::move(row);
    }
  }
  if (!with_vectors) {
    SqliteStatement st(db, t.count_sql);
    st.step();
    s.count = st.column_int64(0);
  } else if (s.model == impl.fingerprint && s.dim == impl.dim) {
    SqliteStatement st(db, t.vectors_sql);
    const size_t bytes = static_cast<size_t>(impl.dim) * sizeof(float);
    while (st.step()) {
      size_t size = 0;
      const void* blob = st.column_blob(1, &size);
      if (size != bytes) {
        throw Error::corrupt("catalog '" + db.path() + "': the vector of " + t.name + " id " +
                             std::to_string(st.column_int64(0)) + " has " + std::to_string(size) +
                             " bytes, not " + std::to_string(bytes));
      }
      s.ids.push_back(st.column_int64(0));
      const size_t at = s.vectors.size();
      s.vectors.resize(at + impl.dim);
      std::memcpy(s.vectors.data() + at, blob, bytes);
    }
    s.count = static_cast<int64_t>(s.ids.size());
  }
  txn.commit();
  return s;
}

// Throws Error::mismatch when another process re-embedded the catalog with another model.
void check_model(const Collection::Impl& impl, const CatalogState& s) {
  if (s.model != impl.fingerprint || s.dim != impl.dim) {
    throw Error::mismatch("index '" + impl.dir + "' now holds vectors of model " + s.model +
                          "; this collection was opened for model " + impl.fingerprint);
  }
}

// Whether the recorded file was built from exactly the catalog contents in `s`.
bool row_is_current(const Collection::Impl& impl, const CatalogState& s) {
  return s.row && s.row->generation == s.generation && s.row->count == s.count &&
         s.row->model == impl.fingerprint && s.row->dim == impl.dim &&
         s.row->requested_type == resolve_index_type(s.index_type, s.count);
}

// Removes temp files that a killed writer left beside `path` (their name carries its pid).
void remove_orphan_temps(const std::string& dir, const std::string& file) {
  const std::string prefix = file + ".tmp-";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      fs::remove(entry.path(), ec);
    }
  }
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Writes `built` over the target's FAISS file atomically and records its stamp. The rename and
// the record happen under the catalog's write lock, so two processes writing the same file
// cannot leave one's file with the other's stamp.
FaissFileStamp persist(Collection::Impl& impl, Target target, const BuiltIndex& built,
                       const CatalogState& s) {
  const TargetSpec& t = spec(target);
  const std::string path = (fs::path(impl.dir) / t.file).string();
  remove_orphan_temps(impl.dir, t.file);
  static std::atomic<int64_t> counter{0};
  const std::string temp =
      path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
  std::error_code ec;
  try {
    const FaissFileStamp stamp = write_faiss_file(*built.index, temp);
    std::lock_guard<std::mutex> lock(impl.db_mutex);
    SqliteDb& db = *impl.db;
    SqliteTransaction txn(db, /*immediate=*/true);
    if (::rename(temp.c_str(), path.c_str()) != 0) {
      throw Error::io("cannot rename '" + temp + "' to '" + path + "': " + std::strerror(errno));
    }
    SqliteStatement(db, R"sql(
      INSERT OR REPLACE INTO faiss_files (target, generation, count, model_fingerprint, dim,
                                          requested_type, index_type, size, hash)
      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9))sql")
        .bind(1, std::string(t.name))
        .bind(2, s.generation)
        .bind(3, s.count)
        .bind(4, impl.fingerprint)
        .bind(5, static_cast<int64_t>(impl.dim))
        .bind(6, resolve_index_type(s.index_type, s.count))
        .bind(7, built.type)
        .bind(8, stamp.size)
        .bind(9, stamp.hash)
        .run();
    txn.commit();
    fsync_dir(impl.dir);
    return stamp;
  } catch (...) {
    fs::remove(temp, ec);
    throw;
  }
}

// Publishes a new index for `target`; the old one is freed outside the lock.
void swap_in(Collection::Impl& impl, Target target, LoadedIndex next) {
  // FAISS scans a Flat index query by query below 20 queries at once; from 5 on (fewer go
  // through FlatShortcut), one matrix product reads the vectors once for the whole batch.
  static std::once_flag blas_threshold;
  std::call_once(blas_threshold, [] { faiss::distance_compute_blas_threshold = 5; });
  if (next.index) {
    use_simd_distances(next.index.get());
    next.flat = FlatShortcut::make(*next.index);
  }
  {
    std::unique_lock<std::shared_mutex> lock(impl.search_mutex);
    if (next.index) {
      set_faiss_search_params(next.index.get(), impl.params.nprobe, impl.params.ef_search);
    }
    std::swap(impl.loaded[static_cast<int>(target)], next);
  }
}

void sync_target(Collection::Impl& impl, Target target, bool best_effort) {
  const std::string path = (fs::path(impl.dir) / spec(target).file).string();
  const CatalogState s = read_state(impl, target, /*with_vectors=*/false);
  check_model(impl, s);
  if (row_is_current(impl, s)) {
    const LoadedIndex& current = impl.loaded[static_cast<int>(target)];
    if (current.index && current.generation == s.row->generation && current.stamp == s.row->stamp) {
      if (stamp_faiss_file(path) == s.row->stamp) return;  // loaded, and the file is intact
    } else if (auto index = read_verified_faiss_file(path, s.row->stamp, impl.dim, s.count)) {
      swap_in(impl, target,
              {std::move(index), s.row->index_type, s.row->stamp, s.generation, nullptr});
      return;
    }
  }
  // Missing, stale or damaged: rebuild from the stored vectors.
  CatalogState fresh = read_state(impl, target, /*with_vectors=*/true);
  check_model(impl, fresh);
  BuiltIndex built = build_faiss_index(resolve_index_type(fresh.index_type, fresh.count), impl.dim,
                                       fresh.vectors, fresh.ids);
  fresh.vectors = {};
  FaissFileStamp stamp;
  try {
    stamp = persist(impl, target, built, fresh);
  } catch (const Error&) {
    if (!best_effort) throw;
  }
  swap_in(impl, target, {std::move(built.index), built.type, stamp, fresh.generation, nullptr});
}

}  // namespace

std::string Collection::auto_index_type(int64_t count) {
  if (count < kAutoExactLimit) return "Flat";
  if (count < kAutoIvfFrom) return "HNSW32";
  // The power of two nearest sqrt(count) (in log scale), never below 1024.
  const int exponent = static_cast<int>(std::lround(0.5 * std::log2(static_cast<double>(count))));
  const int64_t lists = std::max<int64_t>(1024, int64_t{1} << std::min(exponent, 20));
  return "IVF" + std::to_string(lists) + ",Flat";
}

void sync_all_indexes(Collection::Impl& impl, bool best_effort) {
  std::lock_guard<std::mutex> lock(impl.sync_mutex);
  for (Target target : kTargets) sync_target(impl, target, best_effort);
}

void Collection::sync_indexes() {
  sync_all_indexes(*impl_, /*best_effort=*/false);
}

bool Collection::reload_indexes() {
  Impl& impl = *impl_;
  std::lock_guard<std::mutex> lock(impl.sync_mutex);
  bool changed = false;
  for (Target target : kTargets) {
    const CatalogState s = read_state(impl, target, /*with_vectors=*/false);
    if (s.model != impl.fingerprint || s.dim != impl.dim || !row_is_current(impl, s)) continue;
    const LoadedIndex& current = impl.loaded[static_cast<int>(target)];
    if (current.index && current.generation == s.row->generation && current.stamp == s.row->stamp) {
      continue;
    }
    const std::string path = (fs::path(impl.dir) / spec(target).file).string();
    if (auto index = read_verified_faiss_file(path, s.row->stamp, impl.dim, s.count)) {
      swap_in(impl, target,
              {std::move(index), s.row->index_type, s.row->stamp, s.generation, nullptr});
      changed = true;
    }
  }
  return changed;
}

std::vector<std::vector<SearchHit>> Collection::search(Target target, const float* queries,
                                                       int64_t nq, int32_t k) const {
  if (k < 1 || k > kMaxSearchK) {
    throw Error::invalid_argument("k = " + std::to_string(k) + " is outside 1.." +
                                  std::to_string(kMaxSearchK));
  }
  if (nq < 0 || (nq > 0 && !queries)) {
    throw Error::invalid_argument("search needs nq >= 0 queries; got " + std::to_string(nq));
  }
  const int64_t values = nq * impl_->dim;
  for (int64_t i = 0; i < values; ++i) {
    if (!std::isfinite(queries[i])) {
      throw Error::invalid_argument("query " + std::to_string(i / impl_->dim) +
                                    " has a non-finite component");
    }
  }
  std::shared_lock<std::shared_mutex> lock(impl_->search_mutex);
  const LoadedIndex& loaded = impl_->loaded[static_cast<int>(target)];
  if (!loaded.index) {
    throw Error::unavailable("index '" + impl_->dir +
                             "' has no search index loaded; call sync_indexes() after writing");
  }
  std::vector<std::vector<SearchHit>> hits(static_cast<size_t>(nq));
  const int64_t kk = std::min<int64_t>(k, loaded.index->ntotal);
  if (nq == 0 || kk == 0) return hits;
  std::vector<float> scores(static_cast<size_t>(nq * kk));
  std::vector<int64_t> ids(static_cast<size_t>(nq * kk));
  if (loaded.flat && nq <= FlatShortcut::kMaxQueries) {
    loaded.flat->search(queries, nq, kk, scores.data(), ids.data());
  } else {
    search_faiss(*loaded.index, queries, nq, kk, scores.data(), ids.data());
  }
  for (int64_t q = 0; q < nq; ++q) {
    for (int64_t j = 0; j < kk; ++j) {
      const int64_t id = ids[q * kk + j];
      if (id >= 0) hits[q].push_back({id, scores[q * kk + j]});
    }
  }
  return hits;
}

void Collection::set_search_params(const SearchParams& params) {
  if (params.nprobe < 1 || params.ef_search < 1) {
    throw Error::invalid_argument("nprobe and ef_search must be at least 1; got " +
                                  std::to_string(params.nprobe) + " and " +
                                  std::to_string(params.ef_search));
  }
  std::unique_lock<std::shared_mutex> lock(impl_->search_mutex);
  impl_->params = params;
  for (LoadedIndex& loaded : impl_->loaded) {
    if (loaded.index) set_faiss_search_params(loaded.index.get(), params.nprobe, params.ef_search);
  }
}

SearchParams Collection::search_params() const {
  std::shared_lock<std::shared_mutex> lock(impl_->search_mutex);
  return impl_->params;
}

IndexInfo Collection::index_info(Target target) const {
  std::shared_lock<std::shared_mutex> lock(impl_->search_mutex);
  const LoadedIndex& loaded = impl_->loaded[static_cast<int>(target)];
  if (!loaded.index) return {};
  return {true, loaded.index_type, loaded.index->ntotal};
}

}  // namespace mms
