// Compound queries and filters (index/query.h), as the CLI and the HTTP service call them.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>

#include "common/error.h"
#include "error_testing.h"
#include "index/collection.h"
#include "index/query.h"

namespace mms {
namespace {

namespace fs = std::filesystem;
using Kind = QueryTerm::Kind;

constexpr int32_t kDim = 8;

std::vector<float> unit(std::vector<float> v) {
  double n = 0;
  for (float x : v) n += x * x;
  for (float& x : v) x = static_cast<float>(x / std::sqrt(n));
  return v;
}

// The i-th standard basis vector.
std::vector<float> axis(int i) {
  std::vector<float> v(kDim, 0.f);
  v[i] = 1.f;
  return v;
}

using testing::kind_of;

QueryTerm term(Kind kind, float weight = 1.f, std::string text = "") {
  QueryTerm t;
  t.kind = kind;
  t.weight = weight;
  t.text = std::move(text);
  return t;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ParseQuery, ReadsWeightsSignsAndEveryKindOfTerm) {
  const auto t = parse_query(
      "2 * \"golden retriever\" + image:photo.jpg - fruit bowl + item:42 + 0.5*vector:e.json");
  ASSERT_EQ(t.size(), 5u);
  EXPECT_EQ(t[0].kind, Kind::kText);
  EXPECT_EQ(t[0].text, "golden retriever");
  EXPECT_FLOAT_EQ(t[0].weight, 2.f);
  EXPECT_EQ(t[1].kind, Kind::kImage);
  EXPECT_EQ(t[1].text, "photo.jpg");
  EXPECT_EQ(t[2].kind, Kind::kText);
  EXPECT_EQ(t[2].text, "fruit bowl");  // bare words run on until the next operator
  EXPECT_FLOAT_EQ(t[2].weight, -1.f);
  EXPECT_EQ(t[3].kind, Kind::kItem);
  EXPECT_EQ(t[3].item, 42);
  EXPECT_EQ(t[4].kind, Kind::kVector);
  EXPECT_EQ(t[4].text, "e.json");
  EXPECT_FLOAT_EQ(t[4].weight, 0.5f);
}

TEST(ParseQuery, KeepsHyphensQuotesAndEscapesInsideTexts) {
  const auto t = parse_query("a red t-shirt");
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].text, "a red t-shirt");
  const auto q = parse_query(R"(-3 * "say \"hi\" + \\ bye" + image:"my photo.png")");
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q[0].text, R"(say "hi" + \ bye)");
  EXPECT_FLOAT_EQ(q[0].weight, -3.f);
  EXPECT_EQ(q[1].text, "my photo.png");
  EXPECT_FLOAT_EQ(parse_query("- cat")[0].weight, -1.f);
}

TEST(ParseQuery, NamesWhatIsWrong) {
  for (const char* bad : {"", "   ", "cat +", "2 * ", "x * cat", "\"open", "item:abc",
                          "image:", "\"a\" \"b\"", "nan * cat"}) {
    EXPECT_EQ(kind_of([&] { parse_query(bad); }), ErrorKind::kInvalidArgument) << bad;
  }
  EXPECT_NE(message_of([] { parse_query("cat + \"dog"); }).find("character 7"), std::string::npos);
}

class QueryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "mms_query_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    CollectionOptions o;
    o.model_fingerprint = "model-q";
    o.dim = kDim;
    c_ = Collection::open(dir_, o);
  }
  void TearDown() override {
    c_.reset();
    fs::remove_all(dir_);
  }

  int64_t add(const std::string& path, const std::vector<float>& v, const std::string& hash = "",
              float hub = 0) {
    ItemWrite w;
    w.path = path;
    w.size = 10;
    w.content_hash = hash.empty() ? "hash:" + path : hash;
    w.vector = unit(v);
    w.hub = hub;
    return c_->upsert_items({w})[0];
  }

  // Texts embed to fixed vectors; files are refused, as the service does.
  TermEmbedder embedder() {
    return {[this](const std::string& text) { return texts_.at(text); },
            [](const std::string& file) -> std::vector<float> {
              throw Error::invalid_argument("no files: " + file);
            },
            [](const std::string& file) { return read_vector_file(file); }};
  }

  std::vector<SearchResult> run(const std::vector<float>& q, int32_t k, const QueryFilters& f,
                                std::vector<int32_t>* fetches = nullptr) {
    c_->sync_indexes();
    return search_filtered(*c_, SearchTarget::kImages, k, f, [&](int32_t fetch) {
      if (fetches) fetches->push_back(fetch);
      return c_->search(Collection::Target::kImages, q.data(), 1, fetch)[0];
    });
  }

  std::string dir_;
  std::unique_ptr<Collection> c_;
  std::map<std::string, std::vector<float>> texts_ = {{"dog", axis(0)}, {"fruit", axis(1)}};
};

