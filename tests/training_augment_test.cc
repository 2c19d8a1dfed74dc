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
  for (const char* bad : {"augment.keyword_drop=1", "augment.keyword_drop=-0.1"}) {
    try {
      mms::parse_train_config(base, "cfg", {bad});
      ADD_FAILURE() << bad << " was accepted";
    } catch (const mms::Error& e) {
      EXPECT_NE(std::string(e.what()).find("augment.keyword_drop"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
