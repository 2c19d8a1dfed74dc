// A thin RAII layer over the SQLite C API for the catalog: a connection, prepared statements
// and transactions, with every SQLite failure turned into an mms::Error naming the database
// file. Internal to index/: SQLite types appear only as forward declarations.
// Not thread-safe: the owner serializes all use of one SqliteDb and its statements.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace mms {

class SqliteDb {
 public:
  // Opens `path`. create: make the file when missing (else Error::not_found). Sets a busy
  // timeout of `busy_timeout_ms`, so a second writer waits rather than failing at once.
  // snapshot: read-only and immutable (SQLite neither locks nor looks at -wal / -shm files),
  // for a catalog in a folder where those files cannot be made; only correct while nothing
  // writes the file and no committed transaction waits in its -wal.
  SqliteDb(const std::string& path, bool create, int32_t busy_timeout_ms, bool snapshot = false);
  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // Runs one or more statements that return no rows the caller needs.
  void exec(const std::string& sql);
  // Throws the Error that SQLite result code `rc` stands for, with `what` as context.
  [[noreturn]] void fail(int rc, const std::string& what) const;
  // Rows changed by the last INSERT, UPDATE or DELETE.
  int64_t changes() const;

  sqlite3* handle() const { return db_; }
  const std::string& path() const { return path_; }

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

// One prepared statement. Bind indexes start at 1, column indexes at 0.
class SqliteStatement {
 public:
  SqliteStatement(const SqliteDb& db, const std::string& sql);
  ~SqliteStatement();
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  SqliteStatement& bind(int index, int64_t value);
  SqliteStatement& bind(int index, const std::string& value);
  SqliteStatement& bind_blob(int index, const void* data, size_t size);
  SqliteStatement& bind_null(int index);
  SqliteStatement& bind_double(int index, double value);

  // Advances to the next row: true when there is one, false when done.
  bool step();
  // Runs a statement that returns no rows (or ignores them).
  void run();
  // Makes the statement ready to run again with new bindings.
  void reset();

  bool is_null(int column) const;
  int64_t column_int64(int column) const;
  double column_double(int column) const;  // 0 for NULL
  std::string column_text(int column) const;
  // The bytes of a BLOB column (empty for NULL); valid until the next step or reset.
  const void* column_blob(int column, size_t* size) const;

 private:
  const SqliteDb& db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN on construction, ROLLBACK on destruction unless commit() ran. `immediate` takes the
// write lock up front (BEGIN IMMEDIATE), so a writer never fails half-way on a lock upgrade;
// read transactions use a deferred BEGIN and see one consistent snapshot (WAL).
class SqliteTransaction {
 public:
  SqliteTransaction(SqliteDb& db, bool immediate);
  ~SqliteTransaction();
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;

  void commit();

 private:
  SqliteDb& db_;
  bool done_ = false;
};

}  // namespace mms
