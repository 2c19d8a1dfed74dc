// Fault injection for the index (issue 17): `mmsearch index` and `index --reembed` killed
// with SIGKILL at random moments and resumed; a full disk (a small tmpfs where this machine
// lets the test mount one, and always a file-size limit); a read-only index folder; FIFOs,
// devices and a growing file among the images. After every resume the catalog and the FAISS
// files agree, no file is lost or indexed twice, and the index answers searches; every fault
// ends in a clear error or a reason, never a hang.
//
// The kill delays come from a seeded generator; the seed is printed, and MMS_FAULT_SEED=N
// replays a run.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "encoders/embedder.h"
#include "index/collection.h"
#include "index/faiss_store.h"
#include "index/search.h"
#include "index_test_support.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using mms::testing::kProgram;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// ---- the program as a child process ------------------------------------------------------

struct ChildLimits {
  rlim_t file_size = RLIM_INFINITY;  // RLIMIT_FSIZE in bytes: writes past it fail (EFBIG)
  bool as_nobody = false;            // run as uid/gid 65534 (root ignores file modes)
};

struct Outcome {
  bool exited = false;  // ended by itself; false when the deadline passed and it was killed
  int code = -1;        // its exit code when it exited
  double seconds = 0;
  double work_seconds = 0;  // from the moment it opened the watched file (see run_until)
  std::string out;          // stdout
  std::string output;       // stdout and stderr
};

// Whether process `pid` has `file` open.
bool has_open(pid_t pid, const fs::path& file) {
  std::error_code ec;
  for (const auto& fd : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    if (fs::read_symlink(fd.path(), ec) == file) return true;
  }
  return false;
}

// Runs `mmsearch ARGS` with stdout in `log` and stderr in `log`.err, and SIGKILLs it once
// `kill_after_s` have passed: the random moment of a kill test, or the deadline that turns a
// hang into a failure instead of a stuck test. With `watch`, the time counts from when the
// program has that file open: start-up (loading LibTorch and the model) touches nothing, and
// on a busy machine it would take most kills.
Outcome run_until(const std::vector<std::string>& args, double kill_after_s, const fs::path& log,
                  const ChildLimits& limits = {}, const fs::path& watch = {}) {
  std::vector<std::string> argv_strings{kProgram};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string err_log = log.string() + ".err";
  const auto t0 = Clock::now();
  const pid_t pid = fork();
  if (pid == 0) {  // only async-signal-safe calls between fork and exec
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = open(err_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out >= 0) dup2(out, STDOUT_FILENO);
    if (err >= 0) dup2(err, STDERR_FILENO);
    if (limits.file_size != RLIM_INFINITY) {
      // Ignored, SIGXFSZ turns a write past the limit into an EFBIG error, as a full disk's
      // ENOSPC is: the program must report it, not die of it. The disposition survives exec.
      signal(SIGXFSZ, SIG_IGN);
      const rlimit limit{limits.file_size, limits.file_size};
      if (setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(125);
    }
    if (limits.as_nobody && (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 ||
                             setresuid(65534, 65534, 65534) != 0)) {
      _exit(126);
    }
    execv(kProgram.c_str(), argv.data());
    _exit(127);
  }
  Outcome o;
  int status = 0;
  std::optional<Clock::time_point> started;
  if (watch.empty()) started = t0;
  for (;;) {
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      o.exited = WIFEXITED(status);
      o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      break;
    }
    if (!started && has_open(pid, watch)) started = Clock::now();
    // Watched, a run that never opens the file still ends, two minutes later.
    if ((started && since(*started) >= kill_after_s) || since(t0) >= kill_after_s + 120) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      // It may have exited on its own in the same instant; that is not a kill.
      o.exited = WIFEXITED(status);
      o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  o.seconds = since(t0);
  o.work_seconds = started ? since(*started) : 0;
  o.out = file_bytes(log);
  o.output = o.out + file_bytes(err_log);
  return o;
}

// ---- the catalog as the files hold it ------------------------------------------------------

struct FaissRow {
  int64_t generation = -1, count = -1, size = -1;
  std::string model, hash;
};

struct CatalogItem {
  int64_t id = 0, size = 0, mtime_ns = 0;
  std::string path, status;
};

struct CatalogView {
  bool has_meta = false;
  std::string integrity, fingerprint;
  int64_t images_generation = -1, texts_generation = -1, staged_items = 0, ok_texts = 0;
  std::map<std::string, FaissRow> faiss;  // by target
  std::vector<CatalogItem> items;
};

// Reads catalog.sqlite with SQLite directly (read-only), not through the library under test.
CatalogView read_catalog(const fs::path& index) {
  CatalogView v;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2((index / "catalog.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) !=
      SQLITE_OK) {
    sqlite3_close(db);
    return v;
  }
  sqlite3_busy_timeout(db, 5000);
  auto each_row = [&](const char* sql, const std::function<void(sqlite3_stmt*)>& row) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK) {
      while (sqlite3_step(st) == SQLITE_ROW) row(st);
    }
    sqlite3_finalize(st);
  };
  auto text = [](sqlite3_stmt* st, int col) {
    const auto* t = sqlite3_column_text(st, col);
    return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
  };
  each_row("PRAGMA integrity_check", [&](sqlite3_stmt* st) { v.integrity += text(st, 0); });
  each_row("SELECT key, value FROM meta", [&](sqlite3_stmt* st) {
    v.has_meta = true;
    const std::string key = text(st, 0);
    if (key == "model_fingerprint") v.fingerprint = text(st, 1);
    if (key == "images_generation") v.images_generation = sqlite3_column_int64(st, 1);
    if (key == "texts_generation") v.texts_generation = sqlite3_column_int64(st, 1);
  });
  each_row("SELECT target, generation, count, model_fingerprint, size, hash FROM faiss_files",
           [&](sqlite3_stmt* st) {
             v.faiss[text(st, 0)] = {sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2),
                                     sqlite3_column_int64(st, 4), text(st, 3), text(st, 5)};
           });
  each_row("SELECT id, path, size, mtime_ns, status FROM items ORDER BY id", [&](sqlite3_stmt* st) {
    v.items.push_back({sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 2),
                       sqlite3_column_int64(st, 3), text(st, 1), text(st, 4)});
  });
  each_row("SELECT COUNT(*) FROM staged_items",
           [&](sqlite3_stmt* st) { v.staged_items = sqlite3_column_int64(st, 0); });
  each_row("SELECT COUNT(*) FROM texts WHERE vector IS NOT NULL",
           [&](sqlite3_stmt* st) { v.ok_texts = sqlite3_column_int64(st, 0); });
  sqlite3_close(db);
  return v;
}

