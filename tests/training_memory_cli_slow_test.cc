// `mmsearch memory` and `mmsearch eval` with a memory, as a user runs them: the memory is
// built from a train config's train pairs (a source's max_per_epoch caps its images, images
// that cannot be loaded are left out and said so), its text keys are the encoders' own
// embeddings, eval uses it unless told --no-memory, and bad requests are refused by name.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "encoders/embedder.h"
#include "encoders/memory.h"
#include "index_test_support.h"

namespace {

namespace fs = std::filesystem;
using mms::testing::run_command;
using mms::testing::run_program;

class MemoryCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mms_memory_cli_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "img");
    model_ = dir_ / "model";
    mms::testing::make_tiny_model(model_);
    // Source a: 6 loadable train images (img0 and img1 share a caption), one corrupt train
    // file, 3 test pairs. Source b: 4 train images, of which max_per_epoch 2 are kept.
    std::ofstream a(dir_ / "a.jsonl"), b(dir_ / "b.jsonl");
    const std::vector<std::string> captions = {"a red circle", "a red circle", "a blue square",
                                               "the green star 1", "the green star 2",
                                               "a blue square on white"};
    for (int i = 0; i < 6; ++i) {
      mms::testing::write_test_jpeg(dir_ / "img" / ("a" + std::to_string(i) + ".jpg"), i + 1);
      a << nlohmann::json{{"image", "img/a" + std::to_string(i) + ".jpg"},
                          {"caption", captions[i]}, {"split", "train"}}
               .dump()
        << "\n";
    }
    std::ofstream(dir_ / "img" / "broken.jpg") << "not a jpeg at all";
    a << R"({"image": "img/broken.jpg", "caption": "a broken picture", "split": "train"})" << "\n";
    for (int i = 0; i < 3; ++i) {
      mms::testing::write_test_jpeg(dir_ / "img" / ("t" + std::to_string(i) + ".jpg"), 20 + i);
      a << nlohmann::json{{"image", "img/t" + std::to_string(i) + ".jpg"},
                          {"caption", captions[i * 2]}, {"split", "test"}}
               .dump()
        << "\n";
    }
    for (int i = 0; i < 4; ++i) {
      mms::testing::write_test_jpeg(dir_ / "img" / ("b" + std::to_string(i) + ".jpg"), 40 + i);
      b << nlohmann::json{{"image", "img/b" + std::to_string(i) + ".jpg"},
                          {"caption", "the green star " + std::to_string(10 + i)},
                          {"split", "train"}}
               .dump()
        << "\n";
    }
    a.close();
    b.close();
    config_ = dir_ / "train.json";
    std::ofstream(config_) << nlohmann::json{
        {"tokenizer", (model_ / "tokenizer.model").string()},
        {"cache_dir", (dir_ / "cache").string()},
        {"data",
         {{{"name", "a"}, {"path", (dir_ / "a.jsonl").string()}},
          {{"name", "b"}, {"path", (dir_ / "b.jsonl").string()}, {"max_per_epoch", 2}}}}}
                                  .dump();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string memory_args() const {
    return "memory --model " + model_.string() + " --config " + config_.string() + " --threads 1";
  }

  fs::path dir_, model_, config_;
};

