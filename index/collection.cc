// The catalog half of Collection: opening and creating INDEX_DIR, the schema, items and texts.
// The FAISS half lives in collection_search.cc.
#include "index/collection.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <unordered_map>

#include "common/error.h"
#include "index/collection_impl.h"

namespace mms {
namespace {

namespace fs = std::filesystem;

// Bump when the schema changes; a catalog from a newer version is refused, not guessed at.
// 2: items.hub and texts.hub (hubness-aware scoring; a writer adds them to a version 1
// catalog, whose rows then hold none).
constexpr int64_t kSchemaVersion = 2;
// How far a stored vector's L2 norm may stray from 1 (float32 rounding is ~1e-6).
constexpr double kNormTolerance = 1e-3;

// ids are AUTOINCREMENT so a removed item's id is never handed to a new one: a search index
// loaded before the removal may still return the old id, which must then find nothing.
// The generation counters in meta count changes to the searchable vectors; triggers keep
// them, so even an edit made with the sqlite3 tool marks the FAISS files stale.
constexpr const char* kSchema = R"sql(
CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL);
CREATE TABLE items (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  path TEXT NOT NULL UNIQUE,
  size INTEGER NOT NULL,
  mtime_ns INTEGER NOT NULL,
  content_hash TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  caption TEXT,
  status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'stale')),
  error TEXT,
  vector BLOB,
  hub REAL,
  CHECK ((status = 'ok') = (vector IS NOT NULL))
);
CREATE INDEX items_searchable ON items (id) WHERE status = 'ok';
CREATE TABLE texts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  text TEXT NOT NULL UNIQUE,
  source TEXT NOT NULL,
  vector BLOB,
  hub REAL
);
CREATE INDEX texts_searchable ON texts (id) WHERE vector IS NOT NULL;
CREATE TABLE faiss_files (
  target TEXT PRIMARY KEY,
  generation INTEGER NOT NULL,
  count INTEGER NOT NULL,
  model_fingerprint TEXT NOT NULL,
  dim INTEGER NOT NULL,
  requested_type TEXT NOT NULL,
  index_type TEXT NOT NULL,
  size INTEGER NOT NULL,
  hash TEXT NOT NULL
);
CREATE TRIGGER items_insert_gen AFTER INSERT ON items WHEN new.status = 'ok' BEGIN
  UPDATE meta SET value = value + 1 WHERE key = 'images_generation';
END;
CREATE TRIGGER items_delete_gen AFTER DELETE ON items WHEN old.status = 'ok' BEGIN
  UPDATE meta SET value = value + 1 WHERE key = 'images_generation';
END;
CREATE TRIGGER texts_insert_gen AFTER INSERT ON texts WHEN new.vector IS NOT NULL BEGIN
  UPDATE meta SET value = value + 1 WHERE key = 'texts_generation';
END;
CREATE TRIGGER texts_delete_gen AFTER DELETE ON texts WHEN old.vector IS NOT NULL BEGIN
  UPDATE meta SET value = value + 1 WHERE key = 'texts_generation';
END;
)sql";

// The triggers on updates, which count a changed hub too (schema 2; a version 1 catalog's
// are replaced when it is upgraded).
constexpr const char* kUpdateTriggers = R"sql(
CREATE TRIGGER items_update_gen AFTER UPDATE OF id, status, vector, hub ON items
WHEN old.id IS NOT new.id OR old.status IS NOT new.status OR old.vector IS NOT new.vector
  OR old.hub IS NOT new.hub BEGIN
  UPDATE meta SET value = value + 1 WHERE key = 'images_generation';
END;
CREATE TRIGGER texts_update_gen AFTER UPDATE OF id, vector, hub ON texts
WHEN old.id IS NOT new.id OR old.vector IS NOT new.vector OR old.hub IS NOT new.hub BEGIN
  UPDATE meta SET value = value + 1 WHERE key = 'texts_generation';
END;
)sql";

struct Meta {
  int64_t schema_version = 0;
  std::string fingerprint;
  int64_t dim = 0;
  std::string index_type;
};

