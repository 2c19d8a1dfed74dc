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
  const char* table;
  const char* searchable;  // the condition on `table`'s rows that are searched
};

const TargetSpec& spec(Target target) {
  static const TargetSpec kImages{"images",
                                  "images.faiss",
                                  "images_generation",
                                  "SELECT COUNT(*) FROM items WHERE status = 'ok'",
                                  "items",
                                  "status = 'ok'"};
  static const TargetSpec kTexts{"texts",
                                 "texts.faiss",
                                 "texts_generation",
                                 "SELECT COUNT(*) FROM texts WHERE vector IS NOT NULL",
                                 "texts",
                                 "vector IS NOT NULL"};
  return target == Target::kImages ? kImages : kTexts;
}

// "SELECT id, <columns> FROM <table> WHERE <searchable> ORDER BY id"; a catalog without hub
// columns (schema 1, read by a searcher; has_hubs false) gives NULL for hub.
std::string searchable_sql(bool has_hubs, const TargetSpec& t, const std::string& columns) {
  std::string cols = columns;
  const size_t at = cols.find("hub");
  if (!has_hubs && at != std::string::npos) cols.replace(at, 3, "NULL");
  return "SELECT id, " + cols + " FROM " + t.table + " WHERE " + t.searchable + " ORDER BY id";
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
  std::vector<int64_t> ids;    // only when read with vectors or hubs
  std::vector<float> vectors;  // [count, dim], only when read with vectors
  std::vector<float> hubs;     // [count], when read with vectors or hubs
};

enum class Read { kCount, kHubs, kVectors };

std::shared_ptr<const HubTable> hub_table(std::vector<int64_t> ids, std::vector<float> hubs) {
  auto t = std::make_shared<HubTable>();
  t->ids = std::move(ids);
  t->hubs = std::move(hubs);
  for (float h : t->hubs) t->any = t->any || h != 0;
  if (!t->hubs.empty()) t->min = *std::min_element(t->hubs.begin(), t->hubs.end());
  return t;
}

// The factory string to build for `count` vectors when `requested` was asked for.
std::string resolve_index_type(const std::string& requested, int64_t count) {
  return requested == "auto" ? Collection::auto_index_type(count) : requested;
}

