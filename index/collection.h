// A searchable collection in an INDEX_DIR: `catalog.sqlite` is the source of truth (items,
// texts, their embeddings as BLOBs, which model made them), and `images.faiss` / `texts.faiss`
// are caches derived from it, rebuilt whenever they are missing, stale or damaged. A FAISS
// file is only ever parsed after its bytes match the size and hash the catalog recorded when
// it was written, for the catalog contents it was written from (FAISS trusts its input).
// The catalog records the model that made its vectors and refuses another.
//
// Vectors everywhere: dim() float32, unit L2 norm; scores are inner products (cosine).
//
// Thread-safety: every method may be called from any thread. Catalog reads and writes share
// one SQLite connection behind an internal mutex (each write call is one transaction);
// search() runs concurrently with everything except the instant sync_indexes(),
// reload_indexes() or set_search_params() swap or retune an index. Across processes, readers
// (search, serve) run while one writer (index) commits (SQLite WAL); two writers take turns,
// waiting up to kBusyTimeoutMs before Error::unavailable.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mms {

struct CollectionOptions {
  // Identifies the model that makes the vectors (Embedder::fingerprint()). Required.
  std::string model_fingerprint;
  // Embedding size, 1..kMaxDim. Required.
  int32_t dim = 0;
  // FAISS factory string for the indexes ("Flat", "HNSW32", "IVF1024,Flat", ...; the
  // collection adds the id map itself), or "auto": Collection::auto_index_type's choice for
  // the number of vectors. "" keeps what the catalog records ("auto" for a new one).
  std::string index_type;
  // When the catalog was built with another model (or dim): open it to re-embed into this
  // model's space instead of refusing it. The catalog keeps answering in its old space
  // (model_fingerprint() and dim() stay the old model's) while the new vectors are staged
  // beside it with stage_items / stage_texts; commit_reembed() then swaps every item and
  // text to the new space in one transaction. What an interrupted run staged is kept for the
  // next run with the same model. With the catalog's own model it clears any staging.
  bool reembed = false;
};

// Query-time accuracy/speed knobs; each only affects index types that have it.
struct SearchParams {
  int32_t nprobe = 16;     // IVF lists visited per query (capped at the list count)
  int32_t ef_search = 64;  // HNSW candidate list length (FAISS uses at least k)
};

enum class ItemStatus {
  kOk,      // embedded; searchable
  kFailed,  // could not be read or embedded; `error` says why; never searchable
  kStale,   // its file was gone when the collection was re-embedded; not searchable until
            // indexed again
};

// "ok", "failed", "stale": the words the catalog stores.
const char* item_status_name(ItemStatus status);

// One image file as the catalog knows it.
struct ItemRecord {
  int64_t id = 0;  // stable for the life of the item, also across updates
  std::string path;
  int64_t size = 0;      // bytes
  int64_t mtime_ns = 0;  // modification time, ns since the epoch
  std::string content_hash;
  int32_t width = 0;
  int32_t height = 0;
  std::optional<std::string> caption;
  ItemStatus status = ItemStatus::kOk;
  std::string error;  // empty unless kFailed
};

// What the indexer knows about one image file, to insert or update by path.
struct ItemWrite {
  std::string path;
  int64_t size = 0;
  int64_t mtime_ns = 0;
  std::string content_hash;
  int32_t width = 0;
  int32_t height = 0;
  std::optional<std::string> caption;
  bool ok = true;
  std::string error;          // why it failed; only when !ok
  std::vector<float> vector;  // [dim] unit norm when ok; empty when !ok
  // Its h for hubness-aware scoring (Embedder::image_hubs; encoders/memory.h) when ok; 0
  // where the model has no hub banks.
  float hub = 0;
};

struct TextRecord {
  int64_t id = 0;
  std::string text;
  std::string source;
  bool has_vector = true;  // false only in catalogs re-embedded by mmsearch before staging
};

struct SearchHit {
  int64_t id = 0;  // catalog id: an item id for kImages, a text id for kTexts
  // Inner product with the query, in [-1, 1], less the query's hub weight times the hit's h
  // where search() was given hub weights (hubness-aware scoring).
  float score = 0.f;
};

// The search index in memory for one target.
struct IndexInfo {
  bool loaded = false;
  std::string index_type;  // factory string actually built ("Flat" if training was impossible)
  int64_t vectors = 0;
};