int64_t mtime_ns(const fs::path& p) {
  struct stat st {};
  stat(p.c_str(), &st);
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// After a completed run: the catalog is sound and in `model`'s space, it holds each of `files`
// exactly once, as the file is now, and nothing else; each FAISS file is the one the catalog
// recorded for its current contents; and a search reaches every item, each once.
void expect_agreement(const fs::path& index, const mms::Embedder& model,
                      const std::set<std::string>& files) {
  const CatalogView v = read_catalog(index);
  ASSERT_TRUE(v.has_meta);
  EXPECT_EQ(v.integrity, "ok");
  EXPECT_EQ(v.fingerprint, model.fingerprint());
  EXPECT_EQ(v.staged_items, 0);
  std::set<std::string> paths;
  std::set<int64_t> ids;
  for (const CatalogItem& item : v.items) {
    EXPECT_TRUE(paths.insert(item.path).second) << "indexed twice: " << item.path;
    EXPECT_EQ(item.status, "ok") << item.path;
    ids.insert(item.id);
    if (!files.count(item.path)) continue;  // reported below as not among the files
    EXPECT_EQ(item.size, static_cast<int64_t>(fs::file_size(item.path))) << item.path;
    EXPECT_EQ(item.mtime_ns, mtime_ns(item.path)) << item.path;
  }
  EXPECT_EQ(paths, files);
  const int64_t count = static_cast<int64_t>(v.items.size());
  for (const auto& [target, generation, vectors] :
       {std::tuple{"images", v.images_generation, count},
        std::tuple{"texts", v.texts_generation, v.ok_texts}}) {
    SCOPED_TRACE(target);
    ASSERT_TRUE(v.faiss.count(target));
    const FaissRow& row = v.faiss.at(target);
    EXPECT_EQ(row.generation, generation) << "the FAISS file is of an older catalog";
    EXPECT_EQ(row.count, vectors);
    EXPECT_EQ(row.model, model.fingerprint());
    const auto stamp = mms::stamp_faiss_file((index / (std::string(target) + ".faiss")).string());
    ASSERT_TRUE(stamp.has_value());
    EXPECT_EQ(stamp->size, row.size);
    EXPECT_EQ(stamp->hash, row.hash);
  }
  // The files verified, so this loads them as they are.
  auto c = mms::Collection::open_for_search(index.string(), model.fingerprint());
  EXPECT_EQ(c->index_info(mms::Collection::Target::kImages).vectors, count);
  if (count == 0) return;
  const std::vector<float> query =
      *c->stored_vector(mms::Collection::Target::kImages, *ids.begin());
  const auto hits =
      c->search(mms::Collection::Target::kImages, query.data(), 1, static_cast<int32_t>(count));
  std::set<int64_t> found;
  for (const mms::SearchHit& h : hits.at(0)) found.insert(h.id);
  EXPECT_EQ(hits.at(0).size(), static_cast<size_t>(count));
  EXPECT_EQ(found, ids);
}

// After a kill: the catalog is sound, and a searcher with the model it answers for finds every
// searchable item (rebuilding FAISS files that the killed run left stale, as serve would).
void expect_searchable_after_kill(const fs::path& index, const mms::Embedder& model) {
  const CatalogView v = read_catalog(index);
  if (!v.has_meta) return;  // killed before the catalog's first transaction: nothing to search
  EXPECT_EQ(v.integrity, "ok");
  auto c = mms::Collection::open_for_search(index.string(), model.fingerprint());
  int64_t ok = 0;
  for (const CatalogItem& item : v.items) ok += item.status == "ok";
  EXPECT_EQ(c->index_info(mms::Collection::Target::kImages).vectors, ok);
}

uint64_t fault_seed() {
  const char* given = std::getenv("MMS_FAULT_SEED");
  const uint64_t seed = given ? std::strtoull(given, nullptr, 10) : std::random_device{}();
  std::printf("kill delays: seed %llu (replay with MMS_FAULT_SEED=%llu)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

// Search results of the CLI as (id, score) lines, for comparing two runs.
std::string hits_of(const std::string& json_text) {
  std::ostringstream out;
  for (const auto& r : nlohmann::json::parse(json_text).at("results")) {
    out << r.at("id").get<int64_t>() << " " << r.at("score").get<double>() << "\n";
  }
  return out.str();
}

class IndexFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mms_index_fault_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "photos");
    // Readable by everyone: the read-only test runs the program as nobody when it is root.
    fs::permissions(dir_, fs::perms::all & ~fs::perms::others_write & ~fs::perms::group_write);
    mms::testing::make_tiny_model(dir_ / "model");
    model_ = mms::Embedder::load((dir_ / "model").string());
  }
  void TearDown() override {
    std::error_code ec;
    // The read-only test may leave folders without write permission.
    for (const auto& e : fs::recursive_directory_iterator(dir_, ec)) {
      if (e.is_directory(ec))
        fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add, ec);
    }
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }

  fs::path index() const { return dir_ / "index"; }
  // Writes image number `variant` (each a different picture and size) into photos/.
  std::string add_image(int variant, const std::string& name) {
    const fs::path p = dir_ / "photos" / name;
    mms::testing::write_test_jpeg(p, variant, 32 + variant % 23, 24 + variant % 17);
    return p.string();
  }
  std::set<std::string> add_images(int first, int count) {
    std::set<std::string> files;
    for (int i = first; i < first + count; ++i) {
      files.insert(add_image(i, "img" + std::to_string(i) + ".jpg"));
    }
    return files;
  }
  std::vector<std::string> index_args(const fs::path& model, bool reembed) const {
    std::vector<std::string> a{"index",     "--index", index().string(), "--model", model.string(),
                               "--threads", "1",       "--batch-size",   "8"};
    if (reembed) {
      a.push_back("--reembed");
    } else {
      a.insert(a.end(), {"--prune", (dir_ / "photos").string()});
    }
    return a;
  }
  std::vector<std::string> search_args(const std::string& text) const {
    return {"search",    "--index", index().string(), "--model", (dir_ / "model").string(),
            "--threads", "1",       "--text",         text,      "-k",
            "20",        "--json"};
  }

  fs::path dir_;
  std::unique_ptr<mms::Embedder> model_;
};

