// Collection: the SQLite catalog as source of truth, FAISS files as verified caches.
#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/index_io.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "error_testing.h"
#include "index/collection.h"

namespace mms {
namespace {

namespace fs = std::filesystem;
using Target = Collection::Target;

constexpr int32_t kDim = 24;
const std::string kModel = "model-aaaa";

std::vector<float> random_unit_vectors(int64_t n, int32_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(n * dim));
  for (int64_t i = 0; i < n; ++i) {
    float* row = v.data() + i * dim;
    double norm2 = 0;
    for (int32_t j = 0; j < dim; ++j) {
      row[j] = normal(rng);
      norm2 += row[j] * row[j];
    }
    for (int32_t j = 0; j < dim; ++j) row[j] = static_cast<float>(row[j] / std::sqrt(norm2));
  }
  return v;
}

ItemWrite ok_item(const std::string& path, const float* vector, int32_t dim = kDim) {
  ItemWrite w;
  w.path = path;
  w.size = 1000;
  w.mtime_ns = 123456789;
  w.content_hash = "hash-" + path;
  w.width = 64;
  w.height = 48;
  w.vector.assign(vector, vector + dim);
  return w;
}

CollectionOptions options(const std::string& index_type = "") {
  CollectionOptions o;
  o.model_fingerprint = kModel;
  o.dim = kDim;
  o.index_type = index_type;
  return o;
}

// Top-k catalog ids of `query` among `vectors` (ids[i] for row i) by exact inner product.
std::vector<int64_t> brute_force(const std::vector<float>& vectors, const std::vector<int64_t>& ids,
                                 const float* query, int32_t k) {
  std::vector<std::pair<float, int64_t>> scored;
  for (size_t i = 0; i < ids.size(); ++i) {
    float s = 0;
    for (int32_t j = 0; j < kDim; ++j) s += vectors[i * kDim + j] * query[j];
    scored.emplace_back(s, ids[i]);
  }
  std::sort(scored.begin(), scored.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::vector<int64_t> top;
  for (int32_t i = 0; i < k && i < static_cast<int32_t>(scored.size()); ++i) {
    top.push_back(scored[i].second);
  }
  return top;
}

std::vector<int64_t> hit_ids(const std::vector<SearchHit>& hits) {
  std::vector<int64_t> ids;
  for (const auto& h : hits) ids.push_back(h.id);
  return ids;
}

using testing::kind_of;

class CollectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "mms_collection_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Stores n random items named img<i>.png and returns their vectors; ids_ gets their ids.
  std::vector<float> fill(Collection& c, int64_t n, uint32_t seed = 1) {
    std::vector<float> v = random_unit_vectors(n, kDim, seed);
    std::vector<ItemWrite> batch;
    for (int64_t i = 0; i < n; ++i) {
      batch.push_back(ok_item("img" + std::to_string(i) + ".png", v.data() + i * kDim));
    }
    ids_ = c.upsert_items(batch);
    return v;
  }

  std::string file(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  std::string dir_;
  std::vector<int64_t> ids_;
};

TEST_F(CollectionTest, StoresItemsAndFindsThemAfterReopening) {
  const auto v = random_unit_vectors(2, kDim, 7);
  {
    auto c = Collection::open(dir_, options());
    ItemWrite a = ok_item("photos/a.jpg", v.data());
    a.caption = "a red kite";
    const auto ids = c->upsert_items({a, ok_item("photos/b.jpg", v.data() + kDim)});
    ASSERT_EQ(ids.size(), 2u);
    EXPECT_NE(ids[0], ids[1]);
  }
  EXPECT_TRUE(fs::exists(file("catalog.sqlite")));
  auto c = Collection::open(dir_, options());
  const auto a = c->find_item_by_path("photos/a.jpg");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->size, 1000);
  EXPECT_EQ(a->mtime_ns, 123456789);
  EXPECT_EQ(a->content_hash, "hash-photos/a.jpg");
  EXPECT_EQ(a->width, 64);
  EXPECT_EQ(a->height, 48);
  EXPECT_EQ(a->caption, "a red kite");
  EXPECT_EQ(a->status, ItemStatus::kOk);
  EXPECT_TRUE(a->error.empty());
  const auto by_id = c->item(a->id);
  ASSERT_TRUE(by_id);
  EXPECT_EQ(by_id->path, "photos/a.jpg");
  EXPECT_FALSE(c->find_item_by_path("photos/b.jpg")->caption);
  EXPECT_FALSE(c->find_item_by_path("photos/missing.jpg"));
  EXPECT_FALSE(c->item(999999));
  EXPECT_EQ(c->item_count(), 2);
  EXPECT_EQ(c->model_fingerprint(), kModel);
  EXPECT_EQ(c->dim(), kDim);
  EXPECT_EQ(c->index_type(), "auto");
}

TEST_F(CollectionTest, UpdatedItemKeepsItsId) {
  auto c = Collection::open(dir_, options());
  const auto v = random_unit_vectors(2, kDim, 3);
  const int64_t id = c->upsert_items({ok_item("x.png", v.data())})[0];
  ItemWrite changed = ok_item("x.png", v.data() + kDim);
  changed.size = 2000;
  changed.caption = "now captioned";
  EXPECT_EQ(c->upsert_items({changed})[0], id);
  const auto r = c->item(id);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->size, 2000);
  EXPECT_EQ(r->caption, "now captioned");
  EXPECT_EQ(c->item_count(), 1);
  // The search index follows the new vector.
  c->sync_indexes();
  const auto hits = c->search(Target::kImages, v.data() + kDim, 1, 1);
  ASSERT_EQ(hits[0].size(), 1u);
  EXPECT_EQ(hits[0][0].id, id);
  EXPECT_NEAR(hits[0][0].score, 1.0f, 1e-5);
}

TEST_F(CollectionTest, RemovesItemsAndNeverReusesTheirIds) {
  auto c = Collection::open(dir_, options());
  fill(*c, 3);
  EXPECT_EQ(c->remove_items({ids_[2], 424242}), 1);
  EXPECT_FALSE(c->item(ids_[2]));
  EXPECT_FALSE(c->find_item_by_path("img2.png"));
  EXPECT_EQ(c->item_count(), 2);
  const auto v = random_unit_vectors(1, kDim, 9);
  const int64_t fresh = c->upsert_items({ok_item("new.png", v.data())})[0];
  EXPECT_GT(fresh, ids_[2]);
}

TEST_F(CollectionTest, ListsItemsPageByPage) {
  auto c = Collection::open(dir_, options());
  fill(*c, 5);
  std::vector<int64_t> seen;
  int64_t after = 0;
  while (true) {
    const auto page = c->list_items(after, 2);
    if (page.empty()) break;
    for (const auto& r : page) seen.push_back(r.id);
    after = page.back().id;
  }
  EXPECT_EQ(seen, ids_);
}

TEST_F(CollectionTest, SearchMatchesBruteForceInnerProduct) {
  auto c = Collection::open(dir_, options());
  const auto v = fill(*c, 300);
  c->sync_indexes();
  EXPECT_EQ(c->index_info(Target::kImages).index_type, "Flat");
  EXPECT_EQ(c->index_info(Target::kImages).vectors, 300);
  const auto queries = random_unit_vectors(5, kDim, 99);
  const auto hits = c->search(Target::kImages, queries.data(), 5, 10);
  ASSERT_EQ(hits.size(), 5u);
  for (int q = 0; q < 5; ++q) {
    ASSERT_EQ(hits[q].size(), 10u);
    EXPECT_EQ(hit_ids(hits[q]), brute_force(v, ids_, queries.data() + q * kDim, 10));
    for (size_t j = 1; j < hits[q].size(); ++j) EXPECT_GE(hits[q][j - 1].score, hits[q][j].score);
  }
  // k beyond the collection gives what there is.
  auto small = Collection::open(dir_ + "/small", options());
  fill(*small, 3);
  small->sync_indexes();
  EXPECT_EQ(small->search(Target::kImages, queries.data(), 1, 50)[0].size(), 3u);
}