class Collection {
 public:
  enum class Target { kImages, kTexts };

  static constexpr int32_t kMaxDim = 65536;
  static constexpr int32_t kMaxSearchK = 10000;
  static constexpr int64_t kAutoExactLimit = 100000;
  static constexpr int64_t kAutoIvfFrom = 200000;
  static constexpr int32_t kBusyTimeoutMs = 10000;

  // The index "auto" builds for `count` vectors: exact "Flat" below kAutoExactLimit, "HNSW32"
  // below kAutoIvfFrom, then "IVF<n>,Flat" with n the power of two nearest sqrt(count), at
  // least 1024. Chosen by build/index_bench (README, "Benchmarks"): from 200k vectors on,
  // IVF1024 at nprobe 16 finds more of the true top 10 than HNSW32 at efSearch 64, and it
  // builds about twelve times faster.
  static std::string auto_index_type(int64_t count);

  // Opens INDEX_DIR `dir` for writing, creating the folder and catalog when missing, and
  // records options.index_type when given. Loads no search index (see sync_indexes). Throws
  // Error: mismatch when the catalog was built with another model or dim (unless reembed),
  // naming both; invalid_argument for bad options; corrupt when catalog.sqlite is not a
  // catalog; unsupported for a catalog from a newer mmsearch; io when it cannot be created.
  static std::unique_ptr<Collection> open(const std::string& dir, const CollectionOptions& options);

  // Opens an existing INDEX_DIR to search with the model `model_fingerprint` and loads both
  // search indexes, rebuilding and rewriting any FAISS file that is missing, stale or damaged
  // (kept in memory only when the folder is read-only). Where SQLite cannot make the catalog's
  // -shm / -wal files (a read-only folder or medium, a full disk) and no -wal holds committed
  // writes, the catalog is read as an immutable snapshot: searches answer, a writer's later
  // changes are not seen. Throws Error: not_found when there is no catalog; mismatch for
  // another model; corrupt / unsupported as open(); io when it cannot be read.
  static std::unique_ptr<Collection> open_for_search(const std::string& dir,
                                                     const std::string& model_fingerprint);

  ~Collection();
  Collection(const Collection&) = delete;
  Collection& operator=(const Collection&) = delete;

  const std::string& dir() const;
  const std::string& model_fingerprint() const;
  int32_t dim() const;
  // The requested index type as the catalog records it: "auto" or a factory string.
  std::string index_type() const;

  // ---- items (images) ---------------------------------------------------------------------

  std::optional<ItemRecord> item(int64_t id) const;
  // item() of each id, in order, in one catalog query (a search answer's k lookups).
  std::vector<std::optional<ItemRecord>> items(const std::vector<int64_t>& ids) const;
  std::optional<ItemRecord> find_item_by_path(const std::string& path) const;
  // Up to `limit` items with id > after_id, by increasing id: page through a catalog of any
  // size with after_id = last id seen, starting from 0.
  std::vector<ItemRecord> list_items(int64_t after_id, int32_t limit) const;
  // All items, or those with `status`.
  int64_t item_count(std::optional<ItemStatus> status = std::nullopt) const;

  // Inserts or updates each item by path, in ONE transaction: either all are stored or, when
  // any throws, none. An updated item keeps its id. Returns the ids in order. Throws
  // Error::invalid_argument naming the path for an empty path, negative sizes, a vector that
  // is not [dim] finite with unit norm when ok, or a vector given with !ok.
  std::vector<int64_t> upsert_items(const std::vector<ItemWrite>& items);
  // Deletes these items (unknown ids are ignored) in one transaction; returns how many went.
  int64_t remove_items(const std::vector<int64_t>& ids);

  // ---- texts ------------------------------------------------------------------------------

  // Stores texts with their vectors [n, dim] and their h ([n], Embedder::text_hubs; empty:
  // 0) in one transaction; a text already stored keeps its id and takes the new vector, h
  // and source. Returns the ids in order. Throws Error::invalid_argument for an empty text, a
  // vectors size other than n * dim, a vector that is not finite with unit norm, or hubs of
  // another size or not finite.
  std::vector<int64_t> add_texts(const std::vector<std::string>& texts,
                                 const std::vector<float>& vectors, const std::string& source,
                                 const std::vector<float>& hubs = {});
  std::optional<TextRecord> text(int64_t id) const;
  std::vector<std::optional<TextRecord>> texts(const std::vector<int64_t>& ids) const;
  // Like list_items; pages through the texts.
  std::vector<TextRecord> list_texts(int64_t after_id, int32_t limit) const;
  int64_t text_count() const;