TEST_F(QueryTest, ComposesTheNormalizedWeightedSum) {
  const int64_t photo = add("/p/photo.jpg", axis(2));
  QueryTerm dog = term(Kind::kText, 2.f, "dog");
  QueryTerm fruit = term(Kind::kText, -1.f, "fruit");
  QueryTerm item = term(Kind::kItem, 1.f);
  item.item = photo;
  QueryTerm raw = term(Kind::kVector, 2.f);
  raw.vector = std::vector<float>(kDim, 0.f);
  raw.vector[3] = 10.f;  // any norm: unit-normalized before weighting
  const auto q = compose_query(*c_, {dog, fruit, item, raw}, embedder());
  const auto expected = unit({2.f, -1.f, 1.f, 2.f, 0, 0, 0, 0});
  ASSERT_EQ(q.size(), static_cast<size_t>(kDim));
  for (int i = 0; i < kDim; ++i) EXPECT_NEAR(q[i], expected[i], 1e-6) << i;
}

TEST_F(QueryTest, RefusesQueriesThatCannotMeanAnything) {
  add("/p/a.jpg", axis(0));
  QueryTerm dog = term(Kind::kText, 1.f, "dog");
  QueryTerm minus_dog = term(Kind::kText, -1.f, "dog");
  EXPECT_EQ(kind_of([&] { compose_query(*c_, {}, embedder()); }), ErrorKind::kInvalidArgument);
  EXPECT_EQ(kind_of([&] {
              compose_query(*c_, {dog, minus_dog}, embedder());
            }),
            ErrorKind::kInvalidArgument);
  QueryTerm zero = dog;
  zero.weight = 0;
  EXPECT_EQ(kind_of([&] { compose_query(*c_, {zero}, embedder()); }), ErrorKind::kInvalidArgument);
  QueryTerm missing = term(Kind::kItem);
  missing.item = 999;
  EXPECT_EQ(kind_of([&] { compose_query(*c_, {missing}, embedder()); }), ErrorKind::kNotFound);
  QueryTerm short_vector = term(Kind::kVector);
  short_vector.vector = {1.f, 2.f};
  EXPECT_EQ(kind_of([&] { compose_query(*c_, {short_vector}, embedder()); }),
            ErrorKind::kInvalidArgument);
  QueryTerm image = term(Kind::kImage, 1.f, "/etc/passwd");
  EXPECT_EQ(kind_of([&] { compose_query(*c_, {image}, embedder()); }), ErrorKind::kInvalidArgument);
}

TEST_F(QueryTest, ReadsVectorFilesAsArraysOrEmbedAnswers) {
  const fs::path a = fs::path(dir_) / "a.json", b = fs::path(dir_) / "b.json";
  std::ofstream(a) << "[0, 0, 3, 0, 0, 0, 0, 0]";
  std::ofstream(b) << R"({"embedding": [0, 0, 0, 0, 0, 0, 0, 1], "dim": 8})";
  EXPECT_EQ(read_vector_file(a.string())[2], 3.f);
  EXPECT_EQ(read_vector_file(b.string()).size(), 8u);
  std::ofstream(a) << "[1, \"x\"]";
  EXPECT_EQ(kind_of([&] { read_vector_file(a.string()); }), ErrorKind::kInvalidArgument);
  std::ofstream(a) << "[1, 1e300]";  // beyond a float: refused, not an infinite query
  EXPECT_EQ(kind_of([&] { read_vector_file(a.string()); }), ErrorKind::kInvalidArgument);
  EXPECT_EQ(kind_of([&] { read_vector_file(dir_ + "/none.json"); }), ErrorKind::kNotFound);
}