// A Flat index answers a few queries through FlatShortcut (an int8 scan with a proven bound)
// and larger batches through FAISS's matrix product: both must be the exact answer.
TEST_F(CollectionTest, FlatSearchIsExactForSingleQueriesAndBatches) {
  auto c = Collection::open(dir_, options());
  const auto v = fill(*c, 4000, 5);
  c->sync_indexes();
  ASSERT_EQ(c->index_info(Target::kImages).index_type, "Flat");
  // Half the queries are near stored vectors (real queries have close neighbours).
  auto queries = random_unit_vectors(12, kDim, 77);
  for (int q = 0; q < 6; ++q) {
    for (int i = 0; i < kDim; ++i) queries[q * kDim + i] += v[(q * 97) * kDim + i];
  }
  for (int q = 0; q < 12; ++q) {
    const auto one = c->search(Target::kImages, queries.data() + q * kDim, 1, 10);
    EXPECT_EQ(hit_ids(one[0]), brute_force(v, ids_, queries.data() + q * kDim, 10)) << q;
  }
  const auto batch = c->search(Target::kImages, queries.data(), 12, 10);
  for (int q = 0; q < 12; ++q) {
    EXPECT_EQ(hit_ids(batch[q]), brute_force(v, ids_, queries.data() + q * kDim, 10)) << q;
  }
}

TEST_F(CollectionTest, SearchesTexts) {
  auto c = Collection::open(dir_, options());
  const auto v = random_unit_vectors(3, kDim, 5);
  const std::vector<std::string> texts = {"a cat", "a dog", "a bird"};
  const auto ids = c->add_texts(texts, v, "captions.txt");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(c->text_count(), 3);
  // Adding a stored text again keeps its id.
  EXPECT_EQ(c->add_texts({"a dog"}, {v.begin() + kDim, v.begin() + 2 * kDim}, "again.txt")[0],
            ids[1]);
  EXPECT_EQ(c->text_count(), 3);
  EXPECT_EQ(c->text(ids[1])->source, "again.txt");
  c->sync_indexes();
  const auto hits = c->search(Target::kTexts, v.data() + 2 * kDim, 1, 2);
  ASSERT_EQ(hits[0].size(), 2u);
  EXPECT_EQ(hits[0][0].id, ids[2]);
  EXPECT_EQ(c->text(hits[0][0].id)->text, "a bird");
  // Images and texts are separate targets.
  EXPECT_TRUE(c->search(Target::kImages, v.data(), 1, 5)[0].empty());
}

TEST_F(CollectionTest, RebuildsADeletedFaissFile) {
  auto writer = Collection::open(dir_, options());
  const auto v = fill(*writer, 50);
  writer->sync_indexes();
  ASSERT_TRUE(fs::exists(file("images.faiss")));
  ASSERT_TRUE(fs::exists(file("texts.faiss")));
  fs::remove(file("images.faiss"));
  auto reader = Collection::open_for_search(dir_, kModel);
  EXPECT_TRUE(fs::exists(file("images.faiss")));
  EXPECT_EQ(reader->search(Target::kImages, v.data() + 7 * kDim, 1, 1)[0][0].id, ids_[7]);
  // A temp file left by a killed writer (no such pid) goes at the next write.
  const std::string orphan = file("images.faiss.tmp-999999999-0");
  std::ofstream(orphan) << "half an index";
  fs::remove(file("images.faiss"));
  writer->sync_indexes();
  EXPECT_TRUE(fs::exists(file("images.faiss")));
  EXPECT_FALSE(fs::exists(orphan));
}

TEST_F(CollectionTest, DetectsAndRebuildsCorruptedFaissFiles) {
  {
    auto writer = Collection::open(dir_, options());
    fill(*writer, 100);
    writer->sync_indexes();
  }
  const auto v = random_unit_vectors(100, kDim, 1);
  const auto size = fs::file_size(file("images.faiss"));
  // Damage: flipped bytes in the header and the middle, then a truncation, then garbage.
  const std::vector<std::function<void()>> damages = {
      [&] {
        std::fstream f(file("images.faiss"), std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(20);
        f.write("\xff\xff\xff\x7f\xff\xff\xff\x7f", 8);
        f.seekp(static_cast<std::streamoff>(size / 2));
        f.write("\x01\x02\x03\x04", 4);
      },
      [&] { fs::resize_file(file("images.faiss"), size / 3); },
      [&] {
        std::ofstream f(file("images.faiss"), std::ios::binary | std::ios::trunc);
        f << "IxMp this is not a faiss index";
      },
  };
  for (const auto& damage : damages) {
    damage();
    auto reader = Collection::open_for_search(dir_, kModel);
    EXPECT_EQ(reader->search(Target::kImages, v.data() + 42 * kDim, 1, 1)[0][0].id, ids_[42]);
    // The file on disk was rewritten whole.
    std::unique_ptr<faiss::Index> stock(faiss::read_index(file("images.faiss").c_str()));
    EXPECT_EQ(stock->ntotal, 100);
  }
}

TEST_F(CollectionTest, DistrustsAValidFaissFileTheCatalogDidNotRecord) {
  std::vector<float> v;
  {
    auto writer = Collection::open(dir_, options());
    v = fill(*writer, 30);
    writer->sync_indexes();
  }
  // A well-formed index of the right size and shape, but with other ids: only the recorded
  // hash can tell it apart.
  faiss::IndexFlatIP flat(kDim);
  faiss::IndexIDMap forged(&flat);
  std::vector<faiss::Index::idx_t> wrong_ids(ids_.rbegin(), ids_.rend());
  forged.add_with_ids(30, v.data(), wrong_ids.data());
  faiss::write_index(&forged, file("images.faiss").c_str());
  auto reader = Collection::open_for_search(dir_, kModel);
  EXPECT_EQ(reader->search(Target::kImages, v.data(), 1, 1)[0][0].id, ids_[0]);
}

TEST_F(CollectionTest, AKilledWriterLosesAtMostTheBatchInFlight) {
  constexpr int kBatch = 10;
  Collection::open(dir_, options());  // create the catalog before two processes open it
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child writes batches until it is killed; it never returns into the test runner.
    auto writer = Collection::open(dir_, options());
    for (int b = 0;; ++b) {
      const auto v = random_unit_vectors(kBatch, kDim, 1000 + b);
      std::vector<ItemWrite> batch;
      for (int i = 0; i < kBatch; ++i) {
        batch.push_back(
            ok_item("b" + std::to_string(b) + "_" + std::to_string(i), v.data() + i * kDim));
      }
      writer->upsert_items(batch);
    }
  }
  // Read while the child writes (WAL), then kill it mid-stream.
  auto observer = Collection::open(dir_, options());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (observer->item_count() < 5 * kBatch && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  observer.reset();
  auto c = Collection::open(dir_, options());
  const int64_t n = c->item_count();
  EXPECT_GE(n, 5 * kBatch);
  EXPECT_EQ(n % kBatch, 0) << "a partial batch is visible";
  EXPECT_EQ(c->item_count(ItemStatus::kOk), n);
  c->sync_indexes();
  EXPECT_EQ(c->index_info(Target::kImages).vectors, n);
}

TEST_F(CollectionTest, RebuildsAStaleFaissFile) {
  const auto extra = random_unit_vectors(1, kDim, 77);
  {
    auto writer = Collection::open(dir_, options());
    fill(*writer, 20);
    writer->sync_indexes();
    // The catalog moves on after the file was written (the indexer was killed before syncing).
    writer->upsert_items({ok_item("late.png", extra.data())});
  }
  auto reader = Collection::open_for_search(dir_, kModel);
  const auto late = reader->find_item_by_path("late.png");
  ASSERT_TRUE(late);
  EXPECT_EQ(reader->search(Target::kImages, extra.data(), 1, 1)[0][0].id, late->id);
  EXPECT_EQ(reader->index_info(Target::kImages).vectors, 21);
}

TEST_F(CollectionTest, RebuildsAfterTheCatalogIsEditedBehindItsBack) {
  auto writer = Collection::open(dir_, options());
  const auto v = fill(*writer, 10);
  writer->sync_indexes();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file("catalog.sqlite").c_str(), &db), SQLITE_OK);
  const std::string sql = "DELETE FROM items WHERE id = " + std::to_string(ids_[4]);
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto reader = Collection::open_for_search(dir_, kModel);
  EXPECT_EQ(reader->index_info(Target::kImages).vectors, 9);
  EXPECT_NE(reader->search(Target::kImages, v.data() + 4 * kDim, 1, 1)[0][0].id, ids_[4]);
}