TEST_F(MemoryCliTest, BuildsAMemoryOfTheTrainPairsThatEvalUses) {
  const auto [rc, out] = run_command(mms::testing::kProgram + " " + memory_args() + " 2>&1");
  ASSERT_EQ(rc, 0) << out;
  // 6 + 2 images; texts: 5 distinct captions of a, 2 of b; one pair per image.
  EXPECT_NE(out.find("8 images, 7 texts, 8 pairs"), std::string::npos) << out;
  EXPECT_NE(out.find("1 image(s) could not be loaded"), std::string::npos) << out;

  const auto plain = mms::Embedder::load(model_.string(), /*use_memory=*/false);
  const mms::EmbeddingMemory m =
      mms::read_memory((model_ / "memory.safetensors").string(), plain->dim());
  EXPECT_EQ(m.n_images(), 8);
  EXPECT_EQ(m.n_texts(), 7);
  EXPECT_EQ(m.settings.k, mms::MemorySettings{}.k);
  // Text keys are the encoders' own embeddings (in half precision).
  const std::vector<float> first = plain->embed_texts({"a red circle"});
  for (int32_t d = 0; d < plain->dim(); ++d) EXPECT_NEAR(m.text_keys[d], first[d], 2e-3);
  // Image keys are unit vectors.
  for (int64_t i = 0; i < m.n_images(); ++i) {
    double norm = 0;
    for (int32_t d = 0; d < m.dim; ++d) norm += std::pow(m.image_keys[i * m.dim + d], 2);
    EXPECT_NEAR(norm, 1.0, 1e-2);
  }
  // The same two images of b are drawn every time (a sample fixed by the config's seed).
  const std::string first_bytes = [&] {
    std::ifstream f(model_ / "memory.safetensors", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }();
  ASSERT_EQ(run_program(memory_args()).first, 0);
  std::ifstream again(model_ / "memory.safetensors", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(again), {}), first_bytes);

  // eval uses the memory unless told not to, and says which in its JSON.
  const std::string eval = "eval --threads 1 --model " + model_.string() + " --manifest " +
                           (dir_ / "a.jsonl").string() + " --json ";
  ASSERT_EQ(run_program(eval + (dir_ / "with.json").string()).first, 0);
  ASSERT_EQ(run_program(eval + (dir_ / "without.json").string() + " --no-memory").first, 0);
  const auto with = nlohmann::json::parse(std::ifstream(dir_ / "with.json"));
  const auto without = nlohmann::json::parse(std::ifstream(dir_ / "without.json"));
  EXPECT_EQ(with.at("memory"), true);
  EXPECT_EQ(without.at("memory"), false);
  EXPECT_EQ(with.at("n_images"), 3);
}

TEST_F(MemoryCliTest, TitlesAndKeywordsJoinTheTextsWhenAsked) {
  // Source c: three images with titles and keywords; "cat" tags two of them, and img c2's
  // title equals its keyword "dog" (one text, one pair).
  std::ofstream c(dir_ / "c.jsonl");
  const std::vector<std::pair<std::string, std::vector<std::string>>> rows = {
      {"Black cat", {"cat", "pet"}}, {"Sleeping cat", {"cat"}}, {"dog", {"dog"}}};
  for (size_t i = 0; i < rows.size(); ++i) {
    mms::testing::write_test_jpeg(dir_ / "img" / ("c" + std::to_string(i) + ".jpg"),
                                  60 + static_cast<int>(i));
    c << nlohmann::json{{"image", "img/c" + std::to_string(i) + ".jpg"},
                        {"caption", rows[i].first + ", a picture " + std::to_string(i)},
                        {"split", "train"},
                        {"title", rows[i].first},
                        {"keywords", rows[i].second}}
             .dump()
      << "\n";
  }
  c.close();
  std::ofstream(dir_ / "c.json") << nlohmann::json{
      {"tokenizer", (model_ / "tokenizer.model").string()},
      {"cache_dir", (dir_ / "cache").string()},
      {"data", {{{"name", "c"}, {"path", (dir_ / "c.jsonl").string()}}}}}
                                         .dump();
  const std::string base = mms::testing::kProgram + " memory --threads 1 --model " +
                           model_.string() + " --config " + (dir_ / "c.json").string();
  auto built = [&](const std::string& texts) {
    const auto [rc, out] = run_command(base + " --texts " + texts + " 2>&1");
    EXPECT_EQ(rc, 0) << out;
    return out;
  };
  EXPECT_NE(built("captions").find("3 images, 3 texts, 3 pairs"), std::string::npos);
  // + titles "Black cat", "Sleeping cat", "dog".
  EXPECT_NE(built("captions,titles").find("3 images, 6 texts, 6 pairs"), std::string::npos);
  // + keywords cat (c0, c1) and pet (c0); "dog" is already c2's title, so no new text or pair.
  const std::string all = built("captions,titles,keywords");
  EXPECT_NE(all.find("3 images, 8 texts, 9 pairs"), std::string::npos) << all;
  EXPECT_NE(built("keywords").find("3 images, 3 texts, 4 pairs"), std::string::npos);
  // With source a beside c, a's six images have no title: a titles-only memory leaves them
  // out (and loads); a and b alone give no title at all, which is refused by name.
  std::ofstream(dir_ / "ca.json") << nlohmann::json{
      {"tokenizer", (model_ / "tokenizer.model").string()},
      {"cache_dir", (dir_ / "cache").string()},
      {"data",
       {{{"name", "c"}, {"path", (dir_ / "c.jsonl").string()}},
        {{"name", "a"}, {"path", (dir_ / "a.jsonl").string()}}}}}
                                          .dump();
  const std::string mixed = mms::testing::kProgram + " memory --threads 1 --model " +
                            model_.string() + " --config " + (dir_ / "ca.json").string();
  const auto [rc_t, out_t] = run_command(mixed + " --texts titles 2>&1");
  ASSERT_EQ(rc_t, 0) << out_t;
  EXPECT_NE(out_t.find("3 images, 3 texts, 3 pairs"), std::string::npos) << out_t;
  EXPECT_NE(out_t.find("6 image(s) have no text of the chosen kinds"), std::string::npos) << out_t;
  EXPECT_NE(out_t.find("1 image(s) could not be loaded"), std::string::npos) << out_t;
  EXPECT_EQ(run_program("eval --threads 1 --model " + model_.string() + " --manifest " +
                        (dir_ / "c.jsonl").string() + " --split train")
                .first,
            0);
  const auto [rc_n, out_n] = run_command(mms::testing::kProgram + " " + memory_args() +
                                         " --texts titles 2>&1");
  EXPECT_NE(rc_n, 0);
  EXPECT_NE(out_n.find("the training pairs give no text"), std::string::npos) << out_n;

  const auto [rc, out] = run_command(base + " --texts captions,colours 2>&1");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("unknown kind 'colours'"), std::string::npos) << out;
}