TEST_F(QueryTest, MinScoreCutsInsteadOfAlwaysReturningK) {
  add("/p/near.jpg", {1, 0.1f, 0, 0, 0, 0, 0, 0});
  add("/p/mid.jpg", {1, 1, 0, 0, 0, 0, 0, 0});
  add("/p/far.jpg", axis(5));
  QueryFilters f;
  f.min_score = 0.5f;
  const auto r = run(axis(0), 10, f);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].path, "/p/near.jpg");
  EXPECT_EQ(r[1].path, "/p/mid.jpg");
  f.min_score = 1.5f;
  EXPECT_EQ(kind_of([&] { run(axis(0), 10, f); }), ErrorKind::kInvalidArgument);
}

TEST_F(QueryTest, PathPrefixIsAFolderAndFetchesPastTheFirstHits) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  // 300 items close to the query elsewhere, and two far ones in the folder asked for.
  for (int i = 0; i < 300; ++i) {
    std::vector<float> v(kDim);
    for (float& x : v) x = 0.05f * normal(rng);
    v[0] += 1.f;
    add("/photos/other/" + std::to_string(i) + ".jpg", v);
  }
  add("/photos/cats/a.jpg", axis(4));
  add("/photos/cats/b.jpg", {0.1f, 0, 0, 0, 1, 0, 0, 0});
  add("/photos/catsup.jpg", axis(0));  // a name prefix, not in the folder
  QueryFilters f;
  f.path_prefix = "/photos/cats";
  std::vector<int32_t> fetches;
  const auto r = run(axis(0), 5, f, &fetches);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].path, "/photos/cats/b.jpg");
  EXPECT_EQ(r[1].path, "/photos/cats/a.jpg");
  EXPECT_GT(fetches.size(), 1u);  // the first fetch held only other folders' items
  f.path_prefix = "/photos/cats/";
  EXPECT_EQ(run(axis(0), 5, f).size(), 2u);
  f.path_prefix = "/photos/cats/a.jpg";  // a file is its own folder
  EXPECT_EQ(run(axis(0), 5, f).size(), 1u);
  QueryFilters texts;
  texts.path_prefix = "/photos";
  EXPECT_EQ(kind_of([&] { check_filters(texts, SearchTarget::kTexts); }),
            ErrorKind::kInvalidArgument);
}

TEST_F(QueryTest, DedupFoldsSameFilesAndNearIdenticalVectorsIntoTheBest) {
  const int64_t best = add("/p/best.jpg", axis(0));
  const int64_t copy = add("/p/copy-of-best.jpg", {1, 0.3f, 0, 0, 0, 0, 0, 0}, "hash:/p/best.jpg");
  const int64_t resized = add("/p/resized.jpg", {1, 0.01f, 0, 0, 0, 0, 0, 0});
  const int64_t other = add("/p/other.jpg", {1, 1, 0, 0, 0, 0, 0, 0});
  QueryFilters f;
  EXPECT_EQ(run(axis(0), 3, f).size(), 3u);
  f.dedup = true;
  const auto r = run(axis(0), 3, f);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].id, best);
  EXPECT_EQ(r[0].duplicates, (std::vector<int64_t>{resized, copy}));
  EXPECT_EQ(r[1].id, other);
  EXPECT_TRUE(r[1].duplicates.empty());
}

TEST_F(QueryTest, WithoutFiltersItIsPlainSearch) {
  for (int i = 0; i < kDim; ++i) add("/p/" + std::to_string(i) + ".jpg", axis(i));
  std::vector<int32_t> fetches;
  const auto r = run(unit({3, 2, 1, 0, 0, 0, 0, 0}), 3, QueryFilters{}, &fetches);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].path, "/p/0.jpg");
  EXPECT_EQ(r[2].path, "/p/2.jpg");
  EXPECT_EQ(fetches, std::vector<int32_t>{3});
  EXPECT_EQ(search_query(*c_, axis(1), SearchTarget::kImages, 1, QueryFilters{})[0].path,
            "/p/1.jpg");
}

// ---- hubness-aware scoring ---------------------------------------------------------------

