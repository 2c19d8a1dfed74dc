// Caption augmentation as the trainer's loader calls it: one generator per sample, captions
// in the manifests' "<text> Keywords: a, b, c." form.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "training/augment.h"
#include "training/train_config.h"

namespace {

const std::string kCaption =
    "Armadillo. A small armoured mammal. Keywords: armadillo, mammal, animal, shell, desert.";
const std::vector<std::string> kKeywords = {"armadillo", "mammal", "animal", "shell", "desert"};

struct Split {
  std::string text;
  std::vector<std::string> keywords;
};

// Takes an augmented caption apart again, checking its form on the way.
Split split(const std::string& caption) {
  Split out;
  const size_t at = caption.find("Keywords: ");
  if (at == std::string::npos) {
    out.text = caption;
    return out;
  }
  out.text = caption.substr(0, at == 0 ? 0 : at - 1);
  EXPECT_TRUE(at == 0 || caption[at - 1] == ' ') << caption;
  EXPECT_EQ(caption.back(), '.') << caption;
  std::string list = caption.substr(at + 10, caption.size() - at - 11);
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(", ", start);
    out.keywords.push_back(list.substr(start, comma - start));
    if (comma == std::string::npos) break;
    start = comma + 2;
  }
  return out;
}

mms::AugmentConfig with(float drop, bool shuffle) {
  mms::AugmentConfig c;
  c.keyword_drop = drop;
  c.keyword_shuffle = shuffle;
  return c;
}

TEST(CaptionAugment, IsOffByDefault) {
  std::mt19937_64 rng(1);
  EXPECT_EQ(mms::augment_caption(kCaption, mms::AugmentConfig{}, rng), kCaption);
}

TEST(CaptionAugment, ShuffleKeepsTheTextAndEveryKeyword) {
  const mms::AugmentConfig config = with(0.0f, true);
  int reordered = 0;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    std::mt19937_64 rng(seed);
    const Split s = split(mms::augment_caption(kCaption, config, rng));
    EXPECT_EQ(s.text, "Armadillo. A small armoured mammal.");
    std::vector<std::string> sorted = s.keywords, expected = kKeywords;
    std::sort(sorted.begin(), sorted.end());
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(sorted, expected);
    reordered += s.keywords != kKeywords;
  }
  EXPECT_GT(reordered, 40);  // 5! orders: a fixed order would be 1 in 120
}

TEST(CaptionAugment, DropLeavesOutKeywordsAtItsRateAndKeepsTheRestInOrder) {
  const mms::AugmentConfig config = with(0.3f, false);
  size_t kept = 0;
  const int trials = 2000;
  for (int t = 0; t < trials; ++t) {
    std::mt19937_64 rng(t);
    const Split s = split(mms::augment_caption(kCaption, config, rng));
    EXPECT_EQ(s.text, "Armadillo. A small armoured mammal.");
    // A subsequence of the original list.
    size_t pos = 0;
    for (const std::string& k : s.keywords) {
      while (pos < kKeywords.size() && kKeywords[pos] != k) ++pos;
      ASSERT_LT(pos, kKeywords.size()) << "'" << k << "' is not a kept keyword in order";
      ++pos;
    }
    kept += s.keywords.size();
  }
  const double rate = 1.0 - double(kept) / (trials * kKeywords.size());
  EXPECT_NEAR(rate, 0.3, 0.03);
}

TEST(CaptionAugment, NeverReturnsAnEmptyCaption) {
  const mms::AugmentConfig config = with(0.99f, true);
  for (uint64_t seed = 0; seed < 200; ++seed) {
    std::mt19937_64 rng(seed);
    const std::string bare = mms::augment_caption("Keywords: flag, sign.", config, rng);
    const Split s = split(bare);
    EXPECT_TRUE(s.text.empty()) << bare;
    ASSERT_EQ(s.keywords.size(), 1u) << bare;
    EXPECT_TRUE(s.keywords[0] == "flag" || s.keywords[0] == "sign") << bare;
    // With text, dropping every keyword leaves the text alone, without a dangling marker.
    const std::string titled = mms::augment_caption("Flag. Keywords: flag.", config, rng);
    EXPECT_TRUE(titled == "Flag." || titled == "Flag. Keywords: flag.") << titled;
  }
}

