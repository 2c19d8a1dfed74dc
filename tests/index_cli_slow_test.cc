// `mmsearch index` and `mmsearch search` as a user runs them: a run killed with SIGKILL in
// the middle loses nothing once re-run, the CLI's results equal the library's, an index
// refuses a model other than the one that built it, and `--reembed` moves it to another
// model while the old one keeps answering until the swap.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/error.h"
#include "encoders/embedder.h"
#include "index/collection.h"
#include "index/search.h"
#include "index_test_support.h"

namespace {

namespace fs = std::filesystem;

using mms::testing::kProgram;
// Runs the program with `args`; returns {exit code, stdout}.
std::pair<int, std::string> run(const std::string& args) {
  return mms::testing::run_program(args);
}

class IndexCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mms_index_cli_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "photos");
    mms::testing::make_tiny_model(dir_ / "model");
    for (int i = 0; i < kImages; ++i) {
      mms::testing::write_test_jpeg(dir_ / "photos" / ("img" + std::to_string(i) + ".jpg"), i + 1);
    }
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string common() const {
    return "--index " + (dir_ / "index").string() + " --model " + (dir_ / "model").string() +
           " --threads 1";
  }

  static constexpr int kImages = 240;
  fs::path dir_;
};

TEST_F(IndexCliTest, AKilledRunLosesNothingOnceRunAgain) {
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string index = (dir_ / "index").string(), model = (dir_ / "model").string(),
                      photos = (dir_ / "photos").string();
    freopen("/dev/null", "w", stderr);
    freopen("/dev/null", "w", stdout);
    execl(kProgram.c_str(), kProgram.c_str(), "index", "--index", index.c_str(), "--model",
          model.c_str(), "--threads", "1", "--batch-size", "8", photos.c_str(), nullptr);
    _exit(127);
  }
  // Kill as soon as some batches are committed, while others are still in flight.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int64_t committed = 0;
  while (std::chrono::steady_clock::now() < deadline && committed < 16) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (!fs::exists(dir_ / "index/catalog.sqlite")) continue;
    try {
      auto c = mms::Collection::open_for_search(
          (dir_ / "index").string(), mms::Embedder::load((dir_ / "model").string())->fingerprint());
      committed = c->item_count();
    } catch (const mms::Error&) {
    }
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  ASSERT_GE(committed, 8);

  const auto [code, out] = run("index " + common() + " " + (dir_ / "photos").string());
  ASSERT_EQ(code, 0) << out;
  auto embedder = mms::Embedder::load((dir_ / "model").string());
  auto c = mms::Collection::open_for_search((dir_ / "index").string(), embedder->fingerprint());
  EXPECT_EQ(c->item_count(), kImages);
  EXPECT_EQ(c->item_count(mms::ItemStatus::kOk), kImages);
  std::set<std::string> paths;
  for (const auto& item : c->list_items(0, 100000)) paths.insert(item.path);
  EXPECT_EQ(paths.size(), static_cast<size_t>(kImages));
  // Every image is searchable: each finds itself.
  const std::string probe = (dir_ / "photos/img7.jpg").string();
  const auto hits = mms::search_collection(*c, mms::embed_image_query(*embedder, probe),
                                           mms::SearchTarget::kImages, 1);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].path, probe);
}

TEST_F(IndexCliTest, SearchResultsAreTheSameFromTheCliAndTheLibrary) {
  ASSERT_EQ(run("index " + common() + " " + (dir_ / "photos").string()).first, 0);
  const auto [code, out] = run("search " + common() + " --text \"a red circle\" -k 5 --json");
  ASSERT_EQ(code, 0) << out;
  const auto cli = nlohmann::json::parse(out).at("results");

  auto embedder = mms::Embedder::load((dir_ / "model").string());
  auto c = mms::Collection::open_for_search((dir_ / "index").string(), embedder->fingerprint());
  const auto lib = mms::search_collection(*c, mms::embed_text_query(*embedder, "a red circle"),
                                          mms::SearchTarget::kImages, 5);
  ASSERT_EQ(cli.size(), lib.size());
  for (size_t i = 0; i < lib.size(); ++i) {
    EXPECT_EQ(cli[i].at("id").get<int64_t>(), lib[i].id);
    EXPECT_EQ(cli[i].at("path").get<std::string>(), lib[i].path);
    EXPECT_NEAR(cli[i].at("score").get<double>(), lib[i].score, 1e-6);
  }
}

TEST_F(IndexCliTest, AnIndexRefusesAnotherModel) {
  ASSERT_EQ(run("index " + common() + " " + (dir_ / "photos").string()).first, 0);
  mms::testing::make_tiny_model(dir_ / "other", /*seed=*/2);
  const std::string other =
      "--index " + (dir_ / "index").string() + " --model " + (dir_ / "other").string();
  EXPECT_EQ(run("search " + other + " --text red").first, 1);
  EXPECT_EQ(run("index " + other + " " + (dir_ / "photos").string()).first, 1);
}