// ---- kills -----------------------------------------------------------------------------------

// Where a killed run was: how far the catalog and its FAISS records got.
std::string index_phase(const CatalogView& v, const std::set<std::string>& files, size_t changed) {
  if (!v.has_meta) return "before the catalog existed";
  size_t current = 0;  // rows that describe their file as it is now
  for (const CatalogItem& item : v.items) {
    current += files.count(item.path) && item.status == "ok" &&
               item.size == static_cast<int64_t>(fs::file_size(item.path)) &&
               item.mtime_ns == mtime_ns(item.path);
  }
  const size_t done = current - std::min(current, files.size() - changed);
  const auto row = v.faiss.find("images");
  const bool faiss_current = row != v.faiss.end() && row->second.generation == v.images_generation;
  if (done == 0) return "before its first commit";
  if (done < changed) return "between commits";
  return faiss_current ? "after its FAISS files" : "after its last commit, before its FAISS files";
}

void print_tally(const std::map<std::string, int>& tally) {
  std::printf("kills by phase:");
  for (const auto& [phase, n] : tally) std::printf(" %d %s;", n, phase.c_str());
  std::printf("\n");
}

// 20 SIGKILLs at random moments of `mmsearch index --prune` over a folder of a few hundred
// images that changes between rounds (64 images rewritten, 8 added, 8 deleted), each
// followed by a run to completion. The delays span a run's work, from the moment it opens
// the catalog to its end.
TEST_F(IndexFaultTest, TwentyKillsDuringIndexLoseNothingOnceResumed) {
  std::mt19937_64 rng(fault_seed());
  std::set<std::string> files = add_images(0, 300);
  int next = 300;
  const fs::path log = dir_ / "run.log";
  const fs::path catalog = index() / "catalog.sqlite";
  // The delays span 90% of a run's work (from opening the catalog to its end), learnt from
  // the last run that finished first: on a fast machine a run's work is a tenth of a second.
  double longest_s = 1.0;
  int kills = 0, round = 0;
  std::map<std::string, int> tally;
  for (; kills < 20 && round < 80; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    size_t changed = files.size();
    if (round > 0) {
      std::vector<std::string> pick(files.begin(), files.end());
      std::shuffle(pick.begin(), pick.end(), rng);
      for (int i = 0; i < 64; ++i) add_image(next++, fs::path(pick[i]).filename().string());
      for (int i = 64; i < 72; ++i) {
        fs::remove(pick[i]);
        files.erase(pick[i]);
      }
      for (int i = 0; i < 8; ++i, ++next) {
        files.insert(add_image(next, "img" + std::to_string(next) + ".jpg"));
      }
      changed = 72;
    }
    const double delay = std::uniform_real_distribution<double>(0.0, 0.9 * longest_s)(rng);
    const Outcome killed = run_until(index_args(dir_ / "model", false), delay, log, {}, catalog);
    std::string phase = "finished first";
    if (killed.exited) {
      ASSERT_EQ(killed.code, 0) << killed.output;
      longest_s = std::max(0.02, killed.work_seconds);
    } else {
      ++kills;
      phase = index_phase(read_catalog(index()), files, changed);
      ++tally[phase];
      ASSERT_NO_FATAL_FAILURE(expect_searchable_after_kill(index(), *model_));
    }
    const Outcome resumed = run_until(index_args(dir_ / "model", false), 120, log);
    ASSERT_TRUE(resumed.exited) << "the resumed run did not finish in 120 s";
    ASSERT_EQ(resumed.code, 0) << resumed.output;
    std::printf("round %2d: %s %.2f s into its work (%s); resumed in %.2f s\n", round,
                killed.exited ? "finished" : "killed", killed.work_seconds, phase.c_str(),
                resumed.seconds);
    ASSERT_NO_FATAL_FAILURE(expect_agreement(index(), *model_, files));
    if (HasFailure()) return;
  }
  print_tally(tally);
  EXPECT_EQ(kills, 20) << "too many runs finished before their kill in " << round << " rounds";
}