void configure_connection(SqliteDb& db) {
  // WAL lets searches read while the indexer writes. synchronous=FULL syncs the WAL at every
  // commit so a committed batch survives power loss, not only a killed process (which
  // NORMAL already covers in WAL mode). Commits are rare (one per batch of embeddings, which
  // cost far more than an fsync), so durability is nearly free. journal_mode is persistent
  // in the file; on a file system without shared memory SQLite keeps its rollback journal,
  // which is slower for concurrent readers but just as correct.
  SqliteStatement(db, "PRAGMA journal_mode = WAL").run();
  db.exec("PRAGMA synchronous = FULL");
}

bool has_table(SqliteDb& db, const std::string& name) {
  SqliteStatement st(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
  st.bind(1, name);
  return st.step();
}

// Version 1 -> 2 inside the caller's write transaction: the hub columns, NULL in every row
// (documents embedded before hubness-aware scoring; a model with hub banks has another
// fingerprint, so they are re-embedded before such a model searches them).
void upgrade_schema(SqliteDb& db, int64_t from) {
  if (from >= 2) return;
  for (const char* table : {"items", "texts", "staged_items", "staged_texts"}) {
    if (has_table(db, table)) db.exec(std::string("ALTER TABLE ") + table + " ADD COLUMN hub REAL");
  }
  db.exec("DROP TRIGGER IF EXISTS items_update_gen; DROP TRIGGER IF EXISTS texts_update_gen;");
  db.exec(kUpdateTriggers);
  set_meta(db, "schema_version", kSchemaVersion);
}

}  // namespace

const char* const kItemColumns =
    "id, path, size, mtime_ns, content_hash, width, height, caption, status, error";
const char* const kTextColumns = "id, text, source, vector IS NOT NULL";

