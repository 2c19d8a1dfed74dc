#include "index/sqlite_db.h"

#include <sqlite3.h>

#include <cctype>
#include <cstring>
#include <filesystem>

#include "common/error.h"

namespace mms {
namespace {

// Maps a SQLite result code to the kind of failure it means for our callers.
Error sqlite_error(int rc, const std::string& message) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return Error::unavailable(message);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return Error::corrupt(message);
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_PERM: return Error::io(message);
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG: return Error::invalid_argument(message);
    default: return Error::internal(message);
  }
}

// For failures of the file system, the OS's own words: SQLite says "disk I/O error" alike for a
// full disk, a file-size limit and a failing drive, and only errno tells them apart.
std::string os_reason(sqlite3* db, int rc) {
  switch (rc & 0xff) {
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY: break;
    default: return {};
  }
  const int err = db ? sqlite3_system_errno(db) : 0;
  return err ? std::string(" (") + std::strerror(err) + ")" : std::string();
}

// "file:PATH?immutable=1" with PATH percent-encoded, as SQLite's URI filenames want.
std::string immutable_uri(const std::string& path) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string uri = "file:";
  for (const unsigned char c : std::filesystem::absolute(path).string()) {
    if (std::isalnum(c) || c == '/' || c == '.' || c == '-' || c == '_' || c == '~') {
      uri += static_cast<char>(c);
    } else {
      uri += '%';
      uri += kHex[c >> 4];
      uri += kHex[c & 15];
    }
  }
  return uri + "?immutable=1";
}

}  // namespace

SqliteDb::SqliteDb(const std::string& path, bool create, int32_t busy_timeout_ms, bool snapshot)
    : path_(path) {
  const int flags = snapshot ? SQLITE_OPEN_READONLY | SQLITE_OPEN_URI
                             : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
  const int rc =
      sqlite3_open_v2(snapshot ? immutable_uri(path).c_str() : path.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    const std::string reason =
        (db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc)) + os_reason(db_, rc);
    sqlite3_close(db_);
    db_ = nullptr;
    throw sqlite_error(rc, "cannot open catalog '" + path + "': " + reason);
  }
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, busy_timeout_ms);
}

SqliteDb::~SqliteDb() {
  sqlite3_close_v2(db_);
}

void SqliteDb::exec(const std::string& sql) {
  char* message = nullptr;
  const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message);
  if (rc != SQLITE_OK) {
    const std::string reason = (message ? message : sqlite3_errstr(rc)) + os_reason(db_, rc);
    sqlite3_free(message);
    throw sqlite_error(rc, "catalog '" + path_ + "': " + reason);
  }
}

void SqliteDb::fail(int rc, const std::string& what) const {
  throw sqlite_error(
      rc, "catalog '" + path_ + "': " + what + ": " + sqlite3_errmsg(db_) + os_reason(db_, rc));
}

int64_t SqliteDb::changes() const {
  return sqlite3_changes64(db_);
}

SqliteStatement::SqliteStatement(const SqliteDb& db, const std::string& sql) : db_(db) {
  const int rc = sqlite3_prepare_v2(db.handle(), sql.c_str(), -1, &stmt_, nullptr);
  if (rc != SQLITE_OK) db.fail(rc, "cannot prepare a statement");
}

SqliteStatement::~SqliteStatement() {
  sqlite3_finalize(stmt_);
}

SqliteStatement& SqliteStatement::bind(int index, int64_t value) {
  const int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK) db_.fail(rc, "cannot bind a value");
  return *this;
}

SqliteStatement& SqliteStatement::bind_double(int index, double value) {
  const int rc = sqlite3_bind_double(stmt_, index, value);
  if (rc != SQLITE_OK) db_.fail(rc, "cannot bind a value");
  return *this;
}

SqliteStatement& SqliteStatement::bind(int index, const std::string& value) {
  const int rc =
      sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK) db_.fail(rc, "cannot bind a value");
  return *this;
}

SqliteStatement& SqliteStatement::bind_blob(int index, const void* data, size_t size) {
  const int rc = sqlite3_bind_blob64(stmt_, index, data, size, SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) db_.fail(rc, "cannot bind a value");
  return *this;
}

SqliteStatement& SqliteStatement::bind_null(int index) {
  const int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK) db_.fail(rc, "cannot bind a value");
  return *this;
}

bool SqliteStatement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  db_.fail(rc, "statement failed");
}

void SqliteStatement::run() {
  while (step()) {
  }
}

void SqliteStatement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

bool SqliteStatement::is_null(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

int64_t SqliteStatement::column_int64(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

double SqliteStatement::column_double(int column) const {
  return sqlite3_column_double(stmt_, column);
}

std::string SqliteStatement::column_text(int column) const {
  const auto* text = sqlite3_column_text(stmt_, column);
  if (!text) return {};
  return std::string(reinterpret_cast<const char*>(text), sqlite3_column_bytes(stmt_, column));
}

const void* SqliteStatement::column_blob(int column, size_t* size) const {
  const void* data = sqlite3_column_blob(stmt_, column);
  *size = data ? static_cast<size_t>(sqlite3_column_bytes(stmt_, column)) : 0;
  return data;
}

SqliteTransaction::SqliteTransaction(SqliteDb& db, bool immediate) : db_(db) {
  db_.exec(immediate ? "BEGIN IMMEDIATE" : "BEGIN");
}

SqliteTransaction::~SqliteTransaction() {
  if (!done_) sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void SqliteTransaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace mms
