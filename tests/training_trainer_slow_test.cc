// End-to-end training on a tiny synthetic set (coloured shapes with captions): recall rises
// far above chance within seconds, and a run stopped and resumed ends with the same weights
// as one that ran straight through.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/error.h"
#include "encoders/image_io.h"
#include "encoders/nn/dual_encoder.h"
#include "encoders/nn/weights.h"
#include "encoders/safetensors.h"
#include "tokenizer/tokenizer.h"
#include "training/train_config.h"
#include "training/trainer.h"
#include "training_shapes_fixture.h"

namespace {

namespace fs = std::filesystem;

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mms_trainer_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    config_ = shapes_fixture::write_shapes_data(dir_);
  }
  void TearDown() override {
    if (!getenv("KEEP")) fs::remove_all(dir_);
  }

  // part: "model" (the weights the optimizer steps) or "ema" (their average).
  mms::nn::DualEncoder load_last_checkpoint(const fs::path& run,
                                            const std::string& part = "model") {
    std::ifstream in(run / "checkpoint.json");
    const auto j = nlohmann::json::parse(in);
    mms::nn::DualEncoder model(config_.model);
    torch::load(model, (run / (j.at("stem").get<std::string>() + "." + part + ".pt")).string());
    return model;
  }

  // One run straight through into dir_/straight; one stopped after 3 steps (mid-epoch, off
  // the checkpoint_every grid) and resumed, into dir_/resumed.
  void train_straight_and_resumed() {
    mms::TrainOptions straight;
    straight.out_dir = (dir_ / "straight").string();
    straight.quiet = true;
    mms::train_model(config_, straight);

    mms::TrainOptions interrupted = straight;
    interrupted.out_dir = (dir_ / "resumed").string();
    interrupted.stop_after_steps = 3;
    EXPECT_FALSE(mms::train_model(config_, interrupted).finished);
    interrupted.stop_after_steps = 0;
    interrupted.resume = true;
    EXPECT_TRUE(mms::train_model(config_, interrupted).finished);
  }

  mms::nn::DualEncoder load_exported(const fs::path& run) {
    mms::nn::DualEncoder model(config_.model);
    const std::string file = (run / "model" / "model.safetensors").string();
    mms::nn::load_model_weights(model, mms::read_safetensors(file), file);
    return model;
  }

  fs::path dir_;
  mms::TrainConfig config_;
};

TEST_F(TrainerTest, RecallRisesFarAboveChanceWithinSeconds) {
  config_.epochs = 25;
  mms::TrainOptions options;
  options.out_dir = (dir_ / "run").string();
  options.quiet = true;
  const mms::TrainResult r = mms::train_model(config_, options);
  EXPECT_TRUE(r.finished);
  // 12 concepts: a random model finds the right caption in its top 10 of 12 about 10/12 of
  // the time, so R@1 and R@5 are the telling figures: chance is 8.3% and 41.7%.
  std::ifstream in(dir_ / "run/model/eval.json");
  const auto val = nlohmann::json::parse(in).at("val").at("shapes");
  EXPECT_GE(val.at("t2i").at("r1").get<double>(), 30.0) << val.dump();
  EXPECT_GE(val.at("i2t").at("r1").get<double>(), 25.0) << val.dump();
  EXPECT_GE(val.at("t2i").at("r5").get<double>(), 80.0) << val.dump();
  EXPECT_GE(val.at("i2t").at("r5").get<double>(), 80.0) << val.dump();
  // Zero-shot by colour over 4 classes ("a photo of red", ...): chance is 25%.
  EXPECT_GE(val.at("zero_shot_acc").get<double>(), 50.0) << val.dump();
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"}) {
    EXPECT_TRUE(fs::exists(dir_ / "run/model" / f)) << f;
  }
  std::ifstream log(dir_ / "run/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(log, line)) {
    const auto j = nlohmann::json::parse(line);
    ASSERT_TRUE(j.contains("step"));
    ++lines;
  }
  EXPECT_GT(lines, 5);
}