TEST_F(CollectionTest, ReaderReloadsFilesAWriterSynced) {
  auto writer = Collection::open(dir_, options());
  fill(*writer, 10);
  writer->sync_indexes();
  auto reader = Collection::open_for_search(dir_, kModel);
  EXPECT_FALSE(reader->reload_indexes());
  const auto extra = random_unit_vectors(1, kDim, 1234);
  const int64_t id = writer->upsert_items({ok_item("more.png", extra.data())})[0];
  // Catalog reads see the write at once; search waits for the writer's sync.
  EXPECT_EQ(reader->item_count(), 11);
  EXPECT_FALSE(reader->reload_indexes());
  writer->sync_indexes();
  EXPECT_TRUE(reader->reload_indexes());
  EXPECT_EQ(reader->search(Target::kImages, extra.data(), 1, 1)[0][0].id, id);
}

TEST_F(CollectionTest, RefusesAnotherModelNamingBoth) {
  Collection::open(dir_, options());
  CollectionOptions other = options();
  other.model_fingerprint = "model-bbbb";
  try {
    Collection::open(dir_, other);
    FAIL() << "opened with another model";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kMismatch);
    const std::string m = e.what();
    EXPECT_NE(m.find("model-aaaa"), std::string::npos) << m;
    EXPECT_NE(m.find("model-bbbb"), std::string::npos) << m;
    EXPECT_NE(m.find("--reembed"), std::string::npos) << m;
    EXPECT_NE(m.find(dir_), std::string::npos) << m;
  }
  EXPECT_EQ(kind_of([&] { Collection::open_for_search(dir_, "model-bbbb"); }),
            ErrorKind::kMismatch);
  CollectionOptions wider = options();
  wider.dim = kDim * 2;
  EXPECT_EQ(kind_of([&] { Collection::open(dir_, wider); }), ErrorKind::kMismatch);
}

CollectionOptions next_model(int32_t dim = 16) {
  CollectionOptions next = options();
  next.model_fingerprint = "model-cccc";
  next.dim = dim;
  next.reembed = true;
  return next;
}

// The new model's record of an item: a fresh vector of the new dim.
ItemWrite restaged(const float* vector, int32_t dim) {
  return ok_item("ignored", vector, dim);
}

TEST_F(CollectionTest, ReembedKeepsTheOldSpaceAnsweringUntilTheSwap) {
  std::vector<float> old_v;
  {
    auto c = Collection::open(dir_, options());
    old_v = fill(*c, 4);
    c->add_texts({"hello", "world"}, random_unit_vectors(2, kDim, 2), "t");
    c->sync_indexes();
  }
  auto re = Collection::open(dir_, next_model());
  EXPECT_EQ(re->reembed_fingerprint(), "model-cccc");
  EXPECT_EQ(re->model_fingerprint(), kModel);  // still the live space
  EXPECT_EQ(re->dim(), kDim);
  EXPECT_EQ(re->reembed_pending(), 6);
  EXPECT_EQ(kind_of([&] { re->upsert_items({ok_item("x.png", old_v.data())}); }),
            ErrorKind::kInvalidArgument);

  const auto new_v = random_unit_vectors(4, 16, 9);
  const auto items = re->items_to_reembed(0, 100);
  ASSERT_EQ(items.size(), 4u);
  re->stage_items({items[0].id, items[1].id, items[2].id},
                  {restaged(new_v.data(), 16), restaged(new_v.data() + 16, 16),
                   restaged(new_v.data() + 32, 16)});
  EXPECT_FALSE(re->commit_reembed());  // one item and two texts are left

  // Meanwhile the old model's searchers see the old space, whole; the new model is told to
  // wait for the re-embed rather than that the index is incompatible.
  {
    auto old_reader = Collection::open_for_search(dir_, kModel);
    const auto hits = old_reader->search(Target::kImages, old_v.data() + kDim, 1, 4)[0];
    ASSERT_EQ(hits.size(), 4u);
    EXPECT_EQ(hits[0].id, ids_[1]);
    EXPECT_EQ(kind_of([&] { Collection::open_for_search(dir_, "model-cccc"); }),
              ErrorKind::kUnavailable);
  }

  re->stage_items({items[3].id}, {restaged(new_v.data() + 48, 16)});
  const auto texts = re->texts_to_reembed(0, 10);
  ASSERT_EQ(texts.size(), 2u);
  re->stage_texts({texts[0].id, texts[1].id}, random_unit_vectors(2, 16, 3));
  EXPECT_EQ(re->reembed_pending(), 0);
  ASSERT_TRUE(re->commit_reembed());
  EXPECT_EQ(re->model_fingerprint(), "model-cccc");
  EXPECT_EQ(re->dim(), 16);
  EXPECT_TRUE(re->reembed_fingerprint().empty());
  re->sync_indexes();
  const auto hits = re->search(Target::kImages, new_v.data() + 32, 1, 4)[0];
  ASSERT_EQ(hits.size(), 4u);
  EXPECT_EQ(hits[0].id, items[2].id);  // ids survive the swap
  EXPECT_NEAR(hits[0].score, 1.f, 1e-5);
  EXPECT_EQ(re->search(Target::kTexts, new_v.data(), 1, 5)[0].size(), 2u);
  EXPECT_EQ(kind_of([&] { Collection::open_for_search(dir_, kModel); }), ErrorKind::kMismatch);
  EXPECT_EQ(Collection::open_for_search(dir_, "model-cccc")->index_info(Target::kImages).vectors,
            4);
}

TEST_F(CollectionTest, AnInterruptedReembedResumesAndAnotherModelStartsOver) {
  {
    auto c = Collection::open(dir_, options());
    fill(*c, 3);
  }
  const auto v = random_unit_vectors(1, 16, 4);
  {
    auto re = Collection::open(dir_, next_model());
    re->stage_items({ids_[0]}, {restaged(v.data(), 16)});
  }  // "killed" here
  {
    auto re = Collection::open(dir_, next_model());
    const auto left = re->items_to_reembed(0, 10);
    ASSERT_EQ(left.size(), 2u);
    EXPECT_EQ(left[0].id, ids_[1]);
  }
  auto other = Collection::open(dir_, next_model(/*dim=*/20));  // same name, other dim
  EXPECT_EQ(other->items_to_reembed(0, 10).size(), 3u);
  EXPECT_EQ(kind_of([&] { other->stage_items({ids_[0]}, {restaged(v.data(), 16)}); }),
            ErrorKind::kInvalidArgument);
}

TEST_F(CollectionTest, ReembedTurnsGoneFilesStaleAndUnreadableOnesFailed) {
  {
    auto c = Collection::open(dir_, options());
    fill(*c, 3);
  }
  auto re = Collection::open(dir_, next_model());
  const auto v = random_unit_vectors(1, 16, 5);
  ItemWrite gone;  // no error: the file is gone
  gone.ok = false;
  ItemWrite broken;
  broken.ok = false;
  broken.error = "corrupt: truncated";
  re->stage_items({ids_[0], ids_[1], ids_[2]}, {restaged(v.data(), 16), gone, broken});
  ASSERT_TRUE(re->commit_reembed());
  EXPECT_EQ(re->item(ids_[0])->status, ItemStatus::kOk);
  EXPECT_EQ(re->item(ids_[1])->status, ItemStatus::kStale);
  EXPECT_EQ(re->item(ids_[2])->status, ItemStatus::kFailed);
  EXPECT_EQ(re->item(ids_[2])->error, "corrupt: truncated");
  re->sync_indexes();
  EXPECT_EQ(re->index_info(Target::kImages).vectors, 1);
}

TEST_F(CollectionTest, RecordsFailedItemsAndNeverReturnsThem) {
  auto c = Collection::open(dir_, options());
  const auto v = fill(*c, 5);
  ItemWrite bad;
  bad.path = "broken.jpg";
  bad.size = 17;
  bad.ok = false;
  bad.error = "truncated JPEG";
  const int64_t id = c->upsert_items({bad})[0];
  const auto r = c->item(id);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, ItemStatus::kFailed);
  EXPECT_EQ(r->error, "truncated JPEG");
  EXPECT_EQ(c->item_count(), 6);
  EXPECT_EQ(c->item_count(ItemStatus::kOk), 5);
  EXPECT_EQ(c->item_count(ItemStatus::kFailed), 1);
  c->sync_indexes();
  const auto hits = c->search(Target::kImages, v.data(), 1, 100);
  EXPECT_EQ(hits[0].size(), 5u);
  for (const auto& h : hits[0]) EXPECT_NE(h.id, id);
}