// 10 SIGKILLs at random moments of `index --reembed`, moving the index back and forth between
// two models: while half-way, the old model answers every search and the new one is refused;
// each resume completes the move.
TEST_F(IndexFaultTest, TenKillsDuringReembedLoseNothingOnceResumed) {
  std::mt19937_64 rng(fault_seed());
  const std::set<std::string> files = add_images(0, 300);
  mms::testing::make_tiny_model(dir_ / "other", /*seed=*/2);
  const std::unique_ptr<mms::Embedder> other = mms::Embedder::load((dir_ / "other").string());
  const fs::path log = dir_ / "run.log";
  const Outcome first = run_until(index_args(dir_ / "model", false), 120, log);
  ASSERT_EQ(first.code, 0) << first.output;
  ASSERT_NO_FATAL_FAILURE(expect_agreement(index(), *model_, files));

  const mms::Embedder* live = model_.get();
  const fs::path catalog = index() / "catalog.sqlite";
  double longest_s = 1.0;  // as above: the delays span a run's work
  int kills = 0, round = 0;
  std::map<std::string, int> tally;
  for (; kills < 10 && round < 50; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const mms::Embedder* next = live == model_.get() ? other.get() : model_.get();
    const fs::path next_dir = dir_ / (next == model_.get() ? "model" : "other");
    const double delay = std::uniform_real_distribution<double>(0.0, 0.9 * longest_s)(rng);
    const Outcome killed = run_until(index_args(next_dir, true), delay, log, {}, catalog);
    std::string phase = "finished first";
    if (killed.exited) {
      ASSERT_EQ(killed.code, 0) << killed.output;
      longest_s = std::max(0.02, killed.work_seconds);
    } else {
      ++kills;
      const CatalogView v = read_catalog(index());
      EXPECT_EQ(v.integrity, "ok");
      // Killed after its swap committed, the catalog is in the new space already.
      const bool swapped = v.fingerprint == next->fingerprint();
      const auto row = v.faiss.find("images");
      phase = !swapped ? (v.staged_items > 0 ? "while staging" : "before staging")
              : row != v.faiss.end() && row->second.model == next->fingerprint()
                  ? "after its FAISS files"
                  : "after the swap, before its FAISS files";
      ++tally[phase];
      const mms::Embedder* answering = swapped ? next : live;
      const mms::Embedder* refused = swapped ? live : next;
      ASSERT_NO_FATAL_FAILURE(expect_searchable_after_kill(index(), *answering));
      auto c = mms::Collection::open_for_search(index().string(), answering->fingerprint());
      EXPECT_EQ(c->item_count(mms::ItemStatus::kOk), 300);
      EXPECT_THROW(mms::Collection::open_for_search(index().string(), refused->fingerprint()),
                   mms::Error);
      if (v.staged_items > 0) phase += " (" + std::to_string(v.staged_items) + " staged)";
    }
    const Outcome resumed = run_until(index_args(next_dir, true), 120, log);
    ASSERT_TRUE(resumed.exited) << "the resumed re-embed did not finish in 120 s";
    ASSERT_EQ(resumed.code, 0) << resumed.output;
    std::printf("round %2d: %s %.2f s into its work (%s); resumed in %.2f s\n", round,
                killed.exited ? "finished" : "killed", killed.work_seconds, phase.c_str(),
                resumed.seconds);
    live = next;
    ASSERT_NO_FATAL_FAILURE(expect_agreement(index(), *live, files));
    if (HasFailure()) return;
  }
  print_tally(tally);
  EXPECT_EQ(kills, 10) << "too many re-embeds finished before their kill in " << round << " rounds";
}

