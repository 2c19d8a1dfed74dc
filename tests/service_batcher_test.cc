// The service's micro-batcher as the HTTP handlers use it: answers equal to the embedder's
// and the collection's own, batches that form while the workers are busy (and only then),
// the queue bound, and destruction that finishes what is queued.
#include "service/batcher.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <limits>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "encoders/embedder.h"
#include "index/collection.h"
#include "index_test_support.h"

namespace mms {
namespace {

namespace fs = std::filesystem;

class BatcherTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() /
                        ("mms_batcher_test_" + std::to_string(::getpid())));
    fs::remove_all(*dir_);
    testing::make_tiny_model(*dir_ / "model");
    embedder_ = Embedder::load((*dir_ / "model").string()).release();
    CollectionOptions options;
    options.model_fingerprint = embedder_->fingerprint();
    options.dim = embedder_->dim();
    options.index_type = "Flat";
    auto collection = Collection::open((*dir_ / "index").string(), options);
    std::vector<std::string> texts;
    for (int i = 0; i < 40; ++i) texts.push_back("the green star " + std::to_string(i));
    collection->add_texts(texts, embedder_->embed_texts(texts), "test");
    collection->sync_indexes();
    collection_ = collection.release();
  }
  static void TearDownTestSuite() {
    delete collection_;
    delete embedder_;
    fs::remove_all(*dir_);
    delete dir_;
  }

  static std::vector<int32_t> ids(const std::string& text) {
    return embedder_->tokenizer().encode(text);
  }

  static fs::path* dir_;
  static Embedder* embedder_;
  static Collection* collection_;
};

fs::path* BatcherTest::dir_ = nullptr;
Embedder* BatcherTest::embedder_ = nullptr;
Collection* BatcherTest::collection_ = nullptr;

void expect_near(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5) << "at " << i;
}

// Holds the first batch a worker starts until release(): every job submitted meanwhile has
// to wait in its lane, which is what load does to a real server.
class Gate {
 public:
  void on_batch(const char* kind, int64_t size) {
    std::unique_lock<std::mutex> lock(mutex_);
    batches_.emplace_back(kind, size);
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  void wait_for_batches(size_t n) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return batches_.size() >= n; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }
  std::vector<std::pair<std::string, int64_t>> batches() {
    std::lock_guard<std::mutex> lock(mutex_);
    return batches_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
  std::vector<std::pair<std::string, int64_t>> batches_;
};

TEST_F(BatcherTest, AnswersAreTheEmbeddersAndTheCollections) {
  Batcher batcher(*embedder_, *collection_, BatcherOptions{}, nullptr);
  const std::string text = "a red circle";
  const std::vector<float> expected = embedder_->embed_texts({text});
  expect_near(batcher.embed_tokens(ids(text)).get(), expected);

  const auto both = batcher.embed_and_search(ids(text), Collection::Target::kTexts, 5).get();
  expect_near(both.embedding, expected);
  const auto hits = collection_->search(Collection::Target::kTexts, expected.data(), 1, 5).at(0);
  ASSERT_EQ(both.hits.size(), hits.size());
  for (size_t i = 0; i < hits.size(); ++i) EXPECT_EQ(both.hits[i].id, hits[i].id);

  const auto searched = batcher.search(Collection::Target::kTexts, expected, 5).get();
  ASSERT_EQ(searched.size(), hits.size());
  for (size_t i = 0; i < hits.size(); ++i) EXPECT_EQ(searched[i].id, hits[i].id);
}

TEST_F(BatcherTest, ALoneJobRunsAloneAndJobsArrivingWhileBusyRunTogether) {
  for (const int32_t workers : {1, 2}) {
    SCOPED_TRACE("workers " + std::to_string(workers));
    Gate gate;
    BatcherOptions options;
    options.workers = workers;
    Batcher batcher(*embedder_, *collection_, options,
                    [&](const char* kind, int64_t size) { gate.on_batch(kind, size); });
    // The first job finds the workers idle and starts at once, alone.
    auto first = batcher.embed_tokens(ids("the green star 0"));
    gate.wait_for_batches(1);
    // Another worker, if there is one, takes the next lone job, and is held too.
    std::vector<std::future<std::vector<float>>> rest;
    if (workers == 2) {
      rest.push_back(batcher.embed_tokens(ids("the green star 1")));
      gate.wait_for_batches(2);
    }
    // With every worker busy, 24 more wait in the lane.
    std::vector<std::string> texts;
    for (int i = 2; i < 26; ++i) texts.push_back("the green star " + std::to_string(i));
    for (const auto& text : texts) rest.push_back(batcher.embed_tokens(ids(text)));
    while (batcher.queue_depth() < workers + 24) std::this_thread::yield();
    gate.release();

    expect_near(first.get(), embedder_->embed_texts({"the green star 0"}));
    const std::vector<float> expected = embedder_->embed_texts(texts);
    const size_t dim = static_cast<size_t>(embedder_->dim());
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::vector<float> row(expected.begin() + (i * dim), expected.begin() + (i + 1) * dim);
      expect_near(rest[rest.size() - texts.size() + i].get(), row);
    }

    const auto batches = gate.batches();
    ASSERT_GE(batches.size(), static_cast<size_t>(workers));
    for (int32_t w = 0; w < workers; ++w) EXPECT_EQ(batches[w].second, 1);
    // The 24 that waited are shared among the workers as they free: one batch of 24 with one
    // worker, two of 12 with two.
    std::vector<int64_t> later;
    for (size_t i = workers; i < batches.size(); ++i) later.push_back(batches[i].second);
    if (workers == 1) {
      EXPECT_EQ(later, std::vector<int64_t>({24}));
    } else {
      EXPECT_EQ(later, std::vector<int64_t>({12, 12}));
    }
  }
}