CatalogState read_state(Collection::Impl& impl, Target target, Read what) {
  const TargetSpec& t = spec(target);
  std::lock_guard<std::mutex> lock(impl.db_mutex);
  SqliteDb& db = *impl.db;
  SqliteTransaction txn(db, /*immediate=*/false);
  CatalogState s;
  {
    SqliteStatement st(db,
                       "SELECT key, value FROM meta WHERE key IN "
                       "('model_fingerprint', 'dim', 'index_type', 'schema_version', ?1)");
    st.bind(1, std::string(t.generation_key));
    while (st.step()) {
      const std::string key = st.column_text(0);
      // A reader of a version 1 catalog sees the hub columns once a writer has added them.
      if (key == "schema_version") impl.has_hubs = st.column_int64(1) >= 2;
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
  if (what == Read::kCount) {
    SqliteStatement st(db, t.count_sql);
    st.step();
    s.count = st.column_int64(0);
  } else if (what == Read::kHubs) {
    SqliteStatement st(db, searchable_sql(impl.has_hubs, t, "hub"));
    while (st.step()) {
      s.ids.push_back(st.column_int64(0));
      s.hubs.push_back(static_cast<float>(st.column_double(1)));
    }
    s.count = static_cast<int64_t>(s.ids.size());
  } else if (s.model == impl.fingerprint && s.dim == impl.dim) {
    SqliteStatement st(db, searchable_sql(impl.has_hubs, t, "vector, hub"));
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
      s.hubs.push_back(static_cast<float>(st.column_double(2)));
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
    if (next.flat && next.hubs && next.hubs->any) {
      next.row_hubs.resize(static_cast<size_t>(next.flat->size()));
      for (int64_t r = 0; r < next.flat->size(); ++r) {
        next.row_hubs[r] = next.hubs->of(next.flat->row_ids()[r]);
      }
    }
  }
  {
    std::unique_lock<std::shared_mutex> lock(impl.search_mutex);
    if (next.index) {
      set_faiss_search_params(next.index.get(), impl.params.nprobe, impl.params.ef_search);
    }
    std::swap(impl.loaded[static_cast<int>(target)], next);
  }
}

// Loads the target's FAISS file at `path` with the catalog's hubs when the catalog's record
// of it is current and its bytes verify; returns whether it did.
bool load_verified(Collection::Impl& impl, Target target, const std::string& path) {
  CatalogState s = read_state(impl, target, Read::kHubs);
  if (s.model != impl.fingerprint || s.dim != impl.dim || !row_is_current(impl, s)) return false;
  auto index = read_verified_faiss_file(path, s.row->stamp, impl.dim, s.count);
  if (!index) return false;
  swap_in(impl, target,
          {std::move(index), hub_table(std::move(s.ids), std::move(s.hubs)), s.row->index_type,
           s.row->stamp, s.generation, nullptr});
  return true;
}

void sync_target(Collection::Impl& impl, Target target, bool best_effort) {
  const std::string path = (fs::path(impl.dir) / spec(target).file).string();
  const CatalogState s = read_state(impl, target, Read::kCount);
  check_model(impl, s);
  if (row_is_current(impl, s)) {
    const LoadedIndex& current = impl.loaded[static_cast<int>(target)];
    if (current.index && current.generation == s.row->generation && current.stamp == s.row->stamp) {
      if (stamp_faiss_file(path) == s.row->stamp) return;  // loaded, and the file is intact
    } else if (load_verified(impl, target, path)) {
      return;
    }
  }
  // Missing, stale or damaged: rebuild from the stored vectors.
  CatalogState fresh = read_state(impl, target, Read::kVectors);
  check_model(impl, fresh);
  BuiltIndex built = build_faiss_index(resolve_index_type(fresh.index_type, fresh.count), impl.dim,
                                       fresh.vectors, fresh.ids);
  fresh.vectors = {};
  auto hubs = hub_table(std::move(fresh.ids), std::move(fresh.hubs));
  FaissFileStamp stamp;
  try {
    stamp = persist(impl, target, built, fresh);
  } catch (const Error&) {
    if (!best_effort) throw;
  }
  swap_in(impl, target,
          {std::move(built.index), std::move(hubs), built.type, stamp, fresh.generation, nullptr});
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
    const CatalogState s = read_state(impl, target, Read::kCount);
    if (s.model != impl.fingerprint || s.dim != impl.dim || !row_is_current(impl, s)) continue;
    const LoadedIndex& current = impl.loaded[static_cast<int>(target)];
    if (current.index && current.generation == s.row->generation && current.stamp == s.row->stamp) {
      continue;
    }
    const std::string path = (fs::path(impl.dir) / spec(target).file).string();
    changed = load_verified(impl, target, path) || changed;
  }
  return changed;
}

float HubTable::of(int64_t id) const {
  const auto it = std::lower_bound(ids.begin(), ids.end(), id);
  return it != ids.end() && *it == id ? hubs[it - ids.begin()] : 0.f;
}

namespace {

// The k best of n candidates (scores best first, ids -1 for none) by score - weight * h,
// into `out`. Returns whether they are provably the k best of the whole index: when every
// vector was a candidate, or when no vector left out (whose inner product is at most the
// last candidate's) could score above the k-th even with the least h.
bool rerank(const float* scores, const int64_t* ids, int64_t n, int64_t k, float weight,
            const HubTable& hubs, int64_t total, std::vector<SearchHit>& out) {
  out.clear();
  for (int64_t j = 0; j < n; ++j) {
    if (ids[j] >= 0) out.push_back({ids[j], scores[j] - weight * hubs.of(ids[j])});
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const SearchHit& a, const SearchHit& b) { return a.score > b.score; });
  if (static_cast<int64_t>(out.size()) > k) out.resize(static_cast<size_t>(k));
  if (n >= total || ids[n - 1] < 0) return true;
  if (static_cast<int64_t>(out.size()) < k) return false;
  return out.back().score >= scores[n - 1] - weight * hubs.min;
}

}  // namespace