TEST_F(MemoryCliTest, BadRequestsAreRefusedByName) {
  // Settings out of range are usage errors.
  EXPECT_EQ(run_program(memory_args() + " --k 0").first, 2);
  EXPECT_EQ(run_program(memory_args() + " --temperature 0").first, 2);
  EXPECT_EQ(run_program(memory_args() + " --gate-low -2").first, 2);
  // A gate that closes above where it opens is named, and nothing is written.
  const auto [gate_rc, gate_out] =
      run_command(mms::testing::kProgram + " " + memory_args() +
                  " --gate-low 0.9 --gate-high 0.8 2>&1");
  EXPECT_NE(gate_rc, 0);
  EXPECT_NE(gate_out.find("gate_low <= gate_high"), std::string::npos) << gate_out;
  EXPECT_FALSE(fs::exists(model_ / "memory.safetensors"));
  // A config whose data has no train pairs.
  std::ofstream(dir_ / "empty.jsonl")
      << R"({"image": "img/t0.jpg", "caption": "a red circle", "split": "test"})" << "\n";
  std::ofstream(dir_ / "empty.json") << nlohmann::json{
      {"tokenizer", (model_ / "tokenizer.model").string()},
      {"data", {{{"name", "e"}, {"path", (dir_ / "empty.jsonl").string()}}}}}
                                             .dump();
  const auto [rc, out] = run_command(mms::testing::kProgram + " memory --model " +
                                     model_.string() + " --config " +
                                     (dir_ / "empty.json").string() + " 2>&1");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("has no train pairs"), std::string::npos) << out;
  // A missing model directory is named.
  const auto [rc2, out2] = run_command(mms::testing::kProgram + " memory --model " +
                                       (dir_ / "nope").string() + " --config " +
                                       config_.string() + " 2>&1");
  EXPECT_EQ(rc2, 1);
  EXPECT_NE(out2.find("nope"), std::string::npos) << out2;
  EXPECT_FALSE(fs::exists(model_ / "memory.safetensors"));
}

}  // namespace
