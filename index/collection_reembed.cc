// Re-embedding a collection into another model's space while it keeps answering in its own:
// new vectors are staged in tables beside the live ones and swapped in by one transaction.
#include <string>

#include "common/error.h"
#include "index/collection.h"
#include "index/collection_impl.h"

namespace mms {
namespace {

// staged_items holds, per item id, the record the new model made of its file: the columns of
// items that reading the file again can change. Rows of removed items are simply skipped at
// the swap. CREATE ... IF NOT EXISTS: catalogs made before staging existed gain the tables.
constexpr const char* kStagingSchema = R"sql(
CREATE TABLE IF NOT EXISTS staged_items (
  id INTEGER PRIMARY KEY,
  size INTEGER NOT NULL,
  mtime_ns INTEGER NOT NULL,
  content_hash TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'stale')),
  error TEXT,
  vector BLOB,
  hub REAL,
  CHECK ((status = 'ok') = (vector IS NOT NULL))
);
CREATE TABLE IF NOT EXISTS staged_texts (id INTEGER PRIMARY KEY, vector BLOB NOT NULL, hub REAL);
)sql";

// What is still to stage, as conditions on items and texts.
constexpr const char* kPendingItems =
    "status != 'failed' AND id NOT IN (SELECT id FROM staged_items)";
constexpr const char* kPendingTexts = "id NOT IN (SELECT id FROM staged_texts)";

void clear_staging(SqliteDb& db) {
  db.exec(
      "DELETE FROM staged_items; DELETE FROM staged_texts;"
      "DELETE FROM meta WHERE key IN ('staged_fingerprint', 'staged_dim');");
}

void require_reembedding(const Collection::Impl& impl, const char* what) {
  if (impl.staged_fingerprint.empty()) {
    throw Error::invalid_argument(std::string(what) +
                                  ": this collection is not being re-embedded (open it with "
                                  "reembed for another model)");
  }
}

int64_t count_of(SqliteDb& db, const char* table, const char* condition) {
  SqliteStatement st(db, std::string("SELECT COUNT(*) FROM ") + table + " WHERE " + condition);
  st.step();
  return st.column_int64(0);
}

}  // namespace

void prepare_reembed(Collection::Impl& impl, const std::string& fingerprint, int32_t dim) {
  SqliteDb& db = *impl.db;
  db.exec(kStagingSchema);
  const auto staged = get_meta(db, "staged_fingerprint");
  const auto staged_dim = get_meta(db, "staged_dim");
  const bool same =
      staged && *staged == fingerprint && staged_dim && *staged_dim == std::to_string(dim);
  if (!same) {
    clear_staging(db);
    if (!fingerprint.empty()) {
      set_meta(db, "staged_fingerprint", fingerprint);
      set_meta(db, "staged_dim", static_cast<int64_t>(dim));
    }
  }
  impl.staged_fingerprint = fingerprint;
  impl.staged_dim = fingerprint.empty() ? 0 : dim;
}

const std::string& Collection::reembed_fingerprint() const {
  return impl_->staged_fingerprint;
}

int32_t Collection::reembed_dim() const {
  return impl_->staged_dim;
}

std::vector<ItemRecord> Collection::items_to_reembed(int64_t after_id, int32_t limit) const {
  require_reembedding(*impl_, "items_to_reembed");
  return item_page(*impl_, kPendingItems, after_id, limit);
}

std::vector<TextRecord> Collection::texts_to_reembed(int64_t after_id, int32_t limit) const {
  require_reembedding(*impl_, "texts_to_reembed");
  return text_page(*impl_, kPendingTexts, after_id, limit);
}

int64_t Collection::reembed_pending() const {
  require_reembedding(*impl_, "reembed_pending");
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  return count_of(*impl_->db, "items", kPendingItems) +
         count_of(*impl_->db, "texts", kPendingTexts);
}

