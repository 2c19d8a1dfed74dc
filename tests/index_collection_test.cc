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

}  // namespace
}  // namespace mms