void set_meta(SqliteDb& db, const std::string& key, const std::string& value) {
  SqliteStatement(db, "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
      .bind(1, key)
      .bind(2, value)
      .run();
}

void set_meta(SqliteDb& db, const std::string& key, int64_t value) {
  SqliteStatement(db, "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
      .bind(1, key)
      .bind(2, value)
      .run();
}

std::optional<std::string> get_meta(SqliteDb& db, const std::string& key) {
  SqliteStatement st(db, "SELECT value FROM meta WHERE key = ?1");
  st.bind(1, key);
  if (!st.step()) return std::nullopt;
  return st.column_text(0);
}

namespace {

Meta read_meta(SqliteDb& db) {
  if (!has_table(db, "meta")) {
    throw Error::corrupt("'" + db.path() + "' is not an mmsearch catalog (it has no meta table)");
  }
  Meta meta;
  bool seen[4] = {};
  SqliteStatement st(db, "SELECT key, value FROM meta");
  while (st.step()) {
    const std::string key = st.column_text(0);
    if (key == "schema_version") meta.schema_version = st.column_int64(1), seen[0] = true;
    if (key == "model_fingerprint") meta.fingerprint = st.column_text(1), seen[1] = true;
    if (key == "dim") meta.dim = st.column_int64(1), seen[2] = true;
    if (key == "index_type") meta.index_type = st.column_text(1), seen[3] = true;
  }
  for (bool s : seen) {
    if (!s) throw Error::corrupt("catalog '" + db.path() + "' lacks part of its meta table");
  }
  if (meta.schema_version > kSchemaVersion) {
    throw Error::unsupported("catalog '" + db.path() + "' has schema version " +
                             std::to_string(meta.schema_version) + "; this mmsearch reads up to " +
                             std::to_string(kSchemaVersion) + ", so upgrade mmsearch");
  }
  return meta;
}

// dim: the new model's, or 0 when the caller does not know it.
std::string model_mismatch(const std::string& dir, const Meta& meta, const std::string& fingerprint,
                           int64_t dim) {
  return "index '" + dir + "' was built with model " + meta.fingerprint + " (" +
         std::to_string(meta.dim) + "-d vectors); this is model " + fingerprint +
         (dim > 0 ? " (" + std::to_string(dim) + "-d vectors)" : std::string()) +
         "; re-embed with `mmsearch index --index " + dir + " --model ... --reembed`";
}

void check_fingerprint(const std::string& fingerprint) {
  if (fingerprint.empty()) {
    throw Error::invalid_argument("a collection needs the model fingerprint; it was empty");
  }
}

}  // namespace

ItemStatus parse_status(const std::string& word, const std::string& where) {
  if (word == "ok") return ItemStatus::kOk;
  if (word == "failed") return ItemStatus::kFailed;
  if (word == "stale") return ItemStatus::kStale;
  throw Error::corrupt(where + ": unknown item status '" + word + "'");
}

ItemRecord read_item(const SqliteStatement& st, const std::string& where) {
  ItemRecord r;
  r.id = st.column_int64(0);
  r.path = st.column_text(1);
  r.size = st.column_int64(2);
  r.mtime_ns = st.column_int64(3);
  r.content_hash = st.column_text(4);
  r.width = static_cast<int32_t>(st.column_int64(5));
  r.height = static_cast<int32_t>(st.column_int64(6));
  if (!st.is_null(7)) r.caption = st.column_text(7);
  r.status = parse_status(st.column_text(8), where);
  r.error = st.column_text(9);
  return r;
}

TextRecord read_text(const SqliteStatement& st) {
  return {st.column_int64(0), st.column_text(1), st.column_text(2), st.column_int64(3) != 0};
}

void check_hubs(const std::vector<float>& hubs, size_t n, const std::string& what) {
  if (!hubs.empty() && hubs.size() != n) {
    throw Error::invalid_argument(what + ": " + std::to_string(n) + " texts came with " +
                                  std::to_string(hubs.size()) + " hubs");
  }
  for (float h : hubs) {
    if (!std::isfinite(h)) throw Error::invalid_argument(what + ": a hub is not finite");
  }
}

void check_vector(const float* v, int32_t dim, const std::string& what) {
  double norm2 = 0;
  for (int32_t i = 0; i < dim; ++i) {
    if (!std::isfinite(v[i])) {
      throw Error::invalid_argument(what + " has a non-finite vector component at " +
                                    std::to_string(i));
    }
    norm2 += static_cast<double>(v[i]) * v[i];
  }
  if (std::abs(std::sqrt(norm2) - 1.0) > kNormTolerance) {
    throw Error::invalid_argument(what + " has a vector of L2 norm " +
                                  std::to_string(std::sqrt(norm2)) + "; vectors must be unit norm");
  }
}

void check_item_write(const ItemWrite& w, int32_t dim, const std::string& what) {
  if (w.size < 0 || w.width < 0 || w.height < 0) {
    throw Error::invalid_argument(what + " has a negative size, width or height");
  }
  if (w.ok) {
    if (w.vector.size() != static_cast<size_t>(dim)) {
      throw Error::invalid_argument(what + " has a vector of " + std::to_string(w.vector.size()) +
                                    " values; expected " + std::to_string(dim));
    }
    check_vector(w.vector.data(), dim, what);
    if (!std::isfinite(w.hub)) throw Error::invalid_argument(what + " has a non-finite hub");
  } else if (!w.vector.empty()) {
    throw Error::invalid_argument(what + " failed but comes with a vector");
  }
}

void check_page(int64_t after_id, int32_t limit) {
  if (after_id < 0 || limit < 1) {
    throw Error::invalid_argument("a page needs after_id >= 0 and limit >= 1; got " +
                                  std::to_string(after_id) + " and " + std::to_string(limit));
  }
}

const char* item_status_name(ItemStatus status) {
  switch (status) {
    case ItemStatus::kOk: return "ok";
    case ItemStatus::kFailed: return "failed";
    case ItemStatus::kStale: return "stale";
  }
  return "failed";
}

std::string catalog_path(const std::string& dir) {
  return (fs::path(dir) / "catalog.sqlite").string();
}

Collection::Collection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Collection::~Collection() = default;

std::unique_ptr<Collection> Collection::open(const std::string& dir,
                                             const CollectionOptions& options) {
  check_fingerprint(options.model_fingerprint);
  if (options.dim < 1 || options.dim > kMaxDim) {
    throw Error::invalid_argument("embedding dim " + std::to_string(options.dim) +
                                  " is outside 1.." + std::to_string(kMaxDim));
  }
  if (!options.index_type.empty() && options.index_type != "auto") {
    check_faiss_index_type(options.index_type, options.dim);
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error::io("cannot create index folder '" + dir + "': " + ec.message());

  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->fingerprint = options.model_fingerprint;
  impl->dim = options.dim;
  impl->db = std::make_unique<SqliteDb>(catalog_path(dir), /*create=*/true, kBusyTimeoutMs);
  impl->has_hubs = true;  // (created at, or upgraded to, the current schema below)
  SqliteDb& db = *impl->db;
  configure_connection(db);

  SqliteTransaction txn(db, /*immediate=*/true);
  if (!has_table(db, "meta")) {
    SqliteStatement any(db, "SELECT 1 FROM sqlite_master");
    if (any.step()) {
      throw Error::corrupt("'" + db.path() + "' is a database but not an mmsearch catalog");
    }
    db.exec(kSchema);
    db.exec(kUpdateTriggers);
    set_meta(db, "schema_version", kSchemaVersion);
    set_meta(db, "model_fingerprint", options.model_fingerprint);
    set_meta(db, "dim", static_cast<int64_t>(options.dim));
    set_meta(db, "index_type", options.index_type.empty() ? "auto" : options.index_type);
    set_meta(db, "images_generation", int64_t{0});
    set_meta(db, "texts_generation", int64_t{0});
  } else {
    const Meta meta = read_meta(db);
    const bool other_model =
        meta.fingerprint != options.model_fingerprint || meta.dim != options.dim;
    if (other_model && !options.reembed) {
      throw Error::mismatch(model_mismatch(dir, meta, options.model_fingerprint, options.dim));
    }
    upgrade_schema(db, meta.schema_version);
    if (!options.index_type.empty()) set_meta(db, "index_type", options.index_type);
    if (options.reembed) {
      // The catalog keeps answering in its own space; the new one is staged beside it.
      impl->fingerprint = meta.fingerprint;
      impl->dim = static_cast<int32_t>(meta.dim);
      prepare_reembed(*impl, other_model ? options.model_fingerprint : std::string(), options.dim);
    }
  }
  txn.commit();
  return std::unique_ptr<Collection>(new Collection(std::move(impl)));
}

std::unique_ptr<Collection> Collection::open_for_search(const std::string& dir,
                                                        const std::string& model_fingerprint) {
  check_fingerprint(model_fingerprint);
  const std::string path = catalog_path(dir);
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    throw Error::not_found("index '" + dir + "' has no catalog.sqlite; build it with " +
                           "`mmsearch index --index " + dir + " PATH...`");
  }
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->fingerprint = model_fingerprint;
  // Read-write when the OS allows (to rewrite stale FAISS files), else SQLite opens read-only.
  // A reader of a WAL catalog still needs its -shm and -wal files: where they cannot be made
  // (a read-only folder or medium, a full disk) and none holds anything, the catalog is read
  // as an immutable snapshot instead, so that such an index still answers searches.
  auto check_meta = [&](SqliteDb& db) {
    db.exec("PRAGMA synchronous = FULL");
    SqliteTransaction txn(db, /*immediate=*/false);
    const Meta meta = read_meta(db);
    if (meta.fingerprint != model_fingerprint) {
      if (get_meta(db, "staged_fingerprint") == model_fingerprint) {
        throw Error::unavailable("index '" + dir + "' is being re-embedded for model " +
                                 model_fingerprint + "; until that run completes it answers " +
                                 "for model " + meta.fingerprint);
      }
      throw Error::mismatch(model_mismatch(dir, meta, model_fingerprint, 0));
    }
    impl->dim = static_cast<int32_t>(meta.dim);
    impl->has_hubs = meta.schema_version >= 2;  // (a reader does not upgrade the catalog)
    txn.commit();
  };
  try {
    impl->db = std::make_unique<SqliteDb>(path, /*create=*/false, kBusyTimeoutMs);
    check_meta(*impl->db);
  } catch (const Error& e) {
    std::error_code size_ec;
    const auto wal_bytes = fs::file_size(path + "-wal", size_ec);
    if (e.kind() != ErrorKind::kIo || (!size_ec && wal_bytes > 0)) throw;
    try {
      impl->db = std::make_unique<SqliteDb>(path, /*create=*/false, kBusyTimeoutMs,
                                            /*snapshot=*/true);
      check_meta(*impl->db);
    } catch (const Error&) {
      throw e;  // the first failure is the one that explains
    }
  }
  sync_all_indexes(*impl, /*best_effort=*/true);
  return std::unique_ptr<Collection>(new Collection(std::move(impl)));
}

const std::string& Collection::dir() const {
  return impl_->dir;
}

const std::string& Collection::model_fingerprint() const {
  return impl_->fingerprint;
}

int32_t Collection::dim() const {
  return impl_->dim;
}

std::string Collection::index_type() const {
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  SqliteStatement st(*impl_->db, "SELECT value FROM meta WHERE key = 'index_type'");
  return st.step() ? st.column_text(0) : "auto";
}

// ---- items ----------------------------------------------------------------------------------

std::optional<ItemRecord> Collection::item(int64_t id) const {
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  SqliteStatement st(*impl_->db,
                     std::string("SELECT ") + kItemColumns + " FROM items WHERE id = ?1");
  st.bind(1, id);
  if (!st.step()) return std::nullopt;
  return read_item(st, "catalog '" + impl_->db->path() + "'");
}

namespace {

// "?1, ?2, ..., ?n" for an IN list of n ids (SQLite allows 32766 parameters).
std::string placeholders(size_t n) {
  std::string out;
  for (size_t i = 1; i <= n; ++i) out += (i > 1 ? ", ?" : "?") + std::to_string(i);
  return out;
}

// The records of `ids` in order, looked up in chunks of one IN query each.
template <typename Record, typename Read>
std::vector<std::optional<Record>> records_by_id(const Collection::Impl& impl, const char* table,
                                                 const char* columns,
                                                 const std::vector<int64_t>& ids, Read read) {
  constexpr size_t kChunk = 500;
  std::vector<std::optional<Record>> out(ids.size());
  std::lock_guard<std::mutex> lock(impl.db_mutex);
  for (size_t start = 0; start < ids.size(); start += kChunk) {
    const size_t n = std::min(kChunk, ids.size() - start);
    SqliteStatement st(*impl.db, std::string("SELECT ") + columns + " FROM " + table +
                                     " WHERE id IN (" + placeholders(n) + ")");
    for (size_t i = 0; i < n; ++i) st.bind(static_cast<int>(i + 1), ids[start + i]);
    std::unordered_map<int64_t, Record> found;
    while (st.step()) {
      Record r = read(st);
      const int64_t id = r.id;
      found.emplace(id, std::move(r));
    }
    for (size_t i = 0; i < n; ++i) {
      auto it = found.find(ids[start + i]);
      if (it != found.end()) out[start + i] = it->second;
    }
  }
  return out;
}

}  // namespace

std::vector<std::optional<ItemRecord>> Collection::items(const std::vector<int64_t>& ids) const {
  const std::string where = "catalog '" + impl_->db->path() + "'";
  return records_by_id<ItemRecord>(*impl_, "items", kItemColumns, ids,
                                   [&](SqliteStatement& st) { return read_item(st, where); });
}

std::optional<ItemRecord> Collection::find_item_by_path(const std::string& path) const {
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  SqliteStatement st(*impl_->db,
                     std::string("SELECT ") + kItemColumns + " FROM items WHERE path = ?1");
  st.bind(1, path);
  if (!st.step()) return std::nullopt;
  return read_item(st, "catalog '" + impl_->db->path() + "'");
}

std::vector<ItemRecord> item_page(const Collection::Impl& impl, const std::string& condition,
                                  int64_t after_id, int32_t limit) {
  check_page(after_id, limit);
  std::lock_guard<std::mutex> lock(impl.db_mutex);
  SqliteStatement st(*impl.db, std::string("SELECT ") + kItemColumns + " FROM items WHERE (" +
                                   condition + ") AND id > ?1 ORDER BY id LIMIT ?2");
  st.bind(1, after_id).bind(2, static_cast<int64_t>(limit));
  std::vector<ItemRecord> page;
  const std::string where = "catalog '" + impl.db->path() + "'";
  while (st.step()) page.push_back(read_item(st, where));
  return page;
}

std::vector<TextRecord> text_page(const Collection::Impl& impl, const std::string& condition,
                                  int64_t after_id, int32_t limit) {
  check_page(after_id, limit);
  std::lock_guard<std::mutex> lock(impl.db_mutex);
  SqliteStatement st(*impl.db, std::string("SELECT ") + kTextColumns + " FROM texts WHERE (" +
                                   condition + ") AND id > ?1 ORDER BY id LIMIT ?2");
  st.bind(1, after_id).bind(2, static_cast<int64_t>(limit));
  std::vector<TextRecord> page;
  while (st.step()) page.push_back(read_text(st));
  return page;
}

std::vector<ItemRecord> Collection::list_items(int64_t after_id, int32_t limit) const {
  return item_page(*impl_, "1", after_id, limit);
}

int64_t Collection::item_count(std::optional<ItemStatus> status) const {
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  if (!status) {
    SqliteStatement st(*impl_->db, "SELECT COUNT(*) FROM items");
    st.step();
    return st.column_int64(0);
  }
  SqliteStatement st(*impl_->db, "SELECT COUNT(*) FROM items WHERE status = ?1");
  st.bind(1, std::string(item_status_name(*status)));
  st.step();
  return st.column_int64(0);
}

namespace {

// Writes in the live space while another model's is staged would mix two spaces.
void refuse_while_reembedding(const Collection::Impl& impl, const char* what) {
  if (!impl.staged_fingerprint.empty()) {
    throw Error::invalid_argument(std::string(what) + ": this collection is being re-embedded " +
                                  "for model " + impl.staged_fingerprint +
                                  "; stage the new vectors and commit_reembed() first");
  }
}

}  // namespace

std::vector<int64_t> Collection::upsert_items(const std::vector<ItemWrite>& items) {
  refuse_while_reembedding(*impl_, "upsert_items");
  const int32_t dim = impl_->dim;
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  SqliteDb& db = *impl_->db;
  SqliteTransaction txn(db, /*immediate=*/true);
  SqliteStatement st(db, R"sql(
    INSERT INTO items (path, size, mtime_ns, content_hash, width, height, caption, status,
                       error, vector, hub)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
    ON CONFLICT (path) DO UPDATE SET
      size = excluded.size, mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash,
      width = excluded.width, height = excluded.height, caption = excluded.caption,
      status = excluded.status, error = excluded.error, vector = excluded.vector,
      hub = excluded.hub
    RETURNING id)sql");
  std::vector<int64_t> ids;
  ids.reserve(items.size());
  for (const ItemWrite& w : items) {
    const std::string what = "item '" + w.path + "'";
    if (w.path.empty()) throw Error::invalid_argument("an item to store has an empty path");
    check_item_write(w, dim, what);
    st.bind(1, w.path)
        .bind(2, w.size)
        .bind(3, w.mtime_ns)
        .bind(4, w.content_hash)
        .bind(5, static_cast<int64_t>(w.width))
        .bind(6, static_cast<int64_t>(w.height));
    if (w.caption) {
      st.bind(7, *w.caption);
    } else {
      st.bind_null(7);
    }
    st.bind(8, std::string(w.ok ? "ok" : "failed"));
    if (w.ok) {
      st.bind_null(9).bind_blob(10, w.vector.data(), w.vector.size() * sizeof(float));
      st.bind_double(11, w.hub);
    } else {
      st.bind(9, w.error).bind_null(10).bind_null(11);
    }
    st.step();
    ids.push_back(st.column_int64(0));
    st.reset();
  }
  txn.commit();
  return ids;
}

int64_t Collection::remove_items(const std::vector<int64_t>& ids) {
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  SqliteDb& db = *impl_->db;
  SqliteTransaction txn(db, /*immediate=*/true);
  SqliteStatement st(db, "DELETE FROM items WHERE id = ?1");
  int64_t removed = 0;
  for (int64_t id : ids) {
    st.bind(1, id).run();
    removed += db.changes();
    st.reset();
  }
  txn.commit();
  return removed;
}

// ---- texts ----------------------------------------------------------------------------------

std::vector<int64_t> Collection::add_texts(const std::vector<std::string>& texts,
                                           const std::vector<float>& vectors,
                                           const std::string& source,
                                           const std::vector<float>& hubs) {
  refuse_while_reembedding(*impl_, "add_texts");
  const int32_t dim = impl_->dim;
  if (vectors.size() != texts.size() * static_cast<size_t>(dim)) {
    throw Error::invalid_argument(std::to_string(texts.size()) + " texts came with " +
                                  std::to_string(vectors.size()) + " vector values; expected " +
                                  std::to_string(texts.size()) + " x " + std::to_string(dim));
  }
  check_hubs(hubs, texts.size(), "add_texts");
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  SqliteDb& db = *impl_->db;
  SqliteTransaction txn(db, /*immediate=*/true);
  SqliteStatement st(db, R"sql(
    INSERT INTO texts (text, source, vector, hub) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (text) DO UPDATE SET source = excluded.source, vector = excluded.vector,
      hub = excluded.hub
    RETURNING id)sql");
  std::vector<int64_t> ids;
  ids.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    if (texts[i].empty()) throw Error::invalid_argument("text " + std::to_string(i) + " is empty");
    const float* v = vectors.data() + i * dim;
    check_vector(v, dim, "text " + std::to_string(i));
    st.bind(1, texts[i]).bind(2, source).bind_blob(3, v, dim * sizeof(float));
    st.bind_double(4, hubs.empty() ? 0.0 : hubs[i]);
    st.step();
    ids.push_back(st.column_int64(0));
    st.reset();
  }
  txn.commit();
  return ids;
}

std::optional<TextRecord> Collection::text(int64_t id) const {
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  SqliteStatement st(*impl_->db,
                     std::string("SELECT ") + kTextColumns + " FROM texts WHERE id = ?1");
  st.bind(1, id);
  if (!st.step()) return std::nullopt;
  return read_text(st);
}

std::vector<std::optional<TextRecord>> Collection::texts(const std::vector<int64_t>& ids) const {
  return records_by_id<TextRecord>(*impl_, "texts", kTextColumns, ids,
                                   [](SqliteStatement& st) { return read_text(st); });
}

std::vector<TextRecord> Collection::list_texts(int64_t after_id, int32_t limit) const {
  return text_page(*impl_, "1", after_id, limit);
}

std::optional<std::vector<float>> Collection::stored_vector(Target target, int64_t id) const {
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  SqliteStatement st(*impl_->db, target == Target::kImages
                                     ? "SELECT vector FROM items WHERE id = ?1"
                                     : "SELECT vector FROM texts WHERE id = ?1");
  st.bind(1, id);
  if (!st.step() || st.is_null(0)) return std::nullopt;
  size_t bytes = 0;
  const void* blob = st.column_blob(0, &bytes);
  if (bytes != static_cast<size_t>(impl_->dim) * sizeof(float)) {
    throw Error::corrupt("catalog '" + impl_->db->path() + "': the vector of " +
                         (target == Target::kImages ? "item " : "text ") + std::to_string(id) +
                         " has " + std::to_string(bytes) + " bytes");
  }
  std::vector<float> v(static_cast<size_t>(impl_->dim));
  std::memcpy(v.data(), blob, bytes);
  return v;
}

int64_t Collection::text_count() const {
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  SqliteStatement st(*impl_->db, "SELECT COUNT(*) FROM texts");
  st.step();
  return st.column_int64(0);
}

}  // namespace mms