TEST_F(CollectionTest, BuildsHnswAndIvfIndexes) {
  for (const std::string type : {"HNSW32", "IVF4,Flat"}) {
    SCOPED_TRACE(type);
    const std::string sub = dir_ + "/" + type;
    auto c = Collection::open(sub, options(type));
    const auto v = fill(*c, 400);
    c->set_search_params({/*nprobe=*/4, /*ef_search=*/400});
    c->sync_indexes();
    EXPECT_EQ(c->index_type(), type);
    EXPECT_EQ(c->index_info(Target::kImages).index_type, type);
    // All lists probed / a wide beam: as good as exact on 400 vectors.
    const auto queries = random_unit_vectors(3, kDim, 5);
    const auto hits = c->search(Target::kImages, queries.data(), 3, 5);
    for (int q = 0; q < 3; ++q) {
      EXPECT_EQ(hit_ids(hits[q]), brute_force(v, ids_, queries.data() + q * kDim, 5));
    }
    // The file is reused, not rebuilt, by a reader; its type is what was recorded.
    const auto before = fs::last_write_time(sub + "/images.faiss");
    auto reader = Collection::open_for_search(sub, kModel);
    EXPECT_EQ(fs::last_write_time(sub + "/images.faiss"), before);
    EXPECT_EQ(reader->index_info(Target::kImages).index_type, type);
  }
}

TEST_F(CollectionTest, RebuildsWhenTheIndexTypeChanges) {
  {
    auto c = Collection::open(dir_, options());
    fill(*c, 50);
    c->sync_indexes();
    EXPECT_EQ(c->index_info(Target::kImages).index_type, "Flat");
  }
  auto c = Collection::open(dir_, options("HNSW32"));
  c->sync_indexes();
  EXPECT_EQ(c->index_info(Target::kImages).index_type, "HNSW32");
  // "" keeps the recorded type.
  EXPECT_EQ(Collection::open(dir_, options(""))->index_type(), "HNSW32");
  EXPECT_EQ(Collection::open_for_search(dir_, kModel)->index_info(Target::kImages).index_type,
            "HNSW32");
}

TEST(CollectionAutoIndexType, ExactThenGraphThenInvertedLists) {
  EXPECT_EQ(Collection::auto_index_type(0), "Flat");
  EXPECT_EQ(Collection::auto_index_type(Collection::kAutoExactLimit - 1), "Flat");
  EXPECT_EQ(Collection::auto_index_type(Collection::kAutoExactLimit), "HNSW32");
  EXPECT_EQ(Collection::auto_index_type(Collection::kAutoIvfFrom - 1), "HNSW32");
  EXPECT_EQ(Collection::auto_index_type(Collection::kAutoIvfFrom), "IVF1024,Flat");
  EXPECT_EQ(Collection::auto_index_type(1000000), "IVF1024,Flat");
  // The list count follows sqrt(count): about 2,000 at four million, 8,000 at 64 million.
  EXPECT_EQ(Collection::auto_index_type(4000000), "IVF2048,Flat");
  EXPECT_EQ(Collection::auto_index_type(64000000), "IVF8192,Flat");
}

TEST_F(CollectionTest, FallsBackToFlatWhenTooFewVectorsToTrain) {
  auto c = Collection::open(dir_, options("IVF64,Flat"));
  const auto v = fill(*c, 10);
  c->sync_indexes();
  EXPECT_EQ(c->index_type(), "IVF64,Flat");
  EXPECT_EQ(c->index_info(Target::kImages).index_type, "Flat");
  EXPECT_EQ(c->search(Target::kImages, v.data() + 3 * kDim, 1, 1)[0][0].id, ids_[3]);
  // Empty targets work too.
  EXPECT_TRUE(c->search(Target::kTexts, v.data(), 1, 3)[0].empty());
}