std::vector<std::vector<SearchHit>> Collection::search(Target target, const float* queries,
                                                       int64_t nq, int32_t k,
                                                       const float* hub_weights) const {
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
  for (int64_t q = 0; hub_weights && q < nq; ++q) {
    if (!(hub_weights[q] >= 0) || !std::isfinite(hub_weights[q])) {
      throw Error::invalid_argument("query " + std::to_string(q) + " has hub weight " +
                                    std::to_string(hub_weights[q]) + "; it must be 0 or more");
    }
  }
  std::shared_lock<std::shared_mutex> lock(impl_->search_mutex);
  const LoadedIndex& loaded = impl_->loaded[static_cast<int>(target)];
  if (!loaded.index) {
    throw Error::unavailable("index '" + impl_->dir +
                             "' has no search index loaded; call sync_indexes() after writing");
  }
  std::vector<std::vector<SearchHit>> hits(static_cast<size_t>(nq));
  const int64_t total = loaded.index->ntotal;
  const int64_t kk = std::min<int64_t>(k, total);
  if (nq == 0 || kk == 0) return hits;
  // Each query's hub weight; all 0 where the index holds no h.
  const HubTable* hubs = loaded.hubs && loaded.hubs->any ? loaded.hubs.get() : nullptr;
  std::vector<float> weights(static_cast<size_t>(nq), 0.f);
  if (hubs && hub_weights) weights.assign(hub_weights, hub_weights + nq);
  const bool any_weight =
      std::any_of(weights.begin(), weights.end(), [](float w) { return w > 0; });
  // With hub weights. An exact (Flat) index answers a few queries at a time exactly by the
  // penalized score (FlatShortcut: the int8 scan's proof takes the penalty into its bounds).
  // Otherwise the index's max(4k, 64) best by inner product are reranked (64: HNSW's default
  // efSearch, so that its walk is no longer than for k hits). On an approximate index (HNSW,
  // IVF) that shortlist is the answer: it was never exact (over the Open Clip Art collection
  // the exact top 10 lay within the first 64 by cosine for every one of the benchmark's 1,000
  // short queries; within the first 32 for 966). On an exact one, a shortlist whose k-th
  // penalized score beats anything left out (a bound from the least h) is the answer, and
  // otherwise the query is asked again of FlatShortcut.
  const bool exact = loaded.flat != nullptr && !loaded.row_hubs.empty();
  std::vector<float> scores;
  std::vector<int64_t> ids;
  if (loaded.flat && nq <= FlatShortcut::kMaxQueries) {
    scores.resize(static_cast<size_t>(nq * kk));
    ids.resize(static_cast<size_t>(nq * kk));
    loaded.flat->search(queries, nq, kk, scores.data(), ids.data(), weights.data(),
                        exact ? loaded.row_hubs.data() : nullptr);
    for (int64_t q = 0; q < nq; ++q) {
      for (int64_t j = 0; j < kk; ++j) hits[q].push_back({ids[q * kk + j], scores[q * kk + j]});
    }
    return hits;
  }
  const int64_t n = any_weight ? std::min(total, std::max<int64_t>(4 * kk, 64)) : kk;
  scores.resize(static_cast<size_t>(nq * n));
  ids.resize(static_cast<size_t>(nq * n));
  search_faiss(*loaded.index, queries, nq, n, scores.data(), ids.data());
  for (int64_t q = 0; q < nq; ++q) {
    if (weights[q] == 0) {
      for (int64_t j = 0; j < kk; ++j) {
        const int64_t id = ids[q * n + j];
        if (id >= 0) hits[q].push_back({id, scores[q * n + j]});
      }
      continue;
    }
    if (!rerank(scores.data() + q * n, ids.data() + q * n, n, kk, weights[q], *hubs, total,
                hits[q]) &&
        exact) {
      std::vector<float> s(static_cast<size_t>(kk));
      std::vector<int64_t> i(static_cast<size_t>(kk));
      loaded.flat->search(queries + q * impl_->dim, 1, kk, s.data(), i.data(), &weights[q],
                          loaded.row_hubs.data());
      hits[q].clear();
      for (int64_t j = 0; j < kk; ++j) hits[q].push_back({i[j], s[j]});
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