// The narrowest window of a re-embed, which random kills rarely hit: killed after the swap
// committed and before the FAISS files of the new space were written. The resumed run (with
// nothing left to re-embed) must still write them.
TEST_F(IndexFaultTest, AReembedKilledAfterItsSwapWritesTheFaissFilesWhenResumed) {
  const std::set<std::string> files = add_images(0, 40);
  mms::testing::make_tiny_model(dir_ / "other", /*seed=*/2);
  const std::unique_ptr<mms::Embedder> other = mms::Embedder::load((dir_ / "other").string());
  const fs::path log = dir_ / "run.log";
  ASSERT_EQ(run_until(index_args(dir_ / "model", false), 120, log).code, 0);
  // The state such a kill leaves: the catalog in the new space, and the old space's FAISS
  // files with their records. Made by a complete re-embed with the old files and records put
  // back.
  auto sql = [&](const char* statements) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((index() / "catalog.sqlite").c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, statements, nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  };
  fs::create_directories(dir_ / "old");
  for (const char* f : {"images.faiss", "texts.faiss"})
    fs::copy_file(index() / f, dir_ / "old" / f);
  sql("CREATE TABLE saved_faiss_files AS SELECT * FROM faiss_files");
  ASSERT_EQ(run_until(index_args(dir_ / "other", true), 120, log).code, 0);
  for (const char* f : {"images.faiss", "texts.faiss"}) {
    fs::copy_file(dir_ / "old" / f, index() / f, fs::copy_options::overwrite_existing);
  }
  sql("DELETE FROM faiss_files; INSERT INTO faiss_files SELECT * FROM saved_faiss_files; "
      "DROP TABLE saved_faiss_files");
  const CatalogView killed = read_catalog(index());
  ASSERT_EQ(killed.fingerprint, other->fingerprint());
  ASSERT_EQ(killed.faiss.at("images").model, model_->fingerprint());

  const Outcome resumed = run_until(index_args(dir_ / "other", true), 120, log);
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  expect_agreement(index(), *other, files);
}