void Collection::stage_items(const std::vector<int64_t>& ids,
                             const std::vector<ItemWrite>& writes) {
  require_reembedding(*impl_, "stage_items");
  if (ids.size() != writes.size()) {
    throw Error::invalid_argument("stage_items: " + std::to_string(ids.size()) + " ids for " +
                                  std::to_string(writes.size()) + " records");
  }
  const int32_t dim = impl_->staged_dim;
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  SqliteDb& db = *impl_->db;
  SqliteTransaction txn(db, /*immediate=*/true);
  SqliteStatement st(db, R"sql(
    INSERT OR REPLACE INTO staged_items
      (id, size, mtime_ns, content_hash, width, height, status, error, vector, hub)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10))sql");
  for (size_t i = 0; i < ids.size(); ++i) {
    const ItemWrite& w = writes[i];
    const std::string what = "item " + std::to_string(ids[i]);
    check_item_write(w, dim, what);
    st.bind(1, ids[i])
        .bind(2, w.size)
        .bind(3, w.mtime_ns)
        .bind(4, w.content_hash)
        .bind(5, static_cast<int64_t>(w.width))
        .bind(6, static_cast<int64_t>(w.height));
    if (w.ok) {
      st.bind(7, std::string("ok")).bind_null(8);
      st.bind_blob(9, w.vector.data(), w.vector.size() * sizeof(float)).bind_double(10, w.hub);
    } else {
      st.bind(7, std::string(w.error.empty() ? "stale" : "failed"));
      if (w.error.empty()) {
        st.bind_null(8);
      } else {
        st.bind(8, w.error);
      }
      st.bind_null(9).bind_null(10);
    }
    st.run();
    st.reset();
  }
  txn.commit();
}

void Collection::stage_texts(const std::vector<int64_t>& ids, const std::vector<float>& vectors,
                             const std::vector<float>& hubs) {
  require_reembedding(*impl_, "stage_texts");
  const int32_t dim = impl_->staged_dim;
  if (vectors.size() != ids.size() * static_cast<size_t>(dim)) {
    throw Error::invalid_argument("stage_texts: " + std::to_string(ids.size()) +
                                  " texts came with " + std::to_string(vectors.size()) +
                                  " vector values; expected " + std::to_string(ids.size()) + " x " +
                                  std::to_string(dim));
  }
  check_hubs(hubs, ids.size(), "stage_texts");
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  SqliteDb& db = *impl_->db;
  SqliteTransaction txn(db, /*immediate=*/true);
  SqliteStatement st(db,
                     "INSERT OR REPLACE INTO staged_texts (id, vector, hub) VALUES (?1, ?2, ?3)");
  for (size_t i = 0; i < ids.size(); ++i) {
    const float* v = vectors.data() + i * dim;
    check_vector(v, dim, "text " + std::to_string(ids[i]));
    st.bind(1, ids[i]).bind_blob(2, v, dim * sizeof(float));
    st.bind_double(3, hubs.empty() ? 0.0 : hubs[i]).run();
    st.reset();
  }
  txn.commit();
}

bool Collection::commit_reembed() {
  require_reembedding(*impl_, "commit_reembed");
  std::lock_guard<std::mutex> lock(impl_->db_mutex);
  SqliteDb& db = *impl_->db;
  // IMMEDIATE: no other writer can add an unstaged item between the check and the swap.
  SqliteTransaction txn(db, /*immediate=*/true);
  if (count_of(db, "items", kPendingItems) + count_of(db, "texts", kPendingTexts) > 0) return false;
  db.exec(R"sql(
    UPDATE items SET (size, mtime_ns, content_hash, width, height, status, error, vector, hub) =
      (SELECT size, mtime_ns, content_hash, width, height, status, error, vector, hub
       FROM staged_items AS s WHERE s.id = items.id)
    WHERE status != 'failed';
    UPDATE texts SET (vector, hub) =
      (SELECT vector, hub FROM staged_texts AS s WHERE s.id = texts.id);
    DELETE FROM faiss_files;)sql");
  set_meta(db, "model_fingerprint", impl_->staged_fingerprint);
  set_meta(db, "dim", static_cast<int64_t>(impl_->staged_dim));
  clear_staging(db);
  txn.commit();
  // This object now speaks for the new space: indexes of the old one must not answer its
  // queries; sync_indexes builds the new ones.
  std::unique_lock<std::shared_mutex> searches(impl_->search_mutex);
  for (LoadedIndex& loaded : impl_->loaded) loaded = LoadedIndex{};
  impl_->fingerprint = impl_->staged_fingerprint;
  impl_->dim = impl_->staged_dim;
  impl_->staged_fingerprint.clear();
  impl_->staged_dim = 0;
  return true;
}

}  // namespace mms