QueryTerm from_image_vector(float weight = 1.f) {
  QueryTerm t = term(Kind::kVector, weight);
  t.vector = axis(0);
  t.from_image = true;
  return t;
}

TEST(QueryHubWeight, IsTheModelWeightTimesTheShareOfTheOtherModality) {
  constexpr float kW = 0.4f;
  const auto images = SearchTarget::kImages, texts = SearchTarget::kTexts;
  const QueryTerm text = term(Kind::kText, 1.f, "dog");
  const QueryTerm image = term(Kind::kImage, 1.f, "photo.jpg");
  const QueryTerm item = term(Kind::kItem);
  const QueryTerm raw = term(Kind::kVector);
  // One term: across modalities the whole weight, within one none.
  EXPECT_FLOAT_EQ(query_hub_weight({text}, images, kW), kW);
  EXPECT_FLOAT_EQ(query_hub_weight({image}, images, kW), 0.f);
  EXPECT_FLOAT_EQ(query_hub_weight({item}, images, kW), 0.f);
  EXPECT_FLOAT_EQ(query_hub_weight({text}, texts, kW), 0.f);
  EXPECT_FLOAT_EQ(query_hub_weight({image}, texts, kW), kW);
  EXPECT_FLOAT_EQ(query_hub_weight({item}, texts, kW), kW);
  // A raw vector is of neither modality; an uploaded image's vector is an image.
  EXPECT_FLOAT_EQ(query_hub_weight({raw}, images, kW), 0.f);
  EXPECT_FLOAT_EQ(query_hub_weight({raw}, texts, kW), 0.f);
  EXPECT_FLOAT_EQ(query_hub_weight({from_image_vector()}, texts, kW), kW);
  EXPECT_FLOAT_EQ(query_hub_weight({from_image_vector()}, images, kW), 0.f);
  // Mixed queries: the share by absolute weight; raw vectors count only in the whole.
  EXPECT_FLOAT_EQ(query_hub_weight({term(Kind::kText, 2.f, "dog"), image}, images, kW),
                  kW * 2.f / 3.f);
  EXPECT_FLOAT_EQ(query_hub_weight({term(Kind::kText, 2.f, "dog"), image}, texts, kW), kW / 3.f);
  EXPECT_FLOAT_EQ(query_hub_weight({text, raw}, images, kW), kW / 2.f);
  EXPECT_FLOAT_EQ(query_hub_weight({text, term(Kind::kVector, 3.f)}, texts, kW), 0.f);
  EXPECT_FLOAT_EQ(query_hub_weight({item, from_image_vector(2.f), text}, texts, kW),
                  kW * 3.f / 4.f);
  // Negative weights count by their size.
  EXPECT_FLOAT_EQ(query_hub_weight({term(Kind::kText, -1.f, "fruit")}, images, kW), kW);
  EXPECT_FLOAT_EQ(query_hub_weight({term(Kind::kText, -3.f, "fruit"), image}, images, kW),
                  kW * 3.f / 4.f);
  EXPECT_FLOAT_EQ(query_hub_weight({text, term(Kind::kImage, -1.f, "x.jpg")}, images, kW),
                  kW / 2.f);
  // A model without hub banks (weight 0) gives 0 whatever the query.
  EXPECT_FLOAT_EQ(query_hub_weight({text}, images, 0.f), 0.f);
  EXPECT_FLOAT_EQ(query_hub_weight({}, images, kW), 0.f);
}

