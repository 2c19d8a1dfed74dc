// Collection's state, shared by collection.cc (catalog: open, items, texts) and
// collection_search.cc (FAISS indexes: sync, reload, search). Internal to index/.
#pragma once

#include <faiss/Index.h>

#include <array>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>

#include "index/collection.h"
#include "index/faiss_store.h"
#include "index/sqlite_db.h"

namespace mms {

// A search index in memory and what it was built from.
// Hubness-aware scoring: each searchable vector's h, by catalog id (encoders/memory.h).
struct HubTable {
  std::vector<int64_t> ids;  // increasing
  std::vector<float> hubs;   // hubs[i] is ids[i]'s (0 where the catalog holds none)
  float min = 0;             // the least of them
  bool any = false;          // whether any is not 0
  float of(int64_t id) const;
};

struct LoadedIndex {
  std::unique_ptr<faiss::Index> index;
  std::shared_ptr<const HubTable> hubs;  // of the vectors `index` holds
  std::string index_type;  // as built
  FaissFileStamp stamp;    // of the file it came from or went to; empty when only in memory
  int64_t generation = -1;
  std::shared_ptr<const FlatShortcut> flat;  // for a few queries on a Flat index
  // With `flat` and hubs: each stored vector's h in the flat storage's order (its full
  // penalized scan).
  std::vector<float> row_hubs;
};

struct Collection::Impl {
  std::string dir;
  std::string fingerprint;  // the model of the searchable vectors
  int32_t dim = 0;
  // While re-embedding (open() with reembed for another model): the model being staged.
  std::string staged_fingerprint;
  int32_t staged_dim = 0;
  // Whether the catalog has hub columns (schema 2; a reader leaves a version 1 catalog as is
  // and sees them once a writer has upgraded it). Under db_mutex.
  bool has_hubs = false;

  // Guards db and every statement run on it.
  mutable std::mutex db_mutex;
  std::unique_ptr<SqliteDb> db;

  // One sync or reload at a time; held across a rebuild, which can take minutes.
  std::mutex sync_mutex;
  // Shared by searches; exclusive to swap or retune `loaded`.
  mutable std::shared_mutex search_mutex;
  std::array<LoadedIndex, 2> loaded;  // by Target
  SearchParams params;
};

// Little-endian float32, the catalog's BLOB layout (this build only targets such machines).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "catalog vectors are stored as little-endian float32; add byte swapping here");

std::string catalog_path(const std::string& dir);

// Catalog helpers shared by collection.cc and collection_reembed.cc.
extern const char* const kItemColumns;  // read_item's columns, in order
extern const char* const kTextColumns;  // read_text's columns, in order
void set_meta(SqliteDb& db, const std::string& key, const std::string& value);
void set_meta(SqliteDb& db, const std::string& key, int64_t value);
std::optional<std::string> get_meta(SqliteDb& db, const std::string& key);
ItemStatus parse_status(const std::string& word, const std::string& where);
ItemRecord read_item(const SqliteStatement& st, const std::string& where);
TextRecord read_text(const SqliteStatement& st);
// Throws Error::invalid_argument naming `what` unless v[0..dim) is finite with unit norm.
void check_vector(const float* v, int32_t dim, const std::string& what);
// Throws Error::invalid_argument naming `what` unless hubs is empty or n finite values.
void check_hubs(const std::vector<float>& hubs, size_t n, const std::string& what);
// Throws Error::invalid_argument naming `what` for negative sizes, an ok record without a
// [dim] unit vector, or a failed one with a vector.
void check_item_write(const ItemWrite& w, int32_t dim, const std::string& what);
void check_page(int64_t after_id, int32_t limit);
// Up to `limit` items (texts) matching the SQL `condition` with id > after_id, by id.
std::vector<ItemRecord> item_page(const Collection::Impl& impl, const std::string& condition,
                                  int64_t after_id, int32_t limit);
std::vector<TextRecord> text_page(const Collection::Impl& impl, const std::string& condition,
                                  int64_t after_id, int32_t limit);

// Inside open()'s transaction, for CollectionOptions::reembed: makes sure the staging tables
// exist and stage `fingerprint` (dim `dim`), keeping what an interrupted run staged for the
// same model and dropping anything staged for another; "" (the catalog's own model) clears
// the staging.
void prepare_reembed(Collection::Impl& impl, const std::string& fingerprint, int32_t dim);

// Synchronizes both targets. best_effort: a file that cannot be written (read-only folder or
// catalog) leaves the rebuilt index in memory instead of throwing.
void sync_all_indexes(Collection::Impl& impl, bool best_effort);

}  // namespace mms
