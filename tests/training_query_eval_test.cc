// The natural-query evaluation (`mmsearch eval --queries`): which keywords become queries,
// which images answer them, and precision@10 / mAP@100 on a hand-made collection whose
// answers are worked out by hand below.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "training/manifest.h"
#include "training/query_eval.h"

namespace {

using mms::Pair;
using mms::Split;

Pair pair(const std::string& image, Split split, std::vector<std::string> keywords,
          const std::string& title = "", const std::string& caption = "a caption") {
  Pair p;
  p.image = image;
  p.caption = caption;
  p.split = split;
  p.title = title;
  p.keywords = std::move(keywords);
  return p;
}

// Six images; "cat" is named by keywords (0, 1), by a title word (3, "Cat sleeping") and by
// a caption's keyword list (5, a pair without a "keywords" field); "clip art" is generic and
// "tree" has one image only.
std::vector<Pair> collection() {
  return {
      pair("img0", Split::kTest, {"Cat", "pet"}, "Black cat"),
      pair("img1", Split::kTrain, {"cat"}),
      pair("img2", Split::kTest, {"dog", "pet"}),
      pair("img3", Split::kTest, {}, "Cat sleeping"),
      pair("img4", Split::kTrain, {"clip art", "dog"}),
      pair("img5", Split::kTrain, {}, "", "Tree. Keywords: tree,  CAT ."),
  };
}

mms::QueryEvalOptions small_options() {
  mms::QueryEvalOptions o;
  o.min_images = 2;
  o.min_split_images = 1;
  o.templates = {"a {}"};
  return o;
}

// One-hot image embeddings (dim 6): a query's score for image i is its i-th weight.
std::vector<float> one_hot_images() {
  std::vector<float> e(36, 0.0f);
  for (int i = 0; i < 6; ++i) e[i * 6 + i] = 1.0f;
  return e;
}

TEST(NaturalQueries, KeywordsNeedEnoughImagesAndAreNotGeneric) {
  const mms::NaturalQueries q = mms::natural_queries(collection(), Split::kTest, small_options());
  ASSERT_EQ(q.images.size(), 6u);
  EXPECT_EQ(q.in_split, (std::vector<uint8_t>{1, 0, 1, 1, 0, 0}));
  EXPECT_EQ(q.keywords, (std::vector<std::string>{"cat", "dog", "pet"}));
  ASSERT_EQ(q.relevant.size(), 3u);
  EXPECT_EQ(q.relevant[0], (std::vector<int32_t>{0, 1, 3, 5}));
  EXPECT_EQ(q.relevant[1], (std::vector<int32_t>{2, 4}));
  EXPECT_EQ(q.relevant[2], (std::vector<int32_t>{0, 2}));

  // The split threshold: "dog" has one test image, "cat" and "pet" two.
  mms::QueryEvalOptions strict = small_options();
  strict.min_split_images = 2;
  EXPECT_EQ(mms::natural_queries(collection(), Split::kTest, strict).keywords,
            (std::vector<std::string>{"cat", "pet"}));
  // Validation has no images here, so no keyword qualifies.
  EXPECT_TRUE(mms::natural_queries(collection(), Split::kVal, small_options()).keywords.empty());
}

TEST(NaturalQueries, GenericWordsAndNormalization) {
  EXPECT_TRUE(mms::is_generic_keyword("Clip  Art"));
  EXPECT_TRUE(mms::is_generic_keyword("icon"));
  EXPECT_TRUE(mms::is_generic_keyword("symbol"));
  EXPECT_FALSE(mms::is_generic_keyword("apple"));
  EXPECT_EQ(mms::normalize_keyword("  Christmas \t Tree "), "christmas tree");
}

TEST(QueryMetrics, FiguresWorkedOutByHand) {
  const mms::NaturalQueries q = mms::natural_queries(collection(), Split::kTest, small_options());
  // Query weights per image, keywords in order cat, dog, pet.
  const std::vector<float> queries = {
      // cat: ranks img0 (relevant), img2, img3 (relevant), img4, img1 (r), img5 (r).
      0.9f, 0.1f, 0.8f, 0.7f, 0.2f, 0.05f,
      // dog: every score tied, so both relevant images rank last (5th and 6th).
      0, 0, 0, 0, 0, 0,
      // pet: its two images first.
      1, 0, 1, 0, 0, 0};
  const mms::QueryMetrics m = mms::query_metrics(q, one_hot_images(), queries, 6, {"a {}"});
  // cat: 4 of the top 10 relevant; AP = (1/1 + 2/3 + 3/5 + 4/6) / 4.
  // dog: P@10 2/10; AP = (1/5 + 2/6) / 2.   pet: P@10 2/10; AP = 1.
  ASSERT_EQ(m.keywords.size(), 3u);
  EXPECT_NEAR(m.keywords[0].p10, 40.0, 1e-9);
  EXPECT_NEAR(m.keywords[0].ap100, 100.0 * (1 + 2 / 3.0 + 3 / 5.0 + 4 / 6.0) / 4, 1e-9);
  EXPECT_NEAR(m.keywords[1].p10, 20.0, 1e-9);
  EXPECT_NEAR(m.keywords[1].ap100, 100.0 * (1 / 5.0 + 2 / 6.0) / 2, 1e-9);
  EXPECT_NEAR(m.keywords[2].ap100, 100.0, 1e-9);
  EXPECT_EQ(m.collection.n_queries, 3);
  EXPECT_EQ(m.collection.n_images, 6);
  EXPECT_NEAR(m.collection.p10, (40.0 + 20 + 20) / 3, 1e-9);
  EXPECT_NEAR(
      m.collection.map100,
      (100.0 * (1 + 2 / 3.0 + 3 / 5.0 + 4 / 6.0) / 4 + 100.0 * (1 / 5.0 + 2 / 6.0) / 2 + 100) / 3,
      1e-9);
  // Test images alone (img0, img2, img3): cat ranks img0 (r), img2, img3 (r): AP (1 + 2/3)/2;
  // dog ranks img2 last of three: AP 1/3; pet: AP 1.
  EXPECT_EQ(m.split.n_images, 3);
  EXPECT_EQ(m.split.n_queries, 3);
  EXPECT_NEAR(m.split.p10, (20.0 + 10 + 20) / 3, 1e-9);
  EXPECT_NEAR(m.split.map100, (100.0 * (1 + 2 / 3.0) / 2 + 100.0 / 3 + 100) / 3, 1e-9);

  const std::vector<mms::KeywordFigures> best = mms::best_keywords(m, 2);
  ASSERT_EQ(best.size(), 2u);
  EXPECT_EQ(best[0].keyword, "cat");
  EXPECT_EQ(best[1].keyword, "pet");  // ties with dog on P@10, wins on AP
  EXPECT_EQ(mms::worst_keywords(m, 1).at(0).keyword, "dog");

  const nlohmann::json j = nlohmann::json::parse(mms::query_metrics_to_json(m, Split::kTest, 2));
  EXPECT_NEAR(j["collection"]["p10"].get<double>(), m.collection.p10, 1e-9);
  EXPECT_NEAR(j["test"]["map100"].get<double>(), m.split.map100, 1e-9);
  EXPECT_EQ(j["n_keywords"], 3);
  EXPECT_EQ(j["best"].size(), 2u);
  EXPECT_EQ(j["worst"][0]["keyword"], "dog");
}

TEST(QueryMetrics, TemplatesAreAveragedAndAConstantModelScoresNoBetterThanChance) {
  const mms::NaturalQueries q = mms::natural_queries(collection(), Split::kTest, small_options());
  // Two templates per keyword: the second finds every cat first.
  std::vector<float> queries = {0.9f, 0.1f, 0.8f, 0.7f, 0.2f, 0.05f, 1, 1, 0, 1, 0, 1,   // cat
                                0,    0,    0,    0,    0,    0,     0, 0, 0, 0, 0, 0,   // dog
                                1,    0,    1,    0,    0,    0,     1, 0, 1, 0, 0, 0};  // pet
  const mms::QueryMetrics m = mms::query_metrics(q, one_hot_images(), queries, 6, {"a {}", "{}"});
  EXPECT_EQ(m.collection.n_queries, 6);
  EXPECT_NEAR(m.keywords[0].ap100, (100.0 * (1 + 2 / 3.0 + 3 / 5.0 + 4 / 6.0) / 4 + 100) / 2, 1e-9);

  // Every score equal: each relevant image ranks below every irrelevant one.
  const std::vector<float> flat(3 * 6, 0.0f);
  const mms::QueryMetrics c = mms::query_metrics(q, one_hot_images(), flat, 6, {"a {}"});
  EXPECT_NEAR(c.keywords[2].ap100, 100.0 * (1 / 5.0 + 2 / 6.0) / 2, 1e-9);  // pet at 5th, 6th
  EXPECT_THROW(mms::query_metrics(q, one_hot_images(), flat, 6, {"a {}", "{}"}), mms::Error);
}

}  // namespace