TEST_F(CollectionTest, ABatchIsAllOrNothing) {
  auto c = Collection::open(dir_, options());
  const auto v = random_unit_vectors(3, kDim, 4);
  const int64_t id = c->upsert_items({ok_item("keep.png", v.data())})[0];
  ItemWrite update = ok_item("keep.png", v.data() + kDim);
  update.size = 5;
  ItemWrite wrong = ok_item("wrong.png", v.data(), kDim - 1);  // vector too short
  EXPECT_EQ(kind_of([&] {
              c->upsert_items({update, ok_item("new.png", v.data()), wrong});
            }),
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(c->item_count(), 1);
  EXPECT_FALSE(c->find_item_by_path("new.png"));
  EXPECT_EQ(c->item(id)->size, 1000);
  // Other rejected writes.
  ItemWrite unnormalized = ok_item("n.png", v.data());
  unnormalized.vector[0] += 1.0f;
  EXPECT_EQ(kind_of([&] { c->upsert_items({unnormalized}); }), ErrorKind::kInvalidArgument);
  ItemWrite nan = ok_item("nan.png", v.data());
  nan.vector[3] = std::nanf("");
  EXPECT_EQ(kind_of([&] { c->upsert_items({nan}); }), ErrorKind::kInvalidArgument);
  EXPECT_EQ(kind_of([&] {
              c->add_texts({"a", ""}, random_unit_vectors(2, kDim, 1), "s");
            }),
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(kind_of([&] { c->add_texts({"a"}, random_unit_vectors(2, kDim, 1), "s"); }),
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(c->text_count(), 0);
}

TEST_F(CollectionTest, FilesAreReadableByStockFaiss) {
  auto c = Collection::open(dir_, options());
  const auto v = fill(*c, 60);
  c->add_texts({"one", "two"}, random_unit_vectors(2, kDim, 3), "s");
  c->sync_indexes();
  std::unique_ptr<faiss::Index> stock(faiss::read_index(file("images.faiss").c_str()));
  ASSERT_NE(dynamic_cast<faiss::IndexIDMap*>(stock.get()), nullptr);
  EXPECT_EQ(stock->ntotal, 60);
  EXPECT_EQ(stock->d, kDim);
  EXPECT_EQ(stock->metric_type, faiss::METRIC_INNER_PRODUCT);
  std::vector<float> scores(5);
  std::vector<faiss::Index::idx_t> labels(5);
  stock->search(1, v.data() + 11 * kDim, 5, scores.data(), labels.data());
  const auto hits = c->search(Target::kImages, v.data() + 11 * kDim, 1, 5);
  EXPECT_EQ(std::vector<int64_t>(labels.begin(), labels.end()), hit_ids(hits[0]));
  EXPECT_EQ(labels[0], ids_[11]);
  std::unique_ptr<faiss::Index> texts(faiss::read_index(file("texts.faiss").c_str()));
  EXPECT_EQ(texts->ntotal, 2);
}

TEST_F(CollectionTest, RejectsBadArguments) {
  CollectionOptions o = options();
  o.index_type = "NotAnIndex42";
  EXPECT_EQ(kind_of([&] { Collection::open(dir_, o); }), ErrorKind::kInvalidArgument);
  o.index_type = "IDMap,Flat";
  EXPECT_EQ(kind_of([&] { Collection::open(dir_, o); }), ErrorKind::kInvalidArgument);
  o = options();
  o.model_fingerprint = "";
  EXPECT_EQ(kind_of([&] { Collection::open(dir_, o); }), ErrorKind::kInvalidArgument);
  o = options();
  o.dim = 0;
  EXPECT_EQ(kind_of([&] { Collection::open(dir_, o); }), ErrorKind::kInvalidArgument);

  auto c = Collection::open(dir_, options());
  const auto q = random_unit_vectors(1, kDim, 1);
  EXPECT_EQ(kind_of([&] { c->search(Target::kImages, q.data(), 1, 5); }),
            ErrorKind::kUnavailable);  // nothing synced yet
  c->sync_indexes();
  EXPECT_EQ(kind_of([&] { c->search(Target::kImages, q.data(), 1, 0); }),
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(kind_of([&] { c->search(Target::kImages, q.data(), 1, Collection::kMaxSearchK + 1); }),
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(kind_of([&] { c->set_search_params({0, 10}); }), ErrorKind::kInvalidArgument);
  EXPECT_EQ(kind_of([&] { c->list_items(0, 0); }), ErrorKind::kInvalidArgument);
}

TEST_F(CollectionTest, RefusesWhatIsNotACatalog) {
  EXPECT_EQ(kind_of([&] { Collection::open_for_search(dir_ + "/nothing", kModel); }),
            ErrorKind::kNotFound);
  std::ofstream(file("catalog.sqlite"))
      << "this is not a database, just some text......" << std::string(200, 'x');
  EXPECT_EQ(kind_of([&] { Collection::open(dir_, options()); }), ErrorKind::kCorrupt);
  EXPECT_EQ(kind_of([&] { Collection::open_for_search(dir_, kModel); }), ErrorKind::kCorrupt);
}

TEST_F(CollectionTest, SearchesFromManyThreadsAtOnce) {
  auto c = Collection::open(dir_, options());
  const auto v = fill(*c, 200);
  c->sync_indexes();
  std::vector<std::thread> threads;
  std::vector<int> correct(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const int row = (t * 50 + i) % 200;
        const auto hits = c->search(Target::kImages, v.data() + row * kDim, 1, 3);
        if (!hits[0].empty() && hits[0][0].id == ids_[row] && c->item(ids_[row])) ++correct[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(correct[t], 50);
}

// The service's pattern, in one process: a writer commits and syncs batch after batch while
// other threads search the reader and one reloads it (SIGHUP). Every answer names an item the
// catalog holds, and the last reload finds every item. Under --sanitize thread this is the
// catalog's data-race check.
TEST_F(CollectionTest, ReadersSearchAndReloadWhileAWriterCommits) {
  constexpr int kBatches = 12, kPerBatch = 8;
  auto writer = Collection::open(dir_, options());
  const auto first = random_unit_vectors(kPerBatch, kDim, 7);
  std::vector<ItemWrite> seed;
  for (int i = 0; i < kPerBatch; ++i)
    seed.push_back(ok_item("seed" + std::to_string(i), &first[i * kDim]));
  writer->upsert_items(seed);
  writer->sync_indexes();
  auto reader = Collection::open_for_search(dir_, kModel);
  const auto all = random_unit_vectors(kBatches * kPerBatch, kDim, 8);

  std::atomic<bool> done{false};
  std::atomic<int> answers{0}, unknown{0}, reloads{0};
  std::vector<std::string> failures;
  std::mutex failures_mutex;
  auto guarded = [&](auto body) {
    return [&, body] {
      try {
        body();
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(failures_mutex);
        failures.push_back(e.what());
      }
    };
  };
  std::vector<std::thread> threads;
  threads.emplace_back(guarded([&] {
    for (int b = 0; b < kBatches; ++b) {
      std::vector<ItemWrite> batch;
      for (int i = 0; i < kPerBatch; ++i) {
        const int row = b * kPerBatch + i;
        batch.push_back(ok_item("item" + std::to_string(row), &all[row * kDim]));
      }
      writer->upsert_items(batch);
      writer->sync_indexes();
    }
    done = true;
  }));
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back(guarded([&, t] {
      for (int i = 0; !done || i < 20; ++i) {
        const int row = (t * 31 + i) % (kBatches * kPerBatch);
        const auto hits = reader->search(Target::kImages, &all[row * kDim], 1, 5);
        for (const auto& hit : hits[0]) {
          ++answers;
          if (!reader->item(hit.id)) ++unknown;
        }
      }
    }));
  }
  threads.emplace_back(guarded([&] {
    while (!done) {
      if (reader->reload_indexes()) ++reloads;
      std::this_thread::yield();
    }
  }));
  for (auto& th : threads) th.join();
  ASSERT_TRUE(failures.empty()) << failures.front();
  EXPECT_GT(answers.load(), 0);
  EXPECT_EQ(unknown.load(), 0);
  reader->reload_indexes();
  EXPECT_EQ(reader->index_info(Target::kImages).vectors, (kBatches + 1) * kPerBatch);
  for (int row = 0; row < kBatches * kPerBatch; row += 17) {
    const auto hits = reader->search(Target::kImages, &all[row * kDim], 1, 1);
    ASSERT_FALSE(hits[0].empty());
    EXPECT_EQ(reader->item(hits[0][0].id)->path, "item" + std::to_string(row));
  }
}

// ---- hubness-aware scoring ---------------------------------------------------------------

// The k best of `vectors` (ids[i] for row i, with h hubs[i]) for `query`, ranked as search()
// with a hub weight ranks them: by inner product less weight * h. Best first.
std::vector<SearchHit> brute_force_hub(const std::vector<float>& vectors,
                                       const std::vector<int64_t>& ids,
                                       const std::vector<float>& hubs, const float* query,
                                       float weight, int32_t k) {
  std::vector<SearchHit> scored;
  for (size_t i = 0; i < ids.size(); ++i) {
    float s = 0;
    for (int32_t j = 0; j < kDim; ++j) s += vectors[i * kDim + j] * query[j];
    scored.push_back({ids[i], s - weight * hubs[i]});
  }
  std::sort(scored.begin(), scored.end(),
            [](const SearchHit& a, const SearchHit& b) { return a.score > b.score; });
  if (scored.size() > static_cast<size_t>(k)) scored.resize(static_cast<size_t>(k));
  return scored;
}

// The same ids in the same order, and scores within 1e-5.
void expect_same_hits(const std::vector<SearchHit>& got, const std::vector<SearchHit>& want) {
  EXPECT_EQ(hit_ids(got), hit_ids(want));
  for (size_t j = 0; j < std::min(got.size(), want.size()); ++j) {
    EXPECT_NEAR(got[j].score, want[j].score, 1e-5) << "hit " << j;
  }
}

std::vector<float> uniform_hubs(int64_t n, uint32_t seed, float low = 0.f, float high = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(low, high);
  std::vector<float> h(static_cast<size_t>(n));
  for (float& x : h) x = u(rng);
  return h;
}

// Hubs that punish the nearest neighbours of `query`: the `top` rows with the highest inner
// product get h in [0.9, 1], every other row h in [0, 0.1].
std::vector<float> hubs_on_the_nearest(const std::vector<float>& vectors, const float* query,
                                       int64_t top, uint32_t seed) {
  const int64_t n = static_cast<int64_t>(vectors.size()) / kDim;
  std::vector<int64_t> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rows[i] = i;
  const auto ranked = brute_force(vectors, rows, query, static_cast<int32_t>(n));  // row numbers
  std::vector<float> h = uniform_hubs(n, seed, 0.f, 0.1f);
  for (int64_t r = 0; r < top; ++r) h[ranked[r]] += 0.9f;
  return h;
}

std::vector<int64_t> store_items_with_hubs(Collection& c, const std::vector<float>& v,
                                           const std::vector<float>& hubs,
                                           const std::string& prefix = "img") {
  std::vector<ItemWrite> batch;
  for (size_t i = 0; i < hubs.size(); ++i) {
    ItemWrite w = ok_item(prefix + std::to_string(i) + ".png", v.data() + i * kDim);
    w.hub = hubs[i];
    batch.push_back(w);
  }
  return c.upsert_items(batch);
}

std::vector<std::string> text_names(int64_t n) {
  std::vector<std::string> t;
  for (int64_t i = 0; i < n; ++i) t.push_back("text number " + std::to_string(i));
  return t;
}

// Runs `sql` on a catalog with the sqlite3 library, as someone with the sqlite3 tool would.
// Turns a catalog back into what schema version 1 wrote: no hub columns, and update triggers
// that do not look at them.
constexpr const char* kToVersion1 = R"sql(
DROP TRIGGER items_update_gen; DROP TRIGGER texts_update_gen;
ALTER TABLE items DROP COLUMN hub; ALTER TABLE texts DROP COLUMN hub;
CREATE TRIGGER items_update_gen AFTER UPDATE OF id, status, vector ON items
WHEN old.id IS NOT new.id OR old.status IS NOT new.status OR old.vector IS NOT new.vector BEGIN
  UPDATE meta SET value = value + 1 WHERE key = 'images_generation';
END;
CREATE TRIGGER texts_update_gen AFTER UPDATE OF id, vector ON texts
WHEN old.id IS NOT new.id OR old.vector IS NOT new.vector BEGIN
  UPDATE meta SET value = value + 1 WHERE key = 'texts_generation';
END;
UPDATE meta SET value = 1 WHERE key = 'schema_version';
)sql";

void exec_sql(const std::string& catalog, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(catalog.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
      << (err ? err : "") << "\n"
      << sql;
  sqlite3_free(err);
  sqlite3_close(db);
}

// The first column of the first row `sql` gives, as text ("" for none).
std::string sql_value(const std::string& catalog, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string value;
  EXPECT_EQ(sqlite3_open(catalog.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db) << "\n"
      << sql;
  if (st && sqlite3_step(st) == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(st, 0);
    if (text) value = reinterpret_cast<const char*>(text);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return value;
}

bool has_hub_column(const std::string& catalog, const std::string& table) {
  return sql_value(catalog, "SELECT COUNT(*) FROM pragma_table_info('" + table +
                                "') WHERE name = 'hub'") == "1";
}

TEST_F(CollectionTest, HubWeightedSearchMatchesBruteForce) {
  constexpr int64_t kN = 400;
  constexpr int32_t kK = 5;
  auto c = Collection::open(dir_, options());
  const auto v = random_unit_vectors(kN, kDim, 21);
  const auto hubs = uniform_hubs(kN, 22);
  ids_ = store_items_with_hubs(*c, v, hubs);
  c->sync_indexes();
  ASSERT_EQ(c->index_info(Target::kImages).index_type, "Flat");
  const auto queries = random_unit_vectors(6, kDim, 23);
  const std::vector<float> weights = {0.5f, 0.f, 0.3f, 1.f, 0.5f, 2.f};
  // A few queries (FlatShortcut) and a larger batch (FAISS), and each query alone.
  for (int64_t nq : {int64_t{3}, int64_t{6}}) {
    SCOPED_TRACE(nq);
    const auto hits = c->search(Target::kImages, queries.data(), nq, kK, weights.data());
    ASSERT_EQ(hits.size(), static_cast<size_t>(nq));
    for (int64_t q = 0; q < nq; ++q) {
      SCOPED_TRACE(q);
      ASSERT_EQ(hits[q].size(), static_cast<size_t>(kK));
      expect_same_hits(hits[q],
                       brute_force_hub(v, ids_, hubs, queries.data() + q * kDim, weights[q], kK));
    }
  }
  int reordered = 0;
  for (int q = 0; q < 6; ++q) {
    SCOPED_TRACE(q);
    const auto one = c->search(Target::kImages, queries.data() + q * kDim, 1, kK, &weights[q]);
    expect_same_hits(one[0],
                     brute_force_hub(v, ids_, hubs, queries.data() + q * kDim, weights[q], kK));
    const auto plain = brute_force(v, ids_, queries.data() + q * kDim, kK);
    if (weights[q] == 0) {
      // Weight 0: plain inner products, as without hub weights.
      EXPECT_EQ(hit_ids(one[0]), plain);
      expect_same_hits(one[0], c->search(Target::kImages, queries.data() + q * kDim, 1, kK)[0]);
    } else if (hit_ids(one[0]) != plain) {
      ++reordered;
    }
  }
  EXPECT_GE(reordered, 3) << "the hubs should change most weighted answers";
}

// The first candidates of an exact index (max(16k, 256)) hold only penalized hubs: the answer
// lies beyond them, and the search must go on asking the index until nothing left out could
// beat the k-th.
TEST_F(CollectionTest, HubWeightedSearchLooksBeyondTheFirstCandidates) {
  constexpr int64_t kN = 1500;
  auto c = Collection::open(dir_, options());
  const auto v = random_unit_vectors(kN, kDim, 31);
  auto queries = random_unit_vectors(5, kDim, 32);
  const auto hubs = hubs_on_the_nearest(v, queries.data(), 400, 33);
  ids_ = store_items_with_hubs(*c, v, hubs);
  c->sync_indexes();
  ASSERT_EQ(c->index_info(Target::kImages).index_type, "Flat");
  const std::vector<float> weights = {0.5f, 0.f, 0.5f, 0.2f, 1.f};
  for (int32_t k : {5, 10}) {
    SCOPED_TRACE(k);
    const auto want = brute_force_hub(v, ids_, hubs, queries.data(), weights[0], k);
    // The first batch of candidates search() takes on Flat: the plain top max(16k, 256).
    const auto first_batch = brute_force(v, ids_, queries.data(), std::max(16 * k, 256));
    int beyond = 0;
    for (const auto& h : want) {
      beyond += std::find(first_batch.begin(), first_batch.end(), h.id) == first_batch.end();
    }
    ASSERT_GE(beyond, 1) << "the test's hubs do not push the answer past the first candidates";
    // Alone (FlatShortcut), in a few queries, and in a batch through FAISS.
    expect_same_hits(c->search(Target::kImages, queries.data(), 1, k, weights.data())[0], want);
    for (int64_t nq : {int64_t{2}, int64_t{5}}) {
      SCOPED_TRACE(nq);
      const auto hits = c->search(Target::kImages, queries.data(), nq, k, weights.data());
      for (int64_t q = 0; q < nq; ++q) {
        SCOPED_TRACE(q);
        expect_same_hits(hits[q],
                         brute_force_hub(v, ids_, hubs, queries.data() + q * kDim, weights[q], k));
      }
    }
  }
}

// On an approximate index the hub penalty reranks the index's shortlist (max(4k, 64)
// candidates) without asking again: the answer is the k best of that shortlist by the
// penalized score, each score the hit's inner product less weight x h.
TEST_F(CollectionTest, HubWeightedSearchOnHnswReranksItsShortlist) {
  constexpr int64_t kN = 800;
  auto c = Collection::open(dir_, options("HNSW32"));
  const auto v = random_unit_vectors(kN, kDim, 61);
  const auto queries = random_unit_vectors(3, kDim, 62);
  const auto hubs = uniform_hubs(kN, 63);
  ids_ = store_items_with_hubs(*c, v, hubs);
  c->sync_indexes();
  ASSERT_EQ(c->index_info(Target::kImages).index_type, "HNSW32");
  const float w = 0.5f;
  for (int q = 0; q < 3; ++q) {
    SCOPED_TRACE(q);
    const float* query = queries.data() + q * kDim;
    const auto hits = c->search(Target::kImages, query, 1, 5, &w)[0];
    ASSERT_EQ(hits.size(), 5u);
    // The shortlist as the index gives it (plain search, 64 hits), reranked here.
    std::vector<SearchHit> reranked = c->search(Target::kImages, query, 1, 64)[0];
    for (SearchHit& h : reranked) {
      const size_t row = std::find(ids_.begin(), ids_.end(), h.id) - ids_.begin();
      h.score -= w * hubs[row];
    }
    std::stable_sort(reranked.begin(), reranked.end(),
                     [](const SearchHit& a, const SearchHit& b) { return a.score > b.score; });
    reranked.resize(5);
    expect_same_hits(hits, reranked);
  }
}

TEST_F(CollectionTest, HubWeightedTextSearchMatchesBruteForce) {
  constexpr int64_t kN = 1200;
  auto c = Collection::open(dir_, options());
  const auto v = random_unit_vectors(kN, kDim, 41);
  const auto queries = random_unit_vectors(4, kDim, 42);
  // Uniform hubs, but the nearest texts of query 3 are heavy hubs.
  auto hubs = uniform_hubs(kN, 43);
  const auto nearest = hubs_on_the_nearest(v, queries.data() + 3 * kDim, 400, 44);
  for (int64_t i = 0; i < kN; ++i) {
    if (nearest[i] > 0.5f) hubs[i] = nearest[i] + 0.5f;
  }
  const auto ids = c->add_texts(text_names(kN), v, "hubs.txt", hubs);
  ASSERT_EQ(ids.size(), static_cast<size_t>(kN));
  c->sync_indexes();
  const std::vector<float> weights = {0.5f, 0.f, 0.7f, 0.5f};
  const auto hits = c->search(Target::kTexts, queries.data(), 4, 5, weights.data());
  int reordered = 0;
  for (int q = 0; q < 4; ++q) {
    SCOPED_TRACE(q);
    expect_same_hits(hits[q],
                     brute_force_hub(v, ids, hubs, queries.data() + q * kDim, weights[q], 5));
    expect_same_hits(c->search(Target::kTexts, queries.data() + q * kDim, 1, 5, &weights[q])[0],
                     hits[q]);
    if (hit_ids(hits[q]) != brute_force(v, ids, queries.data() + q * kDim, 5)) ++reordered;
  }
  EXPECT_GE(reordered, 2);
  const auto first_batch = brute_force(v, ids, queries.data() + 3 * kDim, 256);
  int beyond = 0;
  for (const auto& h : hits[3]) {
    beyond += std::find(first_batch.begin(), first_batch.end(), h.id) == first_batch.end();
  }
  EXPECT_GE(beyond, 1);
  // The images target holds no hubs of the texts.
  EXPECT_TRUE(c->search(Target::kImages, queries.data(), 1, 5, weights.data())[0].empty());
}

TEST_F(CollectionTest, RefusesBadHubWeightsAndHubs) {
  auto c = Collection::open(dir_, options());
  const auto v = random_unit_vectors(3, kDim, 51);
  store_items_with_hubs(*c, v, {0.1f, 0.2f, 0.3f});
  c->sync_indexes();
  const auto q = random_unit_vectors(2, kDim, 52);
  const float nan = std::nanf("");
  const float inf = std::numeric_limits<float>::infinity();
  for (float bad : {-0.1f, -inf, nan, inf}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(kind_of([&] { c->search(Target::kImages, q.data(), 1, 2, &bad); }),
              ErrorKind::kInvalidArgument);
    const float pair[2] = {0.5f, bad};  // the second query's weight is wrong
    EXPECT_EQ(kind_of([&] { c->search(Target::kTexts, q.data(), 2, 2, pair); }),
              ErrorKind::kInvalidArgument);
  }
  const float zero = 0.f;
  EXPECT_EQ(c->search(Target::kImages, q.data(), 1, 3, &zero)[0].size(), 3u);

  // Texts: one finite hub per text, or none; a refused call stores nothing.
  const auto tv = random_unit_vectors(2, kDim, 53);
  for (const std::vector<float>& bad :
       {std::vector<float>{0.1f}, std::vector<float>{0.1f, 0.2f, 0.3f},
        std::vector<float>{0.1f, nan}, std::vector<float>{inf, 0.1f}}) {
    EXPECT_EQ(kind_of([&] {
                c->add_texts({"one", "two"}, tv, "s", bad);
              }),
              ErrorKind::kInvalidArgument);
  }
  EXPECT_EQ(c->text_count(), 0);
  EXPECT_EQ(c->add_texts({"one", "two"}, tv, "s").size(), 2u);  // no hubs: all 0
  EXPECT_EQ(c->text_count(), 2);

  // Items: an ok item's hub must be finite; the batch is all or nothing.
  ItemWrite good = ok_item("good.png", v.data());
  ItemWrite bad = ok_item("bad.png", v.data() + kDim);
  for (float h : {nan, inf, -inf}) {
    bad.hub = h;
    EXPECT_EQ(kind_of([&] { c->upsert_items({good, bad}); }), ErrorKind::kInvalidArgument);
  }
  EXPECT_EQ(c->item_count(), 3);
  EXPECT_FALSE(c->find_item_by_path("good.png"));
}

TEST_F(CollectionTest, HubsSurviveReopening) {
  constexpr int64_t kN = 300;
  const auto v = random_unit_vectors(kN, kDim, 61);
  const auto tv = random_unit_vectors(kN, kDim, 62);
  const auto queries = random_unit_vectors(3, kDim, 63);
  const auto hubs = hubs_on_the_nearest(v, queries.data(), 100, 64);
  const auto text_hubs = uniform_hubs(kN, 65);
  std::vector<int64_t> text_ids;
  {
    auto c = Collection::open(dir_, options());
    ids_ = store_items_with_hubs(*c, v, hubs);
    text_ids = c->add_texts(text_names(kN), tv, "t", text_hubs);
    c->sync_indexes();
  }
  const std::vector<float> weights = {0.5f, 0.f, 0.8f};
  auto check = [&](const Collection& c) {
    const auto images = c.search(Target::kImages, queries.data(), 3, 5, weights.data());
    const auto texts = c.search(Target::kTexts, queries.data(), 3, 5, weights.data());
    for (int q = 0; q < 3; ++q) {
      SCOPED_TRACE(q);
      const float* query = queries.data() + q * kDim;
      expect_same_hits(images[q], brute_force_hub(v, ids_, hubs, query, weights[q], 5));
      expect_same_hits(texts[q], brute_force_hub(tv, text_ids, text_hubs, query, weights[q], 5));
    }
  };
  // A reader loads the FAISS files as written (not rebuilt) with the catalog's hubs.
  const auto images_written = fs::last_write_time(file("images.faiss"));
  const auto texts_written = fs::last_write_time(file("texts.faiss"));
  {
    SCOPED_TRACE("reader");
    auto reader = Collection::open_for_search(dir_, kModel);
    EXPECT_EQ(fs::last_write_time(file("images.faiss")), images_written);
    EXPECT_EQ(fs::last_write_time(file("texts.faiss")), texts_written);
    check(*reader);
  }
  {
    SCOPED_TRACE("writer");
    auto writer = Collection::open(dir_, options());
    writer->sync_indexes();
    check(*writer);
  }
  {
    SCOPED_TRACE("reader rebuilding a deleted file");
    fs::remove(file("images.faiss"));
    auto reader = Collection::open_for_search(dir_, kModel);
    EXPECT_TRUE(fs::exists(file("images.faiss")));
    check(*reader);
  }
  {
    SCOPED_TRACE("reader reloading what a writer synced");
    auto reader = Collection::open_for_search(dir_, kModel);
    auto writer = Collection::open(dir_, options());
    ItemWrite hub = ok_item("a-hub.png", queries.data());  // the best match of query 0...
    hub.hub = 2.f;                                         // ...but a heavy hub
    const int64_t id = writer->upsert_items({hub})[0];
    writer->sync_indexes();
    ASSERT_TRUE(reader->reload_indexes());
    const auto plain = reader->search(Target::kImages, queries.data(), 1, 1)[0];
    ASSERT_EQ(plain.size(), 1u);
    EXPECT_EQ(plain[0].id, id);
    auto all_v = v;
    all_v.insert(all_v.end(), queries.begin(), queries.begin() + kDim);
    auto all_ids = ids_;
    all_ids.push_back(id);
    auto all_hubs = hubs;
    all_hubs.push_back(2.f);
    const auto want = brute_force_hub(all_v, all_ids, all_hubs, queries.data(), 0.8f, 5);
    const float w = 0.8f;
    expect_same_hits(reader->search(Target::kImages, queries.data(), 1, 5, &w)[0], want);
    const auto want_ids = hit_ids(want);
    EXPECT_EQ(std::count(want_ids.begin(), want_ids.end(), id), 0);
  }
}

// A catalog written before hubness-aware scoring (schema version 1: no hub columns).
TEST_F(CollectionTest, AVersion1CatalogIsSearchedWithoutHubsUntilAWriterUpgradesIt) {
  constexpr int64_t kN = 200;
  const auto v = random_unit_vectors(kN, kDim, 71);
  const auto tv = random_unit_vectors(20, kDim, 72);
  const auto queries = random_unit_vectors(2, kDim, 73);
  const auto hubs = hubs_on_the_nearest(v, queries.data(), 50, 74);
  std::vector<int64_t> text_ids;
  {
    auto c = Collection::open(dir_, options());
    ids_ = store_items_with_hubs(*c, v, hubs);
    text_ids = c->add_texts(text_names(20), tv, "t", uniform_hubs(20, 75));
    c->sync_indexes();
  }
  const std::string catalog = file("catalog.sqlite");
  ASSERT_EQ(sql_value(catalog, "SELECT value FROM meta WHERE key = 'schema_version'"), "2");
  ASSERT_TRUE(has_hub_column(catalog, "items"));
  ASSERT_TRUE(has_hub_column(catalog, "texts"));
  exec_sql(catalog, kToVersion1);
  ASSERT_FALSE(has_hub_column(catalog, "items"));
  ASSERT_FALSE(has_hub_column(catalog, "texts"));

  const std::vector<float> weights = {0.5f, 1.f};
  const std::vector<float> no_hubs(kN, 0.f);
  const std::vector<float> no_text_hubs(20, 0.f);
  // Hub weights change nothing: every h reads as 0.
  auto expect_plain = [&](const Collection& c) {
    const auto images = c.search(Target::kImages, queries.data(), 2, 5, weights.data());
    const auto texts = c.search(Target::kTexts, queries.data(), 2, 5, weights.data());
    for (int q = 0; q < 2; ++q) {
      SCOPED_TRACE(q);
      const float* query = queries.data() + q * kDim;
      expect_same_hits(images[q], brute_force_hub(v, ids_, no_hubs, query, 0.f, 5));
      expect_same_hits(texts[q], brute_force_hub(tv, text_ids, no_text_hubs, query, 0.f, 5));
    }
  };
  {
    SCOPED_TRACE("reader, files as written");
    auto reader = Collection::open_for_search(dir_, kModel);
    expect_plain(*reader);
    EXPECT_EQ(reader->item_count(), kN);
  }
  {
    SCOPED_TRACE("reader rebuilding the files");
    fs::remove(file("images.faiss"));
    fs::remove(file("texts.faiss"));
    auto reader = Collection::open_for_search(dir_, kModel);
    expect_plain(*reader);
  }
  // A reader leaves the catalog as it found it.
  EXPECT_EQ(sql_value(catalog, "SELECT value FROM meta WHERE key = 'schema_version'"), "1");
  EXPECT_FALSE(has_hub_column(catalog, "items"));

  // A writer upgrades it; the rows stored before hold no hubs.
  auto writer = Collection::open(dir_, options());
  EXPECT_EQ(sql_value(catalog, "SELECT value FROM meta WHERE key = 'schema_version'"), "2");
  EXPECT_TRUE(has_hub_column(catalog, "items"));
  EXPECT_TRUE(has_hub_column(catalog, "texts"));
  writer->sync_indexes();
  expect_plain(*writer);
  // What it stores from now on keeps its hub.
  ItemWrite hub = ok_item("a-hub.png", queries.data());  // query 0's best match, a heavy hub
  hub.hub = 1.8f;
  const int64_t id = writer->upsert_items({hub})[0];
  const std::vector<float> text_hub_v(queries.begin() + kDim, queries.begin() + 2 * kDim);
  const int64_t text_id = writer->add_texts({"a text hub"}, text_hub_v, "t", {1.8f})[0];
  writer->sync_indexes();
  auto all_v = v;
  all_v.insert(all_v.end(), queries.begin(), queries.begin() + kDim);
  auto all_ids = ids_;
  all_ids.push_back(id);
  auto all_hubs = no_hubs;
  all_hubs.push_back(1.8f);
  auto all_tv = tv;
  all_tv.insert(all_tv.end(), queries.begin() + kDim, queries.begin() + 2 * kDim);
  auto all_text_ids = text_ids;
  all_text_ids.push_back(text_id);
  auto all_text_hubs = no_text_hubs;
  all_text_hubs.push_back(1.8f);
  auto expect_hubs_used = [&](const Collection& c) {
    EXPECT_EQ(c.search(Target::kImages, queries.data(), 1, 1)[0].at(0).id, id);
    EXPECT_EQ(c.search(Target::kTexts, queries.data() + kDim, 1, 1)[0].at(0).id, text_id);
    const auto images = c.search(Target::kImages, queries.data(), 2, 5, weights.data());
    const auto texts = c.search(Target::kTexts, queries.data(), 2, 5, weights.data());
    for (int q = 0; q < 2; ++q) {
      SCOPED_TRACE(q);
      const float* query = queries.data() + q * kDim;
      const auto want = brute_force_hub(all_v, all_ids, all_hubs, query, weights[q], 5);
      expect_same_hits(images[q], want);
      const auto want_texts =
          brute_force_hub(all_tv, all_text_ids, all_text_hubs, query, weights[q], 5);
      expect_same_hits(texts[q], want_texts);
    }
    // Penalized by 0.5 * 1.8 and 1 * 1.8, the hubs fall out of their queries' top 5.
    const auto img = hit_ids(images[0]);
    EXPECT_EQ(std::count(img.begin(), img.end(), id), 0);
    const auto txt = hit_ids(texts[1]);
    EXPECT_EQ(std::count(txt.begin(), txt.end(), text_id), 0);
  };
  {
    SCOPED_TRACE("writer");
    expect_hubs_used(*writer);
  }
  writer.reset();
  {
    SCOPED_TRACE("reader after the upgrade");
    expect_hubs_used(*Collection::open_for_search(dir_, kModel));
  }
}

// A stored vector that takes a new h (same vector): the next sync searches with the new h.
TEST_F(CollectionTest, ANewHubForTheSameVectorIsSearchedAfterSync) {
  auto c = Collection::open(dir_, options());
  const auto v = random_unit_vectors(50, kDim, 81);
  std::vector<float> hubs(50, 0.f);
  ids_ = store_items_with_hubs(*c, v, hubs);
  const auto text_ids = c->add_texts(text_names(50), v, "t", hubs);
  c->sync_indexes();
  const float w = 1.f;
  ASSERT_EQ(c->search(Target::kImages, v.data(), 1, 1, &w)[0].at(0).id, ids_[0]);
  ASSERT_EQ(c->search(Target::kTexts, v.data(), 1, 1, &w)[0].at(0).id, text_ids[0]);
  // Row 0 becomes a heavy hub, its vector unchanged.
  hubs[0] = 2.f;
  ItemWrite again = ok_item("img0.png", v.data());
  again.hub = 2.f;
  EXPECT_EQ(c->upsert_items({again})[0], ids_[0]);
  EXPECT_EQ(c->add_texts({text_names(1)[0]}, {v.begin(), v.begin() + kDim}, "t", {2.f})[0],
            text_ids[0]);
  c->sync_indexes();
  {
    SCOPED_TRACE("writer, images");
    expect_same_hits(c->search(Target::kImages, v.data(), 1, 5, &w)[0],
                     brute_force_hub(v, ids_, hubs, v.data(), w, 5));
  }
  {
    SCOPED_TRACE("writer, texts");
    expect_same_hits(c->search(Target::kTexts, v.data(), 1, 5, &w)[0],
                     brute_force_hub(v, text_ids, hubs, v.data(), w, 5));
  }
  // And so does a reader that opens the catalog now.
  auto reader = Collection::open_for_search(dir_, kModel);
  {
    SCOPED_TRACE("reader, images");
    expect_same_hits(reader->search(Target::kImages, v.data(), 1, 5, &w)[0],
                     brute_force_hub(v, ids_, hubs, v.data(), w, 5));
  }
  {
    SCOPED_TRACE("reader, texts");
    expect_same_hits(reader->search(Target::kTexts, v.data(), 1, 5, &w)[0],
                     brute_force_hub(v, text_ids, hubs, v.data(), w, 5));
  }
}

// A reader opened on a version 1 catalog that a writer then upgrades and fills with hubs:
// after reload_indexes it ranks as the writer does.
TEST_F(CollectionTest, AReaderOfAVersion1CatalogSeesHubsAfterAWriterUpgradesIt) {
  const auto v = random_unit_vectors(50, kDim, 91);
  {
    auto c = Collection::open(dir_, options());
    ids_ = store_items_with_hubs(*c, v, std::vector<float>(50, 0.f));
    c->sync_indexes();
  }
  exec_sql(file("catalog.sqlite"), kToVersion1);
  auto reader = Collection::open_for_search(dir_, kModel);
  auto writer = Collection::open(dir_, options());
  ItemWrite hub = ok_item("a-hub.png", v.data());
  hub.hub = 2.f;
  const int64_t id = writer->upsert_items({hub})[0];
  writer->sync_indexes();
  ASSERT_TRUE(reader->reload_indexes());
  const float w = 1.f;
  const auto wh = writer->search(Target::kImages, v.data(), 1, 3, &w)[0];
  const auto rh = reader->search(Target::kImages, v.data(), 1, 3, &w)[0];
  EXPECT_EQ(hit_ids(wh), hit_ids(rh));
  const auto writer_ids = hit_ids(wh);
  EXPECT_EQ(std::count(writer_ids.begin(), writer_ids.end(), id), 0);  // (h 2, weight 1)
}

}  // namespace
}  // namespace mms
