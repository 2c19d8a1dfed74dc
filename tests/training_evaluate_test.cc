// The evaluation figures as `mmsearch eval` and validation compute them: recall@K and median
// rank by the multi-caption protocol, zero-shot accuracy, and the prompt ensemble; and the
// training batch's true pairs, which decide what the loss treats as a negative.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "training/data_plan.h"
#include "training/evaluate.h"
#include "training/manifest.h"
#include "training/train_config.h"

namespace {

using mms::Pair;
using mms::Split;

Pair pair(const std::string& image, const std::string& caption) {
  Pair p;
  p.image = image;
  p.caption = caption;
  p.split = Split::kTest;
  return p;
}

// 2-d unit vector at `degrees`.
std::vector<float> at_angle(double degrees) {
  const double r = degrees * M_PI / 180.0;
  return {static_cast<float>(std::cos(r)), static_cast<float>(std::sin(r))};
}

std::vector<float> rows(const std::vector<std::vector<float>>& r) {
  std::vector<float> out;
  for (const auto& v : r) out.insert(out.end(), v.begin(), v.end());
  return out;
}

TEST(RetrievalMetrics, RanksFollowTheMultiCaptionProtocol) {
  // Images a, b, c; a has two captions. Texts: "a1", "a2", "b", "c".
  const mms::Gallery g = mms::make_gallery(
      {pair("a", "a1"), pair("a", "a2"), pair("b", "b"), pair("c", "c")}, Split::kTest);
  ASSERT_EQ(g.images.size(), 3u);
  ASSERT_EQ(g.texts.size(), 4u);
  // a at 0 deg, b at 90, c at 180. Text a1 sits on a; a2 between a and b but nearer b
  // (wrong at rank 1, right at 2); b on b; c at 100 deg, nearer b (c is ranked 2nd).
  const std::vector<float> images = rows({at_angle(0), at_angle(90), at_angle(180)});
  const std::vector<float> texts = rows({at_angle(0), at_angle(60), at_angle(90), at_angle(100)});
  const mms::RetrievalMetrics m = mms::retrieval_metrics(images, texts, 2, g);
  EXPECT_EQ(m.n_images, 3);
  EXPECT_EQ(m.n_texts, 4);
  // t2i ranks: a1 -> 1, a2 -> 2, b -> 1, c -> 2.
  EXPECT_DOUBLE_EQ(m.t2i.r1, 50.0);
  EXPECT_DOUBLE_EQ(m.t2i.r5, 100.0);
  EXPECT_DOUBLE_EQ(m.t2i.median_rank, 1.5);
  // i2t: a's best caption a1 is first; b's only caption b is first (at 90 exactly); c's
  // caption c (100 deg) is nearest to c (180) of all texts, so rank 1 too.
  EXPECT_DOUBLE_EQ(m.i2t.r1, 100.0);
  EXPECT_DOUBLE_EQ(m.i2t.median_rank, 1.0);
  // Each query's own rank, in gallery order, as `mmsearch eval --ranks` writes them.
  ASSERT_EQ(g.texts, (std::vector<std::string>{"a1", "a2", "b", "c"}));
  EXPECT_EQ(m.t2i_ranks, (std::vector<int64_t>{1, 2, 1, 2}));
  EXPECT_EQ(m.i2t_ranks, (std::vector<int64_t>{1, 1, 1}));
}

TEST(RetrievalMetrics, AHubPenaltyRanksEachDirectionAsSearchWould) {
  // The gallery of the test above. Image b (90 deg) is a hub (h 1). At weight 0.2, text a2
  // (60 deg) still scores b first (0.87 - 0.2 > 0.50 for a) and c (100 deg) b before c (0.98
  // - 0.2 > 0.17): the ranks stay 1, 2, 1, 2.
  const mms::Gallery g = mms::make_gallery(
      {pair("a", "a1"), pair("a", "a2"), pair("b", "b"), pair("c", "c")}, Split::kTest);
  const std::vector<float> images = rows({at_angle(0), at_angle(90), at_angle(180)});
  const std::vector<float> texts = rows({at_angle(0), at_angle(60), at_angle(90), at_angle(100)});
  mms::HubPenalty hubs;
  hubs.weight = 0.2f;
  hubs.images = {0.f, 1.f, 0.f};
  hubs.texts = {0.f, 0.f, 0.f, 0.f};
  EXPECT_EQ(mms::retrieval_metrics(images, texts, 2, g, hubs).t2i_ranks,
            (std::vector<int64_t>{1, 2, 1, 2}));
  // At weight 0.5 b pays 0.5: a2 now finds a first (0.50 > 0.37); c still scores b (0.48)
  // above its own image c (0.17).
  hubs.weight = 0.5f;
  EXPECT_EQ(mms::retrieval_metrics(images, texts, 2, g, hubs).t2i_ranks,
            (std::vector<int64_t>{1, 1, 1, 2}));
  // Image->text: caption c (100 deg, cos 0.17) is the text nearest to image c (180 deg);
  // with text c a hub (h 1, weight 0.5) it falls to -0.33, below text b (0).
  hubs.images = {0.f, 0.f, 0.f};
  hubs.texts = {0.f, 0.f, 0.f, 1.f};
  const std::vector<int64_t> i2t = mms::retrieval_metrics(images, texts, 2, g, hubs).i2t_ranks;
  EXPECT_EQ(i2t[0], 1);
  EXPECT_GT(i2t[2], 1);
  // Wrong sizes are told.
  hubs.texts = {0.f};
  EXPECT_THROW(mms::retrieval_metrics(images, texts, 2, g, hubs), mms::Error);
}

TEST(ZeroShot, AHubPenaltyOnAPromptMovesItsImagesToTheNext) {
  // Two prompts at 0 and 90 deg; images at 30 deg (class 0) and 50 deg (class 1, nearer
  // prompt 1 by 40 vs 50 deg). Prompt 1 a hub (h 1) at weight 0.2 loses image 2 to prompt 0.
  const std::vector<float> images = rows({at_angle(30), at_angle(50)});
  const std::vector<float> prompts = rows({at_angle(0), at_angle(90)});
  EXPECT_DOUBLE_EQ(mms::zero_shot_accuracy(images, prompts, 2, {0, 1}), 100.0);
  EXPECT_DOUBLE_EQ(mms::zero_shot_accuracy(images, prompts, 2, {0, 1}, 0.2f, {0.f, 1.f}), 50.0);
  EXPECT_DOUBLE_EQ(mms::zero_shot_accuracy(images, prompts, 2, {0, 1}, 0.f, {0.f, 1.f}), 100.0);
}

TEST(RetrievalMetrics, AConstantModelScoresAtChanceNotAbove) {
  const mms::Gallery g =
      mms::make_gallery({pair("a", "x"), pair("b", "y"), pair("c", "z")}, Split::kTest);
  const std::vector<float> same = rows({at_angle(0), at_angle(0), at_angle(0)});
  const mms::RetrievalMetrics m = mms::retrieval_metrics(same, same, 2, g);
  // Ties rank the relevant item below its equals: every query's answer is last.
  EXPECT_DOUBLE_EQ(m.t2i.r1, 0.0);
  EXPECT_DOUBLE_EQ(m.t2i.median_rank, 3.0);
  EXPECT_DOUBLE_EQ(m.i2t.median_rank, 3.0);
}

TEST(ZeroShot, EachImageTakesItsMostSimilarPrompt) {
  const std::vector<float> prompts = rows({at_angle(0), at_angle(90)});
  const std::vector<float> images = rows({at_angle(10), at_angle(80), at_angle(50), at_angle(30)});
  // Predictions: 0, 1, 1, 0.
  EXPECT_DOUBLE_EQ(mms::zero_shot_accuracy(images, prompts, 2, {0, 1, 1, 0}), 100.0);
  EXPECT_DOUBLE_EQ(mms::zero_shot_accuracy(images, prompts, 2, {0, 1, 0, 1}), 50.0);
}

TEST(ZeroShot, AnEnsembleIsTheRenormalizedMeanOfEachClassesPrompts) {
  // Two templates, two classes: class 0's prompts at 0 and 40 deg, class 1's at 90 and 130.
  const std::vector<float> ensemble = mms::ensemble_prompts(
      {rows({at_angle(0), at_angle(90)}), rows({at_angle(40), at_angle(130)})}, 2);
  ASSERT_EQ(ensemble.size(), 4u);
  const std::vector<float> want = rows({at_angle(20), at_angle(110)});
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(ensemble[i], want[i], 1e-6) << i;
  // An image at 70 deg is class 1 by the first template (20 vs 70 deg away), class 0 by the
  // second (30 vs 60), and class 1 by the ensemble (50 vs 40).
  const std::vector<float> image = at_angle(70);
  EXPECT_DOUBLE_EQ(mms::zero_shot_accuracy(image, rows({at_angle(0), at_angle(90)}), 2, {1}),
                   100.0);
  EXPECT_DOUBLE_EQ(mms::zero_shot_accuracy(image, rows({at_angle(40), at_angle(130)}), 2, {1}),
                   0.0);
  EXPECT_DOUBLE_EQ(mms::zero_shot_accuracy(image, ensemble, 2, {1}), 100.0);
}

TEST(ZeroShot, TemplatesWithDifferentClassCountsAreRefused) {
  EXPECT_THROW(mms::ensemble_prompts({rows({at_angle(0), at_angle(90)}), at_angle(0)}, 2),
               mms::Error);
  EXPECT_THROW(mms::ensemble_prompts({}, 2), mms::Error);
}

Pair labelled(const std::string& image, const std::string& caption, const std::string& label) {
  Pair p = pair(image, caption);
  p.label = label;
  return p;
}

TEST(ZeroShot, ALabelledGalleryPosesItsClassesInFirstSeenOrder) {
  const mms::Gallery g = mms::make_gallery(
      {labelled("1.png", "a boot", "an ankle boot"), labelled("2.png", "a top", "a t-shirt"),
       labelled("3.png", "a tee", "a t-shirt"), labelled("1.png", "a shoe", "an ankle boot")},
      Split::kTest);
  const mms::ZeroShotTask task = mms::zero_shot_task(g);
  ASSERT_EQ(g.images.size(), 3u);
  EXPECT_EQ(task.classes, (std::vector<std::string>{"an ankle boot", "a t-shirt"}));
  EXPECT_EQ(task.labels, (std::vector<int32_t>{0, 1, 1}));

  // One unlabelled image, or a single class, poses no task.
  EXPECT_TRUE(mms::zero_shot_task(
                  mms::make_gallery({labelled("1.png", "a boot", "a boot"), pair("2.png", "a top")},
                                    Split::kTest))
                  .classes.empty());
  EXPECT_TRUE(mms::zero_shot_task(mms::make_gallery({labelled("1.png", "a boot", "a boot"),
                                                     labelled("2.png", "boots", "a boot")},
                                                    Split::kTest))
                  .labels.empty());
}

TEST(ZeroShot, PromptsFillTheTemplateOrAppendTheClass) {
  EXPECT_EQ(mms::zero_shot_prompt("a photo of {}", "a coat"), "a photo of a coat");
  EXPECT_EQ(mms::zero_shot_prompt("{}, in black and white", "a bag"), "a bag, in black and white");
  EXPECT_EQ(mms::zero_shot_prompt("clothing:", "a dress"), "clothing: a dress");
}

TEST(TruePairs, DrawnViewsAndKeywordsMakePairs) {
  mms::TrainSample cat1{0, "A black cat. Keywords: cat, pet.", "", "", {"cat", "pet"}, {}};
  mms::TrainSample cat2{1, "Sleeping cat. Keywords: cat.", "", "", {"cat"}, {}};
  mms::TrainSample dog{2, "Dog. Keywords: dog, pet.", "", "", {"dog", "pet"}, {}};
  const std::vector<const mms::TrainSample*> batch = {&cat1, &cat2, &dog};
  const size_t n = batch.size();
  // Row 0 asks "a cat" (naming cat), row 1 drew its caption, row 2 asks "a pet and a dog".
  std::vector<mms::CaptionView> views = {
      {"a cat", {"cat"}}, {"Sleeping cat. Keywords: cat.", {}}, {"a pet and a dog", {"pet", "dog"}}};
  std::vector<uint8_t> p = mms::true_pairs(batch, false, &views);
  auto is_pair = [&](size_t image, size_t text) { return p[image * n + text]; };
  EXPECT_TRUE(is_pair(1, 0));   // the second cat answers "a cat"...
  EXPECT_FALSE(is_pair(0, 1));  // ...but the first cat is not "Sleeping cat."
  EXPECT_FALSE(is_pair(2, 0));  // a dog is no cat
  EXPECT_FALSE(is_pair(0, 2));  // a pet, but not a dog
  EXPECT_TRUE(is_pair(2, 2));
  for (size_t i = 0; i < n; ++i) EXPECT_TRUE(is_pair(i, i));
  // Equal drawn texts pair their rows both ways.
  views[2] = {"a cat", {}};
  p = mms::true_pairs(batch, false, &views);
  EXPECT_TRUE(is_pair(2, 0));
  EXPECT_TRUE(is_pair(0, 2));
}

TEST(TruePairs, SameCaptionOrImageIsAPairAndLabelsCountWhenAsked) {
  const mms::TrainSample coat1{0, "a photo of a coat", "a coat", "", {}, {}};
  const mms::TrainSample coat2{1, "a product photo of a jacket-like coat", "a coat", "", {}, {}};
  const mms::TrainSample bag{2, "a photo of a bag", "a bag", "", {}, {}};
  const mms::TrainSample coat1_again{0, "a black and white picture of a coat", "a coat", "", {}, {}};
  const mms::TrainSample emoji{3, "a photo of a bag", "", "", {}, {}};
  const mms::TrainSample emoji2{4, "grinning face", "", "", {}, {}};
  const mms::TrainSample emoji3{5, "smiling face", "", "", {}, {}};
  const std::vector<const mms::TrainSample*> batch = {&coat1, &coat2,  &bag,   &coat1_again,
                                                      &emoji, &emoji2, &emoji3};
  const size_t n = batch.size();
  auto is_pair = [&](const std::vector<uint8_t>& p, size_t i, size_t j) { return p[i * n + j]; };

  const std::vector<uint8_t> plain = mms::true_pairs(batch, false);
  ASSERT_EQ(plain.size(), n * n);
  for (size_t i = 0; i < n; ++i) EXPECT_TRUE(is_pair(plain, i, i));
  EXPECT_TRUE(is_pair(plain, 0, 3));   // same image
  EXPECT_TRUE(is_pair(plain, 2, 4));   // same caption
  EXPECT_FALSE(is_pair(plain, 0, 1));  // same label, but labels are not asked for
  EXPECT_FALSE(is_pair(plain, 5, 6));  // unlabelled, different images and captions

  const std::vector<uint8_t> labelled = mms::true_pairs(batch, true);
  EXPECT_TRUE(is_pair(labelled, 0, 1));
  EXPECT_TRUE(is_pair(labelled, 1, 3));
  EXPECT_FALSE(is_pair(labelled, 1, 2));  // coat vs bag
  EXPECT_FALSE(is_pair(labelled, 5, 6));  // empty labels never match
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      EXPECT_EQ(is_pair(labelled, i, j), is_pair(labelled, j, i)) << i << "," << j;
      if (is_pair(plain, i, j)) {
        EXPECT_TRUE(is_pair(labelled, i, j)) << i << "," << j;
      }
    }
  }
}

TEST(TrainConfig, BatchSwitchesAreReadWrittenAndOffByDefault) {
  const std::string base =
      R"({"tokenizer": "t.model", "data": [{"name": "x", "path": "x.jsonl"}]})";
  const mms::TrainConfig off = mms::parse_train_config(base, "cfg", {});
  EXPECT_FALSE(off.label_positives);
  EXPECT_FALSE(off.batch_by_source);
  const mms::TrainConfig on = mms::parse_train_config(
      base, "cfg", {"train.label_positives=true", "train.batch_by_source=true"});
  EXPECT_TRUE(on.label_positives);
  EXPECT_TRUE(on.batch_by_source);
  const mms::TrainConfig back =
      mms::parse_train_config(mms::train_config_to_json(on), "round trip", {});
  EXPECT_TRUE(back.label_positives);
  EXPECT_TRUE(back.batch_by_source);
}

}  // namespace