TEST_F(IndexCliTest, AddedTextsAreSearchableAndLongTextsAreKeptWhole) {
  std::string long_text = "a red circle";
  for (int i = 0; i < 3000; ++i) long_text += " on white";  // far beyond 77 tokens
  {
    std::ofstream f(dir_ / "texts.txt");
    f << "a red circle\n\nthe green star\n{\"text\": \"a blue square on white\"}\n"
      << long_text << "\n";
  }
  ASSERT_EQ(run("add-texts " + common() + " " + (dir_ / "texts.txt").string()).first, 0);
  // Adding the same file again does not duplicate texts.
  ASSERT_EQ(run("add-texts " + common() + " " + (dir_ / "texts.txt").string()).first, 0);
  const auto [code, out] =
      run("search " + common() + " --text \"the green star\" --target texts -k 10 --json");
  ASSERT_EQ(code, 0) << out;
  const auto results = nlohmann::json::parse(out).at("results");
  ASSERT_EQ(results.size(), 4u);
  EXPECT_EQ(results[0].at("text").get<std::string>(), "the green star");
  EXPECT_NEAR(results[0].at("score").get<double>(), 1.0, 1e-4);
  bool long_found = false;
  for (const auto& r : results) long_found |= r.at("text").get<std::string>() == long_text;
  EXPECT_TRUE(long_found);
  std::ofstream(dir_ / "bad.jsonl") << "{\"txt\": 1}\n";
  EXPECT_EQ(run("add-texts " + common() + " " + (dir_ / "bad.jsonl").string()).first, 1);
}

// Rows of `table` in the catalog, read without taking part in anything (0 before it exists).
int64_t catalog_rows(const fs::path& index, const std::string& table) {
  sqlite3* db = nullptr;
  int64_t n = 0;
  if (sqlite3_open_v2((index / "catalog.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
      SQLITE_OK) {
    sqlite3_busy_timeout(db, 1000);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, ("SELECT COUNT(*) FROM " + table).c_str(), -1, &st, nullptr) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      n = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}

TEST_F(IndexCliTest, AReembedKilledMidwayLeavesTheOldModelAnsweringAndResumes) {
  ASSERT_EQ(run("index " + common() + " " + (dir_ / "photos").string()).first, 0);
  mms::testing::make_tiny_model(dir_ / "next", /*seed=*/3);
  const std::string next = "--index " + (dir_ / "index").string() + " --model " +
                           (dir_ / "next").string() + " --threads 1";
  const pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stderr);
    freopen("/dev/null", "w", stdout);
    const std::string index = (dir_ / "index").string(), model = (dir_ / "next").string();
    execl(kProgram.c_str(), kProgram.c_str(), "index", "--index", index.c_str(), "--model",
          model.c_str(), "--threads", "1", "--batch-size", "8", "--reembed", nullptr);
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int64_t staged = 0;
  while (std::chrono::steady_clock::now() < deadline && staged < 16) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    staged = catalog_rows(dir_ / "index", "staged_items");
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the re-embed finished before it could be killed";
  ASSERT_GE(staged, 8);

  // Half-way, the old model still finds every image, and the new one is told to wait.
  const auto [old_code, old_out] =
      run("search " + common() + " --text \"a red circle\" -k 1000 --json");
  ASSERT_EQ(old_code, 0) << old_out;
  EXPECT_EQ(nlohmann::json::parse(old_out).at("results").size(), static_cast<size_t>(kImages));
  EXPECT_EQ(run("search " + next + " --text red").first, 1);

  const auto [code, out] = run("index " + next + " --reembed");
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("re-embedded"), std::string::npos) << out;
  EXPECT_EQ(catalog_rows(dir_ / "index", "staged_items"), 0);
  EXPECT_EQ(run("search " + common() + " --text red").first, 1);  // the old model is refused now
  auto embedder = mms::Embedder::load((dir_ / "next").string());
  auto c = mms::Collection::open_for_search((dir_ / "index").string(), embedder->fingerprint());
  EXPECT_EQ(c->item_count(mms::ItemStatus::kOk), kImages);
  // Every vector is the new model's: each image finds itself with a score of 1.
  for (int i : {0, 77, kImages - 1}) {
    const std::string probe = (dir_ / "photos" / ("img" + std::to_string(i) + ".jpg")).string();
    const auto hits = mms::search_collection(*c, mms::embed_image_query(*embedder, probe),
                                             mms::SearchTarget::kImages, 1);
    ASSERT_EQ(hits.size(), 1u);
    EXPECT_NEAR(hits[0].score, 1.f, 1e-4) << probe;
  }
}

// Two writers on one index: while one holds the folder (here the test itself, holding the
// lock a running `mmsearch index` would hold), a second `index` or `add-texts` is refused at
// once with a message, exit 1, and the catalog is untouched; once the first is done, it runs.
TEST_F(IndexCliTest, ASecondWriterIsRefusedWhileOneIsWriting) {
  const fs::path index = dir_ / "index";
  ASSERT_EQ(run("index " + common() + " " + (dir_ / "photos").string()).first, 0);
  const int fd = ::open((index / "write.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  const auto catalog_before = fs::last_write_time(index / "catalog.sqlite");
  const auto [code, out] = mms::testing::run_command(kProgram + " index " + common() + " " +
                                                     (dir_ / "photos").string() + " 2>&1");
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("another mmsearch index or add-texts is writing"), std::string::npos) << out;
  std::ofstream(dir_ / "texts.txt") << "a red circle\n";
  EXPECT_EQ(run("add-texts " + common() + " " + (dir_ / "texts.txt").string()).first, 1);
  EXPECT_EQ(fs::last_write_time(index / "catalog.sqlite"), catalog_before);
  // Searches (readers) never wait for the lock.
  EXPECT_EQ(run("search " + common() + " --text x -k 1").first, 0);
  ::close(fd);
  EXPECT_EQ(run("add-texts " + common() + " " + (dir_ / "texts.txt").string()).first, 0);
}

TEST_F(IndexCliTest, BadUsageExitsTwo) {
  EXPECT_EQ(run("search --index x").first, 2);  // neither --text nor --image
  EXPECT_EQ(run("search --index x --text a -k 0").first, 2);
  EXPECT_EQ(run("frobnicate").first, 2);
}

}  // namespace