TEST(CaptionAugment, LeavesCaptionsWithoutAKeywordListAlone) {
  const mms::AugmentConfig config = with(0.5f, true);
  std::mt19937_64 rng(3);
  for (const std::string c : {"a product photo of a boot", "Keywords:", "Keywords: , ,"}) {
    EXPECT_EQ(mms::augment_caption(c, config, rng), c);
  }
}

TEST(CaptionAugment, OneSeedGivesOneCaption) {
  const mms::AugmentConfig config = with(0.4f, true);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 a(seed), b(seed);
    EXPECT_EQ(mms::augment_caption(kCaption, config, a), mms::augment_caption(kCaption, config, b));
  }
}

TEST(CaptionAugment, ConfigReadsWritesAndRejectsABadRate) {
  const std::string base =
      R"({"tokenizer": "t.model", "data": [{"name": "x", "path": "x.jsonl"}]})";
  const mms::TrainConfig on = mms::parse_train_config(
      base, "cfg", {"augment.keyword_drop=0.25", "augment.keyword_shuffle=true"});
  EXPECT_FLOAT_EQ(on.augment.keyword_drop, 0.25f);
  EXPECT_TRUE(on.augment.keyword_shuffle);
  const mms::TrainConfig back =
      mms::parse_train_config(mms::train_config_to_json(on), "round trip", {});
  EXPECT_FLOAT_EQ(back.augment.keyword_drop, 0.25f);
  EXPECT_TRUE(back.augment.keyword_shuffle);
  const mms::TrainConfig sampled =
      mms::parse_train_config(base, "cfg", {"augment.subword_nbest=8", "augment.subword_prob=0.3"});
  const mms::TrainConfig sampled_back =
      mms::parse_train_config(mms::train_config_to_json(sampled), "round trip", {});
  EXPECT_EQ(sampled_back.augment.subword_nbest, 8);
  EXPECT_FLOAT_EQ(sampled_back.augment.subword_prob, 0.3f);
  for (const char* bad : {"augment.subword_nbest=0", "augment.subword_nbest=65",
                          "augment.subword_prob=1", "augment.subword_prob=-0.5"}) {
    const std::string key = std::string(bad).substr(0, std::string(bad).find('='));
    try {
      mms::parse_train_config(base, "cfg", {bad});
      ADD_FAILURE() << bad << " was accepted";
    } catch (const mms::Error& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
  for (const char* bad : {"augment.keyword_drop=1", "augment.keyword_drop=-0.1"}) {
    try {
      mms::parse_train_config(base, "cfg", {bad});
      ADD_FAILURE() << bad << " was accepted";
    } catch (const mms::Error& e) {
      EXPECT_NE(std::string(e.what()).find("augment.keyword_drop"), std::string::npos) << e.what();
    }
  }
}

mms::TrainSample apple() {
  mms::TrainSample s;
  s.caption = "Red apple. Keywords: apple, fruit, red.";
  s.title = "Red apple";
  s.keywords = {"apple", "fruit", "red"};
  s.names = {"mela rossa"};
  return s;
}

TEST(CaptionViews, TemplatesTakeTheRightArticle) {
  EXPECT_EQ(mms::fill_template("a {}", "apple"), "an apple");
  EXPECT_EQ(mms::fill_template("a {}", "cat"), "a cat");
  EXPECT_EQ(mms::fill_template("a drawing of a {}", "owl"), "a drawing of an owl");
  EXPECT_EQ(mms::fill_template("{}", "owl"), "owl");
  EXPECT_EQ(mms::fill_template("{} icon", "umbrella"), "umbrella icon");
  EXPECT_EQ(mms::fill_template("a picture of {}", "apples"), "a picture of apples");
}

TEST(CaptionViews, CaptionOnlyIsTheOldAugmentation) {
  // Default weights: the caption view alone, drawing from the generator as augment_caption.
  mms::AugmentConfig config = with(0.4f, true);
  std::mt19937_64 a(7), b(7);
  for (int i = 0; i < 50; ++i) {
    const mms::CaptionView v = mms::draw_caption(apple(), config, a);
    EXPECT_EQ(v.text, mms::augment_caption(apple().caption, config, b));
    EXPECT_TRUE(v.concepts.empty());
  }
  // A sample without title, keywords or names falls back to its caption whatever the weights.
  config.view_caption = 0;
  config.view_title = config.view_keywords = config.view_names = 1;
  mms::TrainSample bare;
  bare.caption = "a photo of a coat";
  std::mt19937_64 rng(1);
  EXPECT_EQ(mms::draw_caption(bare, config, rng).text, "a photo of a coat");
}

TEST(CaptionViews, EachViewDrawsFromItsField) {
  mms::AugmentConfig config;
  config.view_templates = {"{}", "a drawing of a {}"};
  auto only = [&](float caption, float title, float keywords, float names) {
    config.view_caption = caption;
    config.view_title = title;
    config.view_keywords = keywords;
    config.view_names = names;
  };
  std::mt19937_64 rng(3);
  only(0, 1, 0, 0);
  for (int i = 0; i < 20; ++i) {
    const mms::CaptionView v = mms::draw_caption(apple(), config, rng);
    EXPECT_TRUE(v.text == "Red apple" || v.text == "a drawing of a red apple") << v.text;
    EXPECT_TRUE(v.concepts.empty());
  }
  only(0, 0, 1, 0);
  int pairs_seen = 0;
  for (int i = 0; i < 200; ++i) {
    const mms::CaptionView v = mms::draw_caption(apple(), config, rng);
    ASSERT_FALSE(v.concepts.empty());
    for (const std::string& c : v.concepts) {
      EXPECT_NE(std::find(apple().keywords.begin(), apple().keywords.end(), c),
                apple().keywords.end());
      EXPECT_NE(v.text.find(c), std::string::npos) << v.text;
    }
    if (v.concepts.size() == 2) {
      ++pairs_seen;
      EXPECT_NE(v.text.find(v.concepts[0] + " and " + v.concepts[1]), std::string::npos);
    }
  }
  // view_two_keywords 0.3, minus draws of the same keyword twice: about 40 of 200.
  EXPECT_GT(pairs_seen, 15);
  EXPECT_LT(pairs_seen, 80);
  only(0, 0, 0, 1);
  EXPECT_EQ(mms::draw_caption(apple(), config, rng).text, "mela rossa");

  // Mixed weights reach every view, in roughly their proportions.
  only(1, 1, 2, 0);
  int caption = 0, title = 0, keyword = 0;
  for (int i = 0; i < 400; ++i) {
    const mms::CaptionView v = mms::draw_caption(apple(), config, rng);
    if (v.text == apple().caption) ++caption;
    else if (!v.concepts.empty()) ++keyword;
    else ++title;
  }
  EXPECT_GT(caption, 60);
  EXPECT_GT(title, 60);
  EXPECT_GT(keyword, 140);
}

TEST(CaptionViews, ConfigReadsWritesAndRejectsBadViews) {
  const std::string base =
      R"({"tokenizer": "t.model", "data": [{"name": "x", "path": "x.jsonl"}],
          "augment": {"views": {"caption": 0.5, "title": 0.2, "keywords": 0.3},
                      "view_templates": ["{}", "a {}"]},
          "train": {"keyword_positives": true}})";
  const mms::TrainConfig c = mms::parse_train_config(base, "cfg", {"augment.views.names=0.1"});
  EXPECT_FLOAT_EQ(c.augment.view_caption, 0.5f);
  EXPECT_FLOAT_EQ(c.augment.view_keywords, 0.3f);
  EXPECT_FLOAT_EQ(c.augment.view_names, 0.1f);
  EXPECT_EQ(c.augment.view_templates, (std::vector<std::string>{"{}", "a {}"}));
  EXPECT_TRUE(c.keyword_positives);
  const mms::TrainConfig back = mms::parse_train_config(mms::train_config_to_json(c), "again", {});
  EXPECT_FLOAT_EQ(back.augment.view_title, 0.2f);
  EXPECT_EQ(back.augment.view_templates, c.augment.view_templates);
  EXPECT_TRUE(back.keyword_positives);
  for (const char* bad : {"augment.views.title=-1", "augment.views.caption=0",
                          "augment.view_templates=[\"a picture\"]", "augment.views.colour=1",
                          "augment.view_two_keywords=1"}) {
    std::vector<std::string> overrides = {bad};
    if (std::string(bad) == "augment.views.caption=0") {
      overrides = {"augment.views.caption=0", "augment.views.title=0", "augment.views.keywords=0"};
    }
    EXPECT_THROW(mms::parse_train_config(base, "cfg", overrides), mms::Error) << bad;
  }
}

}  // namespace