// ---- a full disk -------------------------------------------------------------------------------

// A file-size limit (RLIMIT_FSIZE) makes every write past 4 KiB fail with EFBIG, as a full
// disk fails them with ENOSPC; it works for any user on any machine. The run fails with an
// error that names the cause, the catalog is unchanged, searches under the same limit answer
// as before, and once the limit is gone a run finishes the job.
TEST_F(IndexFaultTest, AFileSizeLimitFailsTheRunClearlyAndKeepsTheCatalogSearchable) {
  std::set<std::string> files = add_images(0, 40);
  const fs::path log = dir_ / "run.log";
  ASSERT_EQ(run_until(index_args(dir_ / "model", false), 120, log).code, 0);
  const Outcome before = run_until(search_args("a red circle"), 60, dir_ / "search.json");
  ASSERT_EQ(before.code, 0) << before.output;
  const std::string catalog_before = file_bytes(index() / "catalog.sqlite");
  const CatalogView view_before = read_catalog(index());

  const std::set<std::string> more = add_images(40, 20);
  ChildLimits full;
  full.file_size = 4096;
  const Outcome failed = run_until(index_args(dir_ / "model", false), 60, log, full);
  ASSERT_TRUE(failed.exited) << "the run hung on a full disk";
  EXPECT_EQ(failed.code, 1) << failed.output;
  EXPECT_NE(failed.output.find("File too large"), std::string::npos) << failed.output;
  EXPECT_NE(failed.output.find("catalog.sqlite"), std::string::npos) << failed.output;

  EXPECT_EQ(file_bytes(index() / "catalog.sqlite"), catalog_before);
  const Outcome during = run_until(search_args("a red circle"), 60, dir_ / "search.json", full);
  ASSERT_EQ(during.code, 0) << during.output;
  EXPECT_EQ(hits_of(during.out), hits_of(before.out));
  const CatalogView view_after = read_catalog(index());
  ASSERT_EQ(view_after.items.size(), view_before.items.size());
  for (size_t i = 0; i < view_after.items.size(); ++i) {
    EXPECT_EQ(view_after.items[i].path, view_before.items[i].path);
    EXPECT_EQ(view_after.items[i].id, view_before.items[i].id);
  }

  const Outcome again = run_until(index_args(dir_ / "model", false), 120, log);
  ASSERT_EQ(again.code, 0) << again.output;
  files.insert(more.begin(), more.end());
  expect_agreement(index(), *model_, files);
}

