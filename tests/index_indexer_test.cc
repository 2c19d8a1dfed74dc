// The indexer as `mmsearch index` uses it: incremental runs over a changing folder, bad
// files recorded with their reason while the rest is indexed, and search over the result.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "encoders/embedder.h"
#include "index/collection.h"
#include "index/indexer.h"
#include "index/search.h"
#include "index_test_support.h"

namespace {

namespace fs = std::filesystem;

class IndexerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mms_indexer_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "photos/sub");
    mms::testing::make_tiny_model(dir_ / "model");
    embedder_ = mms::Embedder::load((dir_ / "model").string());
    for (int i = 0; i < 5; ++i) {
      mms::testing::write_test_jpeg(dir_ / "photos" / ("p" + std::to_string(i) + ".jpg"), i + 1);
    }
    mms::testing::write_test_jpeg(dir_ / "photos/sub/no_extension", 9);  // found by content
    std::ofstream(dir_ / "photos/notes.txt") << "not an image";
    std::ofstream(dir_ / "photos/sub/broken.png") << "\x89PNG\r\n\x1a\n garbage";
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<mms::Collection> open() {
    mms::CollectionOptions o;
    o.model_fingerprint = embedder_->fingerprint();
    o.dim = embedder_->dim();
    return mms::Collection::open((dir_ / "index").string(), o);
  }
  mms::IndexSummary run(mms::Collection& c, bool prune = false) {
    mms::IndexOptions options;
    options.progress = false;
    options.prune = prune;
    options.batch_size = 3;
    return mms::index_paths(c, *embedder_, {(dir_ / "photos").string()}, options);
  }

  fs::path dir_;
  std::unique_ptr<mms::Embedder> embedder_;
};

TEST_F(IndexerTest, IndexesImagesByContentAndRecordsBadFilesWithTheirReason) {
  auto c = open();
  mms::IndexSummary s = run(*c);
  EXPECT_EQ(s.files, 8);
  EXPECT_EQ(s.added, 6);
  EXPECT_EQ(s.failed, 2);
  EXPECT_EQ(s.failed_by_reason["unsupported"], 1) << mms::format_summary(s);  // notes.txt
  EXPECT_EQ(s.failed_by_reason["corrupt"], 1) << mms::format_summary(s);      // broken.png
  const auto broken = c->find_item_by_path((dir_ / "photos/sub/broken.png").string());
  ASSERT_TRUE(broken.has_value());
  EXPECT_EQ(broken->status, mms::ItemStatus::kFailed);
  EXPECT_NE(broken->error.find("broken.png"), std::string::npos) << broken->error;
  const auto jpeg = c->find_item_by_path((dir_ / "photos/p0.jpg").string());
  ASSERT_TRUE(jpeg.has_value());
  EXPECT_EQ(jpeg->width, 40);
  EXPECT_EQ(jpeg->height, 30);
  EXPECT_EQ(c->item_count(mms::ItemStatus::kOk), 6);
}

TEST_F(IndexerTest, ReRunsAddChangeAndPruneOnlyWhatChanged) {
  auto c = open();
  run(*c);
  const int64_t p1_id = c->find_item_by_path((dir_ / "photos/p1.jpg").string())->id;

  mms::IndexSummary again = run(*c);
  EXPECT_EQ(again.unchanged, 8);
  EXPECT_EQ(again.added + again.updated + again.failed, 0);

  mms::testing::write_test_jpeg(dir_ / "photos/new.jpg", 20);
  mms::testing::write_test_jpeg(dir_ / "photos/p1.jpg", 30, 50, 20);  // changed content and size
  fs::remove(dir_ / "photos/p2.jpg");
  const mms::IndexSummary third = run(*c, /*prune=*/true);
  EXPECT_EQ(third.added, 1);
  EXPECT_EQ(third.updated, 1);
  EXPECT_EQ(third.removed, 1);
  EXPECT_EQ(third.unchanged, 6);
  const auto p1 = c->find_item_by_path((dir_ / "photos/p1.jpg").string());
  EXPECT_EQ(p1->id, p1_id);  // an updated file keeps its id
  EXPECT_EQ(p1->width, 50);
  EXPECT_FALSE(c->find_item_by_path((dir_ / "photos/p2.jpg").string()).has_value());
  EXPECT_EQ(c->item_count(mms::ItemStatus::kOk), 6);
}

TEST_F(IndexerTest, AnIndexedImageFindsItselfFirst) {
  auto c = open();
  run(*c);
  const std::string query_path = (dir_ / "photos/p3.jpg").string();
  const auto hits = mms::search_collection(*c, mms::embed_image_query(*embedder_, query_path),
                                           mms::SearchTarget::kImages, 3);
  ASSERT_EQ(hits.size(), 3u);
  EXPECT_EQ(hits[0].path, query_path);
  EXPECT_NEAR(hits[0].score, 1.0, 1e-4);
  EXPECT_GE(hits[0].score, hits[1].score);
}

TEST_F(IndexerTest, SymbolicLinksAreNotFollowedUnlessAsked) {
  fs::create_directories(dir_ / "outside");
  mms::testing::write_test_jpeg(dir_ / "outside/secret.jpg", 40);
  fs::create_directory_symlink(dir_ / "outside", dir_ / "photos/link");
  fs::create_directory_symlink(dir_ / "photos", dir_ / "photos/sub/loop");
  auto c = open();
  EXPECT_EQ(run(*c).files, 8);
  mms::IndexOptions follow;
  follow.progress = false;
  follow.follow_links = true;
  // Following links reaches the outside file once, and the loop back to photos/ ends.
  EXPECT_EQ(mms::index_paths(*c, *embedder_, {(dir_ / "photos").string()}, follow).files, 9);
}

}  // namespace