TEST_F(BatcherTest, KindsTakeTurnsAndSearchesWithTheSameTargetShareOneBatch) {
  Gate gate;
  Batcher batcher(*embedder_, *collection_, BatcherOptions{},
                  [&](const char* kind, int64_t size) { gate.on_batch(kind, size); });
  auto first = batcher.embed_tokens(ids("a red circle"));
  gate.wait_for_batches(1);
  const std::vector<float> query = embedder_->embed_texts({"a blue square on white"});
  std::vector<std::future<std::vector<SearchHit>>> searches;
  for (int i = 0; i < 5; ++i) searches.push_back(batcher.search(Collection::Target::kTexts, query, 3));
  auto text = batcher.embed_tokens(ids("the green star 7"));
  while (batcher.queue_depth() < 7) std::this_thread::yield();
  gate.release();
  first.get();
  text.get();
  for (auto& s : searches) EXPECT_EQ(s.get().size(), 3u);

  std::map<std::string, std::vector<int64_t>> by_kind;
  for (const auto& [kind, size] : gate.batches()) by_kind[kind].push_back(size);
  EXPECT_EQ(by_kind["search"], std::vector<int64_t>({5}));
  EXPECT_EQ(by_kind["text"], std::vector<int64_t>({1, 1}));
}

TEST_F(BatcherTest, ASubmitBeyondTheQueueBoundIsRefusedAtOnce) {
  Gate gate;
  BatcherOptions options;
  options.max_queue = 4;
  Batcher batcher(*embedder_, *collection_, options,
                  [&](const char* kind, int64_t size) { gate.on_batch(kind, size); });
  std::vector<std::future<std::vector<float>>> queued;
  for (int i = 0; i < 4; ++i) queued.push_back(batcher.embed_tokens(ids("a red circle")));
  try {
    batcher.embed_tokens(ids("a red circle"));
    ADD_FAILURE() << "a fifth job was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnavailable);
    EXPECT_NE(std::string(e.what()).find("busy"), std::string::npos) << e.what();
  }
  gate.release();
  for (auto& f : queued) EXPECT_EQ(f.get().size(), static_cast<size_t>(embedder_->dim()));
  // Once done, the slots are free again.
  EXPECT_EQ(batcher.embed_tokens(ids("a red circle")).get().size(),
            static_cast<size_t>(embedder_->dim()));
}

TEST_F(BatcherTest, DestructionFinishesEveryQueuedJob) {
  std::vector<std::future<std::vector<float>>> futures;
  {
    BatcherOptions options;
    options.workers = 2;
    Batcher batcher(*embedder_, *collection_, options, nullptr);
    for (int i = 0; i < 50; ++i)
      futures.push_back(batcher.embed_tokens(ids("the green star " + std::to_string(i))));
  }
  for (auto& f : futures) {
    ASSERT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
    EXPECT_EQ(f.get().size(), static_cast<size_t>(embedder_->dim()));
  }
}

TEST_F(BatcherTest, AFailingJobFailsItsBatchOnly) {
  Batcher batcher(*embedder_, *collection_, BatcherOptions{}, nullptr);
  std::vector<float> bad(static_cast<size_t>(embedder_->dim()),
                         std::numeric_limits<float>::quiet_NaN());
  auto failing = batcher.search(Collection::Target::kTexts, bad, 3);
  EXPECT_THROW(failing.get(), Error);
  const std::vector<float> good = embedder_->embed_texts({"a red circle"});
  EXPECT_EQ(batcher.search(Collection::Target::kTexts, good, 3).get().size(), 3u);
}

}  // namespace
}  // namespace mms