// A real full disk: the index folder on a 2 MiB tmpfs, filled up. Mounting needs root or an
// unprivileged user namespace (`unshare -r`); where neither is allowed the test is skipped
// and the file-size limit above stands in. The tmpfs lives only inside the unshare'd shell,
// so the steps run there and leave their outputs beside it.
TEST_F(IndexFaultTest, AFullTmpfsFailsTheRunClearlyAndKeepsTheCatalogSearchable) {
  const std::string unshare = geteuid() == 0 ? "unshare -m" : "unshare -r -m";
  if (mms::testing::run_command(unshare + " sh -c 'mount -t tmpfs -o size=64k tmpfs " +
                                dir_.string() + "/photos' 2>&1")
          .first != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (`" << unshare
                 << "` refused): the file-size limit test covers a full disk";
  }
  add_images(0, 30);
  fs::create_directories(dir_ / "more");
  for (int i = 30; i < 50; ++i) {
    mms::testing::write_test_jpeg(dir_ / "more" / ("img" + std::to_string(i) + ".jpg"), i);
  }
  const std::string m = kProgram, idx = index().string(), out = dir_.string(),
                    common = " --index " + idx + " --model " + out + "/model --threads 1";
  const std::string search = m + " search" + common + " --text 'a red circle' -k 20 --json";
  const std::string script =
      "set -u; mkdir -p " + idx + " && mount -t tmpfs -o size=2m tmpfs " + idx + " || exit 90\n" +
      m + " index" + common + " " + out + "/photos > " + out + "/first.txt 2>&1 || exit 91\n" +
      search + " > " + out + "/before.json 2>&1 || exit 92\n" + "cp " + idx + "/catalog.sqlite " +
      out + "/catalog_before\n" + "dd if=/dev/zero of=" + idx +
      "/filler bs=4k 2>/dev/null; sync\n" + m + " index" + common + " " + out + "/photos " + out +
      "/more > " + out + "/full.txt 2>&1; echo $? > " + out + "/full_code\n" + search + " > " +
      out + "/during.json 2> " + out + "/during.err; echo $? > " + out + "/during_code\n" + "cp " +
      idx + "/catalog.sqlite " + out + "/catalog_after\n" + "rm " + idx + "/filler\n" + m +
      " index" + common + " " + out + "/photos " + out + "/more > " + out +
      "/again.txt 2>&1; echo $? > " + out + "/again_code\n" + m + " search" + common +
      " --text 'a red circle' -k 100 --json > " + out + "/final.json\n";
  std::ofstream(dir_ / "full_disk.sh") << script;
  const auto [code, output] =
      mms::testing::run_command("timeout 300 " + unshare + " sh " + out + "/full_disk.sh 2>&1");
  ASSERT_EQ(code, 0) << output << file_bytes(dir_ / "first.txt");

  EXPECT_EQ(file_bytes(dir_ / "full_code"), "1\n") << file_bytes(dir_ / "full.txt");
  EXPECT_NE(file_bytes(dir_ / "full.txt").find("No space left on device"), std::string::npos)
      << file_bytes(dir_ / "full.txt");
  EXPECT_EQ(file_bytes(dir_ / "catalog_after"), file_bytes(dir_ / "catalog_before"));
  EXPECT_EQ(file_bytes(dir_ / "during_code"), "0\n") << file_bytes(dir_ / "during.err");
  EXPECT_EQ(hits_of(file_bytes(dir_ / "during.json")), hits_of(file_bytes(dir_ / "before.json")));
  EXPECT_EQ(file_bytes(dir_ / "again_code"), "0\n") << file_bytes(dir_ / "again.txt");
  EXPECT_EQ(nlohmann::json::parse(file_bytes(dir_ / "final.json")).at("results").size(), 50u);
}

// ---- a read-only index folder ----------------------------------------------------------------

