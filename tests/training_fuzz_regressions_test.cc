// Every input that fuzzing found to break a parser (tests/fuzz/regressions/TARGET/), replayed
// through the parser as the program calls it: each must now be refused with an mms::Error
// that says what is wrong, never crash, abort or reach undefined behaviour. (scripts/fuzz.sh
// replays them too, under the sanitizers.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/error.h"
#include "encoders/memory.h"
#include "encoders/model_config.h"
#include "training/manifest.h"
#include "training/train_config.h"

namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The regression inputs of one target; the test fails when there are none (a moved folder
// must not turn this into a test of nothing).
std::vector<fs::path> inputs(const std::string& target) {
  std::vector<fs::path> out;
  for (const auto& entry :
       fs::directory_iterator(fs::path(MMS_SOURCE_DIR) / "tests/fuzz/regressions" / target)) {
    out.push_back(entry.path());
  }
  EXPECT_FALSE(out.empty()) << target;
  return out;
}

// Runs `parse`; passes when it throws mms::Error (any kind), fails on anything else.
template <typename F>
void expect_refused(const fs::path& input, F parse) {
  try {
    parse();
    ADD_FAILURE() << input << " was accepted";
  } catch (const mms::Error& e) {
    EXPECT_FALSE(std::string(e.what()).empty()) << input;
  }
}

TEST(FuzzRegressions, ManifestsWithNumbersTooLargeForADoubleAreRefused) {
  for (const fs::path& input : inputs("manifest")) {
    expect_refused(input, [&] { mms::read_pairs(input.string()); });
  }
}

TEST(FuzzRegressions, ModelConfigIntegersOutOfRangeAreRefused) {
  for (const fs::path& input : inputs("model_config")) {
    expect_refused(input, [&] { mms::parse_model_config(read_file(input), input.string()); });
  }
  expect_refused("embed_dim 1e300",
                 [] { mms::parse_model_config(R"({"embed_dim": 1e300})", "c"); });
  expect_refused("embed_dim 2.5", [] { mms::parse_model_config(R"({"embed_dim": 2.5})", "c"); });
}

TEST(FuzzRegressions, TrainConfigIntegersOutOfRangeAreRefused) {
  for (const fs::path& input : inputs("train_config")) {
    expect_refused(input, [&] { mms::parse_train_config(read_file(input), input.string(), {}); });
  }
}

TEST(FuzzRegressions, MemorySettingsOutOfRangeAreRefused) {
  for (const fs::path& input : inputs("memory")) {
    const std::string bytes = read_file(input);
    expect_refused(input, [&] {
      mms::parse_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                        input.string(), 4);
    });
  }
}

// A float field given a number beyond a float (the model config's image.std as 1e300 became
// infinity, and a config written back held null: found by fuzzing both configs) is refused
// by name; the largest float still reads.
TEST(FuzzRegressions, FloatFieldsBeyondAFloatAreRefusedByName) {
  auto refusal = [](auto parse) -> std::string {
    try {
      parse();
    } catch (const mms::Error& e) {
      return e.what();
    }
    return "accepted";
  };
  const std::string model_std =
      refusal([] { mms::parse_model_config(R"({"image": {"std": [0.25, 0.25, 1e300]}})", "c"); });
  EXPECT_NE(model_std.find("'std' must be a finite number"), std::string::npos) << model_std;
  const std::string model_scale =
      refusal([] { mms::parse_model_config(R"({"logit_scale_max": -4e38})", "c"); });
  EXPECT_NE(model_scale.find("logit_scale_max"), std::string::npos) << model_scale;
  const std::string train_jitter = refusal([] {
    mms::parse_train_config(R"({"tokenizer": "t", "data": [{"name": "a", "path": "b"}],
                                "augment": {"jitter": 3.5e38}})",
                            "c", {});
  });
  EXPECT_NE(train_jitter.find("'jitter' must be a finite number"), std::string::npos)
      << train_jitter;
  const mms::ModelConfig widest = mms::parse_model_config(R"({"logit_scale_max": 3.4e38})", "c");
  EXPECT_FLOAT_EQ(widest.logit_scale_max, 3.4e38f);
}

}  // namespace