TEST_F(TrainerTest, CaptionAndShortViewsTogetherStillLearnTheCaptions) {
  // Every row trains with its caption and a view ("red", "a square", "red and square"),
  // keyword views counting every image so tagged as a true pair.
  config_.epochs = 25;
  config_.caption_and_view = true;
  config_.keyword_positives = true;
  config_.augment.view_title = 1;
  config_.augment.view_keywords = 2;
  config_.augment.view_templates = {"{}", "a {}"};
  mms::TrainOptions options;
  options.out_dir = (dir_ / "views").string();
  options.quiet = true;
  ASSERT_TRUE(mms::train_model(config_, options).finished);
  std::ifstream in(dir_ / "views/model/eval.json");
  const auto val = nlohmann::json::parse(in).at("val").at("shapes");
  EXPECT_GE(val.at("t2i").at("r5").get<double>(), 80.0) << val.dump();
  EXPECT_GE(val.at("i2t").at("r5").get<double>(), 80.0) << val.dump();
  EXPECT_GE(val.at("zero_shot_acc").get<double>(), 50.0) << val.dump();
}

// The largest absolute difference between two models' parameters, and where it is.
std::pair<double, std::string> max_weight_difference_at(mms::nn::DualEncoder& a,
                                                        mms::nn::DualEncoder& b) {
  auto pa = a->named_parameters(true), pb = b->named_parameters(true);
  EXPECT_EQ(pa.size(), pb.size());
  std::pair<double, std::string> worst{0.0, ""};
  for (const auto& item : pa) {
    const double d = (item.value() - pb[item.key()]).abs().max().item<double>();
    if (d > worst.first) worst = {d, item.key()};
  }
  return worst;
}

double max_weight_difference(mms::nn::DualEncoder& a, mms::nn::DualEncoder& b) {
  return max_weight_difference_at(a, b).first;
}

void expect_same_weights(mms::nn::DualEncoder& a, mms::nn::DualEncoder& b) {
  const auto [worst, name] = max_weight_difference_at(a, b);
  EXPECT_LE(worst, 1e-5) << name;
}

TEST_F(TrainerTest, TwoRunsWithOneSeedEndWithTheSameWeights) {
  config_.epochs = 2;
  mms::TrainOptions options;
  options.quiet = true;
  for (const char* run : {"one", "two"}) {
    options.out_dir = (dir_ / run).string();
    mms::train_model(config_, options);
  }
  auto a = load_last_checkpoint(dir_ / "one");
  auto b = load_last_checkpoint(dir_ / "two");
  expect_same_weights(a, b);
}

TEST_F(TrainerTest, AResumedRunEndsWithTheSameWeightsAsAnUninterruptedOne) {
  config_.epochs = 2;  // 50 train pairs / 12 = 4 steps an epoch
  train_straight_and_resumed();

  auto a = load_last_checkpoint(dir_ / "straight");
  auto b = load_last_checkpoint(dir_ / "resumed");
  expect_same_weights(a, b);
}

TEST_F(TrainerTest, SubwordSamplingChangesTheTextsAndStaysDeterministicWhenResumed) {
  config_.epochs = 2;
  config_.augment.subword_nbest = 8;
  config_.augment.subword_prob = 0.5f;
  mms::TrainOptions refused;
  refused.out_dir = (dir_ / "refused").string();
  refused.quiet = true;
  try {  // the fixture's word tokenizer cuts a text one way only
    mms::train_model(config_, refused);
    ADD_FAILURE() << "subword sampling with a word tokenizer was accepted";
  } catch (const mms::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unigram"), std::string::npos) << e.what();
  }

  mms::TokenizerTrainOptions unigram;  // the same corpus, cut into pieces of words
  unigram.corpus_path = (dir_ / "corpus.txt").string();
  unigram.vocab_size = 36;
  unigram.character_coverage = 1.0;
  unigram.out_path = (dir_ / "unigram.model").string();
  mms::train_tokenizer(unigram);
  config_.tokenizer = unigram.out_path;
  config_.model.text.vocab_size = mms::Tokenizer::load(unigram.out_path).vocab_size();
  config_.augment.subword_nbest = 1;
  mms::TrainOptions plain;
  plain.out_dir = (dir_ / "plain").string();
  plain.quiet = true;
  mms::train_model(config_, plain);

  config_.augment.subword_nbest = 8;
  train_straight_and_resumed();
  auto a = load_last_checkpoint(dir_ / "straight");
  auto b = load_last_checkpoint(dir_ / "resumed");
  expect_same_weights(a, b);  // each draw is a function of its place in the run alone
  auto p = load_last_checkpoint(dir_ / "plain");
  EXPECT_GT(max_weight_difference(a, p), 1e-4) << "the sampled segmentations changed nothing";
}