  // The stored vector of an item (kImages) or a text (kTexts): [dim] unit norm, or nullopt
  // when there is no such id or it has no vector (a failed or stale item).
  std::optional<std::vector<float>> stored_vector(Target target, int64_t id) const;

  // ---- re-embedding into another model's space (open() with reembed) ----------------------

  // The model being staged ("" when not re-embedding) and its dim.
  const std::string& reembed_fingerprint() const;
  int32_t reembed_dim() const;
  // What is still to stage, by increasing id > after_id: items that are not failed (their
  // file could not be read for the old model either), and texts.
  std::vector<ItemRecord> items_to_reembed(int64_t after_id, int32_t limit) const;
  std::vector<TextRecord> texts_to_reembed(int64_t after_id, int32_t limit) const;
  // Items and texts still to stage, together.
  int64_t reembed_pending() const;
  // Stages the new model's record of item ids[i] in one transaction: writes[i] holds its
  // size, mtime, hash, width and height as read now (its path is ignored) and either a vector
  // (ok), or !ok with an error (the file is unreadable now: the item turns failed), or !ok
  // with no error (the file is gone: the item turns stale, and `--prune` removes it).
  // Throws Error::invalid_argument for mismatched sizes or a bad vector, and when not
  // re-embedding.
  void stage_items(const std::vector<int64_t>& ids, const std::vector<ItemWrite>& writes);
  // vectors: [ids.size(), reembed_dim()]; hubs: [ids.size()] or empty (0).
  void stage_texts(const std::vector<int64_t>& ids, const std::vector<float>& vectors,
                   const std::vector<float>& hubs = {});
  // When nothing is left to stage: in one transaction, every item and text takes its staged
  // record, the catalog records the new model, and the collection is in the new space
  // (sync_indexes builds its search indexes). Returns false and changes nothing when
  // something is still to stage (say a writer with the old model added items meanwhile).
  bool commit_reembed();

  // ---- search -----------------------------------------------------------------------------

  // Makes images.faiss and texts.faiss match the catalog and loads them for search: keeps a
  // file whose recorded stamp, catalog generation, vector count, model and index type all
  // match, else rebuilds it from the stored vectors (training IVF / HNSW on them) and writes
  // it atomically (temp file, fsync, rename, then the stamp in the catalog). The indexer calls
  // it at the end of a run. Throws Error::io when a file cannot be written.
  void sync_indexes();

  // For long-running readers: loads FAISS files that a writer's sync_indexes() wrote since
  // this collection loaded its indexes, when they verify; never rebuilds. Returns whether
  // anything changed. Cheap when nothing did.
  bool reload_indexes();

  // queries [nq, dim] float32 row-major, unit norm. Returns, per query, up to k hits by
  // decreasing score (fewer when the target holds fewer vectors). Answers from the indexes
  // loaded by open_for_search / sync_indexes / reload_indexes: writes made since are not
  // seen, and a hit may name an item removed since (item(id) then returns nullopt). Throws
  // Error::invalid_argument for k outside 1..kMaxSearchK, nq < 0 or non-finite queries or
  // hub weights; Error::unavailable when no index is loaded yet (open() without
  // sync_indexes()).
  //
  // Hubness-aware scoring (encoders/memory.h): with hub_weights ([nq], each 0 or more), query
  // q ranks a vector v by q.v - hub_weights[q] * h(v), h as stored with v, and exactly so on
  // an exact (Flat) index: the index is asked for more candidates until no vector it has not
  // returned could score above the k-th. On an approximate index, the candidates are the
  // index's own (IVF, HNSW).
  std::vector<std::vector<SearchHit>> search(Target target, const float* queries, int64_t nq,
                                             int32_t k, const float* hub_weights = nullptr) const;

  // Throws Error::invalid_argument for values below 1.
  void set_search_params(const SearchParams& params);
  SearchParams search_params() const;
  IndexInfo index_info(Target target) const;

  // Internal state (index/collection_impl.h), opaque here; public only so that the module's
  // own helper functions can name it.
  struct Impl;

 private:
  explicit Collection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mms
