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

}  // namespace