TEST_F(TrainerTest, AResumedRunKeepsTheSameWeightAverage) {
  config_.epochs = 2;
  config_.ema_decay = 0.9;
  train_straight_and_resumed();

  auto raw = load_last_checkpoint(dir_ / "straight");
  auto average = load_last_checkpoint(dir_ / "straight", "ema");
  auto resumed_average = load_last_checkpoint(dir_ / "resumed", "ema");
  expect_same_weights(average, resumed_average);
  // The average trails the stepped weights, so the two differ.
  EXPECT_GT(max_weight_difference(raw, average), 1e-4);
}

TEST_F(TrainerTest, WithAWeightAverageValidationAndExportUseTheAverage) {
  config_.epochs = 1;  // one validation, so the export is the run's last average
  config_.ema_decay = 0.9;
  mms::TrainOptions options;
  options.out_dir = (dir_ / "run").string();
  options.quiet = true;
  mms::train_model(config_, options);
  auto raw = load_last_checkpoint(dir_ / "run");
  auto average = load_last_checkpoint(dir_ / "run", "ema");
  auto exported = load_exported(dir_ / "run");
  EXPECT_LE(max_weight_difference(average, exported), 1e-7);
  EXPECT_GT(max_weight_difference(raw, exported), 1e-4);
}

TEST_F(TrainerTest, ResumingWithAWeightAverageNeedsACheckpointThatKeptOne) {
  config_.epochs = 1;
  mms::TrainOptions options;
  options.out_dir = (dir_ / "run").string();
  options.quiet = true;
  options.stop_after_steps = 2;
  mms::train_model(config_, options);
  config_.ema_decay = 0.99;
  options.resume = true;
  options.stop_after_steps = 0;
  try {
    mms::train_model(config_, options);
    FAIL() << "resumed an average that was never kept";
  } catch (const mms::Error& e) {
    EXPECT_NE(std::string(e.what()).find("ema_decay"), std::string::npos) << e.what();
  }
}

TEST_F(TrainerTest, BFloat16AutocastLearnsAsFloat32DoesAndKeepsFloat32Weights) {
  // train.precision bfloat16: the forward passes' products in bfloat16, the weights, the
  // loss and AdamW in float32. The shapes are learnt as well as in float32 (the first test's
  // bars), and the arithmetic really changed: two epochs end with other weights than
  // float32's from the same seed.
  config_.epochs = 25;
  config_.precision = "bfloat16";
  mms::TrainOptions options;
  options.out_dir = (dir_ / "bf16").string();
  options.quiet = true;
  EXPECT_TRUE(mms::train_model(config_, options).finished);
  std::ifstream in(dir_ / "bf16/model/eval.json");
  const auto val = nlohmann::json::parse(in).at("val").at("shapes");
  EXPECT_GE(val.at("t2i").at("r5").get<double>(), 80.0) << val.dump();
  EXPECT_GE(val.at("i2t").at("r5").get<double>(), 80.0) << val.dump();
  EXPECT_GE(val.at("zero_shot_acc").get<double>(), 50.0) << val.dump();
  auto exported = load_exported(dir_ / "bf16");
  for (const auto& p : exported->named_parameters()) {
    EXPECT_EQ(p.value().scalar_type(), torch::kFloat) << p.key();
  }

  config_.epochs = 2;
  options.out_dir = (dir_ / "bf16_short").string();
  mms::train_model(config_, options);
  config_.precision = "float32";
  options.out_dir = (dir_ / "fp32_short").string();
  mms::train_model(config_, options);
  auto bf16 = load_last_checkpoint(dir_ / "bf16_short");
  auto fp32 = load_last_checkpoint(dir_ / "fp32_short");
  EXPECT_GT(max_weight_difference(bf16, fp32), 1e-4);
}