// Two items whose cosines to the query differ by 0.05 and whose hubs differ by 0.5: a hub
// weight of 0.3 takes 0.15 from the nearer one and turns the order around.
TEST_F(QueryTest, SearchQueryRanksWithTheHubWeight) {
  const float s = std::sqrt(1.f - 0.9f * 0.9f), t = std::sqrt(1.f - 0.85f * 0.85f);
  const int64_t hub = add("/p/hub.jpg", {0.9f, s, 0, 0, 0, 0, 0, 0}, "", 0.5f);
  const int64_t plain = add("/p/plain.jpg", {0.85f, 0, t, 0, 0, 0, 0, 0}, "", 0.f);
  add("/p/far.jpg", axis(5), "", 0.f);
  c_->sync_indexes();
  const auto unweighted = search_query(*c_, axis(0), SearchTarget::kImages, 2, QueryFilters{});
  ASSERT_EQ(unweighted.size(), 2u);
  EXPECT_EQ(unweighted[0].id, hub);
  EXPECT_NEAR(unweighted[0].score, 0.9f, 1e-5);
  EXPECT_EQ(unweighted[1].id, plain);
  EXPECT_NEAR(unweighted[1].score, 0.85f, 1e-5);
  const auto zero = search_query(*c_, axis(0), SearchTarget::kImages, 2, QueryFilters{}, 0.f);
  ASSERT_EQ(zero.size(), 2u);
  EXPECT_EQ(zero[0].id, hub);
  EXPECT_EQ(zero[1].id, plain);

  const auto weighted = search_query(*c_, axis(0), SearchTarget::kImages, 2, QueryFilters{}, 0.3f);
  ASSERT_EQ(weighted.size(), 2u);
  EXPECT_EQ(weighted[0].id, plain);
  EXPECT_EQ(weighted[0].path, "/p/plain.jpg");
  EXPECT_NEAR(weighted[0].score, 0.85f, 1e-5);
  EXPECT_EQ(weighted[1].id, hub);
  EXPECT_NEAR(weighted[1].score, 0.9f - 0.3f * 0.5f, 1e-5);
  // Filters see the penalized score.
  QueryFilters f;
  f.min_score = 0.8f;
  const auto cut = search_query(*c_, axis(0), SearchTarget::kImages, 5, f, 0.3f);
  ASSERT_EQ(cut.size(), 1u);
  EXPECT_EQ(cut[0].id, plain);
  EXPECT_EQ(search_query(*c_, axis(0), SearchTarget::kImages, 5, f).size(), 2u);

  // The weight as the service derives it: a text query over images takes the model's hub
  // weight, an example image none.
  const float model_weight = 0.3f;
  const QueryTerm dog = term(Kind::kText, 1.f, "dog");
  const auto q = compose_query(*c_, {dog}, embedder());
  EXPECT_EQ(search_query(*c_, q, SearchTarget::kImages, 1, QueryFilters{},
                         query_hub_weight({dog}, SearchTarget::kImages, model_weight))[0]
                .id,
            plain);
  QueryTerm example = term(Kind::kItem);
  example.item = add("/p/example.jpg", axis(0), "", 0.f);
  c_->sync_indexes();
  const auto by_example =
      search_query(*c_, axis(0), SearchTarget::kImages, 3, QueryFilters{},
                   query_hub_weight({example}, SearchTarget::kImages, model_weight));
  ASSERT_EQ(by_example.size(), 3u);
  EXPECT_EQ(by_example[1].id, hub);
  EXPECT_EQ(by_example[2].id, plain);
}

TEST_F(QueryTest, SearchQueryRanksTextsWithTheHubWeight) {
  const float s = std::sqrt(1.f - 0.9f * 0.9f), t = std::sqrt(1.f - 0.85f * 0.85f);
  const std::vector<float> a = {0.9f, s, 0, 0, 0, 0, 0, 0};
  const std::vector<float> b = {0.85f, 0, t, 0, 0, 0, 0, 0};
  std::vector<float> vectors = unit(a);
  const auto ub = unit(b);
  vectors.insert(vectors.end(), ub.begin(), ub.end());
  const auto ids = c_->add_texts({"a hub caption", "a plain caption"}, vectors, "t", {0.5f, 0.f});
  c_->sync_indexes();
  const auto plain = search_query(*c_, axis(0), SearchTarget::kTexts, 2, QueryFilters{});
  ASSERT_EQ(plain.size(), 2u);
  EXPECT_EQ(plain[0].id, ids[0]);
  EXPECT_EQ(plain[1].text, "a plain caption");
  const auto weighted = search_query(*c_, axis(0), SearchTarget::kTexts, 2, QueryFilters{}, 0.3f);
  ASSERT_EQ(weighted.size(), 2u);
  EXPECT_EQ(weighted[0].id, ids[1]);
  EXPECT_EQ(weighted[0].text, "a plain caption");
  EXPECT_NEAR(weighted[1].score, 0.75f, 1e-5);
}

}  // namespace
}  // namespace mms