// An index folder made read-only (chmod -R a-w): writers are refused with a message naming the
// folder's lock and the cause, nothing in it changes, and searches still answer as before.
// Root ignores file modes, so as root the program runs as nobody.
TEST_F(IndexFaultTest, AReadOnlyIndexFolderRefusesWritersAndStillAnswers) {
  add_images(0, 40);
  const fs::path log = dir_ / "run.log";
  ASSERT_EQ(run_until(index_args(dir_ / "model", false), 120, log).code, 0);
  const Outcome before = run_until(search_args("a red circle"), 60, dir_ / "search.json");
  ASSERT_EQ(before.code, 0) << before.output;
  ChildLimits user;
  user.as_nobody = geteuid() == 0;
  if (user.as_nobody && run_until({"--help"}, 30, log, user).code == 126) {
    GTEST_SKIP() << "running as root and cannot switch to uid 65534, and root ignores modes";
  }
  std::map<std::string, std::string> contents;
  for (const auto& e : fs::directory_iterator(index())) {
    contents[e.path().filename().string()] = file_bytes(e.path());
  }
  for (const auto& e : fs::directory_iterator(index())) {
    fs::permissions(e.path(), fs::perms::all & ~fs::perms::owner_write & ~fs::perms::group_write &
                                  ~fs::perms::others_write);
  }
  fs::permissions(index(), fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                               fs::perms::group_exec | fs::perms::others_read |
                               fs::perms::others_exec);

  add_images(40, 10);
  const Outcome refused = run_until(index_args(dir_ / "model", false), 60, log, user);
  ASSERT_TRUE(refused.exited) << "the run hung on a read-only folder";
  EXPECT_EQ(refused.code, 1) << refused.output;
  EXPECT_NE(refused.output.find("write.lock"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("Permission denied"), std::string::npos) << refused.output;
  std::ofstream(dir_ / "texts.txt") << "a red circle\n";
  const Outcome texts = run_until({"add-texts", "--index", index().string(), "--model",
                                   (dir_ / "model").string(), (dir_ / "texts.txt").string()},
                                  60, log, user);
  EXPECT_EQ(texts.code, 1) << texts.output;

  const Outcome during = run_until(search_args("a red circle"), 60, dir_ / "search.json", user);
  ASSERT_EQ(during.code, 0) << during.output;
  EXPECT_EQ(hits_of(during.out), hits_of(before.out));
  std::map<std::string, std::string> after;
  for (const auto& e : fs::directory_iterator(index())) {
    after[e.path().filename().string()] = file_bytes(e.path());
  }
  EXPECT_TRUE(after == contents) << "the read-only folder changed";
}

// ---- what is not an image file ---------------------------------------------------------------

// A FIFO (which would block a plain open for ever), links to /dev/zero and /dev/urandom
// (endless when read) and a file another thread keeps appending to, among images: the run ends
// on time, names each of the first three as skipped with its reason, reads the growing one
// only up to its size when opened, and indexes the images.
TEST_F(IndexFaultTest, FifosDevicesAndGrowingFilesAreSkippedWithAReasonNeverAHang) {
  const std::set<std::string> images = add_images(0, 6);
  const fs::path photos = dir_ / "photos";
  ASSERT_EQ(mkfifo((photos / "pipe.jpg").c_str(), 0644), 0);
  fs::create_symlink("/dev/zero", photos / "zero.jpg");
  fs::create_symlink("/dev/urandom", photos / "random.jpg");
  const fs::path growing = photos / "growing.jpg";
  mms::testing::write_test_jpeg(growing, 99);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::ofstream out(growing, std::ios::binary | std::ios::app);
    const std::string chunk(4096, 'x');
    for (int i = 0; !stop && i < 16384; ++i) {  // at most 64 MiB
      out.write(chunk.data(), chunk.size());
      out.flush();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  std::vector<std::string> args = index_args(dir_ / "model", false);
  args.push_back("--follow-links");  // or the links are left out without being looked at
  const Outcome run = run_until(args, 60, dir_ / "run.log");
  stop = true;
  writer.join();
  ASSERT_TRUE(run.exited) << "the run hung: " << run.output;
  ASSERT_EQ(run.code, 0) << run.output;
  for (const auto& [name, why] :
       {std::pair{"pipe.jpg", "not a regular file (a FIFO)"},
        std::pair{"zero.jpg", "not a regular file (a character device)"},
        std::pair{"random.jpg", "not a regular file (a character device)"}}) {
    EXPECT_NE(run.output.find("skipped: " + (photos / name).string() + ": " + why),
              std::string::npos)
        << run.output;
  }
  EXPECT_NE(run.output.find("3 skipped"), std::string::npos) << run.output;

  auto c = mms::Collection::open_for_search(index().string(), model_->fingerprint());
  for (const std::string& image : images) EXPECT_TRUE(c->find_item_by_path(image)) << image;
  for (const char* name : {"pipe.jpg", "zero.jpg", "random.jpg"}) {
    EXPECT_FALSE(c->find_item_by_path((photos / name).string())) << name;
  }
  // Caught growing between the walk and the read, the file is failed with why; read between
  // two appends, it is a consistent snapshot (its row names the size it had then, so the next
  // run reads it again). Either way it cost at most the bytes it had when opened.
  const auto grown = c->find_item_by_path(growing.string());
  ASSERT_TRUE(grown.has_value());
  if (grown->status == mms::ItemStatus::kFailed) {
    EXPECT_FALSE(grown->error.empty());
  } else {
    EXPECT_EQ(grown->status, mms::ItemStatus::kOk);
    EXPECT_LE(grown->size, static_cast<int64_t>(fs::file_size(growing)));
  }
  // The six images, and the growing file when it was read as a snapshot.
  EXPECT_EQ(c->item_count(mms::ItemStatus::kOk),
            6 + (grown->status == mms::ItemStatus::kOk ? 1 : 0));

  // Named on the command line, a FIFO is skipped as well, not waited on.
  const Outcome named = run_until({"index", "--index", index().string(), "--model",
                                   (dir_ / "model").string(), (photos / "pipe.jpg").string()},
                                  60, dir_ / "run.log");
  ASSERT_TRUE(named.exited) << "the run hung on a FIFO named on the command line";
  EXPECT_EQ(named.code, 0) << named.output;
  EXPECT_NE(named.output.find("skipped: " + (photos / "pipe.jpg").string()), std::string::npos)
      << named.output;
}

}  // namespace