TEST_F(TrainerTest, BFloat16UntilSwitchesToFloat32AtItsShareOfTheSteps) {
  // train.bfloat16_until 0.5 over 2 epochs: the first epoch's steps in bfloat16, the
  // second's in float32. The same as a bfloat16 run stopped after one epoch and resumed in
  // float32, and not the same as a run in bfloat16 throughout.
  config_.epochs = 2;
  config_.precision = "bfloat16";
  mms::TrainOptions options;
  options.quiet = true;
  options.out_dir = (dir_ / "bf16").string();
  mms::train_model(config_, options);
  std::ifstream in(dir_ / "bf16/checkpoint.json");
  const int64_t steps = nlohmann::json::parse(in).at("step").get<int64_t>();
  ASSERT_EQ(steps % 2, 0);

  mms::TrainConfig switched = config_;
  switched.bfloat16_until = 0.5;
  options.out_dir = (dir_ / "switched").string();
  mms::train_model(switched, options);

  options.out_dir = (dir_ / "by_hand").string();
  options.stop_after_steps = steps / 2;
  EXPECT_FALSE(mms::train_model(config_, options).finished);
  mms::TrainConfig float32 = config_;
  float32.precision = "float32";
  options.stop_after_steps = 0;
  options.resume = true;
  EXPECT_TRUE(mms::train_model(float32, options).finished);

  auto by_switch = load_last_checkpoint(dir_ / "switched");
  auto by_hand = load_last_checkpoint(dir_ / "by_hand");
  auto bf16 = load_last_checkpoint(dir_ / "bf16");
  expect_same_weights(by_switch, by_hand);
  EXPECT_GT(max_weight_difference(by_switch, bf16), 1e-4);
}

