// `mmsearch embed` as a script calls it: a JSON line per input, and an image that cannot be
// loaded told and left out without losing the others.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "index_test_support.h"

namespace {

namespace fs = std::filesystem;

TEST(EmbedCli, AnUnloadableImageIsToldAndTheOthersAreStillEmbedded) {
  const fs::path dir = fs::temp_directory_path() / ("mms_embed_cli_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  mms::testing::make_tiny_model(dir / "model");
  mms::testing::write_test_jpeg(dir / "a.jpg", 1);
  mms::testing::write_test_jpeg(dir / "b.jpg", 2);
  std::ofstream(dir / "broken.png") << "not a PNG at all";
  const std::string args = "embed --model " + (dir / "model").string() + " --text 'a red circle'" +
                           " --image " + (dir / "a.jpg").string() + " --image " +
                           (dir / "broken.png").string() + " --image " + (dir / "b.jpg").string();
  const auto [code, out] = mms::testing::run_command(mms::testing::kProgram + " " + args + " 2>" +
                                                     (dir / "err.txt").string());
  EXPECT_EQ(code, 1);
  std::vector<std::string> inputs;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json row = nlohmann::json::parse(line);
    EXPECT_EQ(row.at("embedding").size(), 16u);
    inputs.push_back(row.at("input").get<std::string>());
  }
  EXPECT_EQ(inputs, (std::vector<std::string>{"a red circle", (dir / "a.jpg").string(),
                                              (dir / "b.jpg").string()}));
  std::stringstream err;
  err << std::ifstream(dir / "err.txt").rdbuf();
  EXPECT_NE(err.str().find("broken.png"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("1 of 3 image(s) could not be embedded"), std::string::npos)
      << err.str();
  fs::remove_all(dir);
}

}  // namespace