TEST(TrainConfig, PrecisionIsReadCheckedAndWrittenBack) {
  const std::string base =
      R"({"tokenizer": "t.model", "data": [{"name": "a", "path": "a.jsonl"}]})";
  EXPECT_EQ(mms::parse_train_config(base, "c", {}).precision, "auto");
  const mms::TrainConfig c = mms::parse_train_config(base, "c", {"train.precision=bfloat16"});
  EXPECT_EQ(c.precision, "bfloat16");
  EXPECT_EQ(mms::parse_train_config(mms::train_config_to_json(c), "c", {}).precision, "bfloat16");
  try {
    mms::parse_train_config(base, "cfg.json", {"train.precision=fp8"});
    FAIL() << "accepted fp8";
  } catch (const mms::Error& e) {
    EXPECT_NE(std::string(e.what()).find("train.precision 'fp8'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(mms::parse_train_config(base, "c", {}).bfloat16_until, 1.0);
  const mms::TrainConfig d = mms::parse_train_config(base, "c", {"train.bfloat16_until=0.6"});
  EXPECT_EQ(d.bfloat16_until, 0.6);
  EXPECT_EQ(mms::parse_train_config(mms::train_config_to_json(d), "c", {}).bfloat16_until, 0.6);
  for (const char* bad : {"train.bfloat16_until=0", "train.bfloat16_until=1.5"}) {
    try {
      mms::parse_train_config(base, "cfg.json", {bad});
      FAIL() << "accepted " << bad;
    } catch (const mms::Error& e) {
      EXPECT_NE(std::string(e.what()).find("train.bfloat16_until must be in (0, 1]"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(TrainConfig, EmaDecayIsReadCheckedAndWrittenBack) {
  const std::string base =
      R"({"tokenizer": "t.model", "data": [{"name": "a", "path": "a.jsonl"}]})";
  EXPECT_EQ(mms::parse_train_config(base, "c", {}).ema_decay, 0.0);
  const mms::TrainConfig c = mms::parse_train_config(base, "c", {"train.ema_decay=0.995"});
  EXPECT_DOUBLE_EQ(c.ema_decay, 0.995);
  EXPECT_DOUBLE_EQ(mms::parse_train_config(mms::train_config_to_json(c), "c", {}).ema_decay, 0.995);
  for (const char* bad : {"train.ema_decay=1", "train.ema_decay=-0.1"}) {
    try {
      mms::parse_train_config(base, "cfg.json", {bad});
      FAIL() << "accepted " << bad;
    } catch (const mms::Error& e) {
      EXPECT_NE(std::string(e.what()).find("train.ema_decay"), std::string::npos) << e.what();
    }
  }
}

TEST(TrainConfig, DataRepeatsAreReadCheckedAndWrittenBack) {
  const std::string base =
      R"({"tokenizer": "t.model", "data": [{"name": "a", "path": "a.jsonl", "repeats": 2},
                                          {"name": "b", "path": "b.jsonl"}]})";
  const mms::TrainConfig c = mms::parse_train_config(base, "c", {});
  EXPECT_EQ(c.data.at(0).repeats, 2);
  EXPECT_EQ(c.data.at(1).repeats, 1);
  EXPECT_EQ(mms::parse_train_config(mms::train_config_to_json(c), "c", {}).data.at(0).repeats, 2);
  for (const char* bad : {R"("repeats": 0)", R"("repeats": -1)"}) {
    std::string text = base;
    text.replace(text.find(R"("repeats": 2)"), 12, bad);
    try {
      mms::parse_train_config(text, "cfg.json", {});
      FAIL() << "accepted " << bad;
    } catch (const mms::Error& e) {
      EXPECT_NE(std::string(e.what()).find("repeats"), std::string::npos) << e.what();
    }
  }
}

TEST_F(TrainerTest, ARunDirectoryWithACheckpointIsNotOverwrittenWithoutResume) {
  config_.epochs = 1;
  mms::TrainOptions options;
  options.out_dir = (dir_ / "run").string();
  options.quiet = true;
  mms::train_model(config_, options);
  EXPECT_THROW(mms::train_model(config_, options), mms::Error);
}


TEST_F(TrainerTest, InitFromStartsTheRunFromAModelDirsWeights) {
  config_.epochs = 1;
  mms::TrainOptions options;
  options.quiet = true;
  options.out_dir = (dir_ / "first").string();
  mms::train_model(config_, options);
  auto first = load_exported(dir_ / "first");

  // One step at a learning rate too small to move anything: the run holds what it started from.
  mms::TrainConfig second = config_;
  second.lr = 1e-12;
  options.stop_after_steps = 1;
  options.out_dir = (dir_ / "fresh").string();
  mms::train_model(second, options);
  second.init_from = (dir_ / "first" / "model").string();
  options.out_dir = (dir_ / "second").string();
  mms::train_model(second, options);

  auto started = load_last_checkpoint(dir_ / "second");
  auto fresh = load_last_checkpoint(dir_ / "fresh");
  expect_same_weights(first, started);
  EXPECT_GT(max_weight_difference(first, fresh), 1e-3);
}

TEST_F(TrainerTest, InitFromRefusesAMissingModelOrAnotherTokenizer) {
  config_.epochs = 1;
  mms::TrainOptions options;
  options.quiet = true;
  options.out_dir = (dir_ / "first").string();
  mms::train_model(config_, options);

  const fs::path other = dir_ / "other_model";
  fs::copy(dir_ / "first" / "model", other);
  {
    std::ofstream tok(other / "tokenizer.model", std::ios::binary | std::ios::app);
    tok << "another tokenizer";
  }
  const std::pair<fs::path, std::string> cases[] = {{dir_ / "missing", "model.safetensors"},
                                                    {other, "another tokenizer"}};
  for (const auto& [init_from, expected] : cases) {
    mms::TrainConfig c = config_;
    c.init_from = init_from.string();
    options.out_dir = (dir_ / ("run_" + init_from.filename().string())).string();
    try {
      mms::train_model(c, options);
      FAIL() << "started from " << init_from;
    } catch (const mms::Error& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(init_from.string()), std::string::npos) << e.what();
    }
  }
  // The setting is read from a config file and written back with the run.
  const std::string base =
      R"({"tokenizer": "t.model", "data": [{"name": "a", "path": "a.jsonl"}]})";
  const mms::TrainConfig c = mms::parse_train_config(base, "c", {"train.init_from=runs/a/model"});
  EXPECT_EQ(c.init_from, "runs/a/model");
  EXPECT_EQ(mms::parse_train_config(mms::train_config_to_json(c), "c", {}).init_from,
            "runs/a/model");
}

}  // namespace
