// `mmsearch eval --queries` as a user runs it on a manifest with keywords: which keywords
// become queries (images that cannot be loaded do not count), the collection and the split
// it scores, the JSON it writes, and a manifest without usable keywords refused by name.
// The figures themselves are checked against hand-worked answers in
// training_query_eval_test.cc.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "index_test_support.h"

namespace {

namespace fs = std::filesystem;
using mms::testing::run_command;

class QueriesCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mms_queries_cli_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "img");
    model_ = dir_ / "model";
    mms::testing::make_tiny_model(model_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes image `name` (a small JPEG, or junk when broken) and its manifest line.
  void add(std::ofstream& manifest, const std::string& name, const std::string& split,
           const nlohmann::json& keywords, const std::string& title, bool broken = false) {
    const fs::path path = dir_ / "img" / (name + ".jpg");
    if (broken) {
      std::ofstream(path) << "not a jpeg";
    } else {
      mms::testing::write_test_jpeg(path, static_cast<int>(count_++) + 1);
    }
    manifest << nlohmann::json{{"image", "img/" + name + ".jpg"},
                               {"caption", title + ". A picture."},
                               {"split", split},
                               {"title", title},
                               {"keywords", keywords}}
                    .dump()
             << "\n";
  }

  std::pair<int, std::string> eval(const std::string& manifest, const std::string& extra = "") {
    return run_command(mms::testing::kProgram + " eval --threads 1 --no-memory --queries --model " +
                       model_.string() + " --manifest " + (dir_ / manifest).string() + " " + extra +
                       " 2>&1");
  }

  fs::path dir_, model_;
  size_t count_ = 0;
};

TEST_F(QueriesCliTest, KeywordsWithEnoughLoadableImagesBecomeQueries) {
  std::ofstream m(dir_ / "m.jsonl");
  // "cat": 7 tagged images and one whose title names it (8 in all, 3 in test), plus a broken
  // file that must not count. "dog": 7 images, one short. "icon" is generic.
  for (int i = 0; i < 7; ++i) {
    add(m, "cat" + std::to_string(i), i < 2 ? "test" : "train", {"cat", "icon"}, "Animal");
  }
  add(m, "sleeping", "test", nlohmann::json::array(), "Cat sleeping");
  add(m, "broken", "test", {"dog"}, "Broken dog", /*broken=*/true);
  for (int i = 0; i < 7; ++i) {
    add(m, "dog" + std::to_string(i), i < 3 ? "test" : "train", {"dog", "icon"}, "Dog");
  }
  m.close();

  const auto [rc, out] = eval("m.jsonl", "--json " + (dir_ / "out.json").string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("natural queries: 1 keywords x 3 templates"), std::string::npos) << out;
  EXPECT_NE(out.find("best keywords (P@10 over the collection): cat"), std::string::npos) << out;
  const auto j = nlohmann::json::parse(std::ifstream(dir_ / "out.json"));
  const auto& q = j.at("queries");
  EXPECT_EQ(q.at("n_keywords"), 1);
  EXPECT_EQ(q.at("collection").at("n_images"), 15);  // the broken file is left out
  EXPECT_EQ(q.at("collection").at("n_queries"), 3);
  EXPECT_EQ(q.at("test").at("n_images"), 6);
  EXPECT_EQ(q.at("templates"), (nlohmann::json{"a {}", "{}", "a picture of {}"}));
  for (const char* where : {"collection", "test"}) {
    const double p10 = q.at(where).at("p10"), map = q.at(where).at("map100");
    EXPECT_GE(p10, 0.0);
    EXPECT_LE(p10, 80.0);  // 8 relevant images at most in any top 10
    EXPECT_GE(map, 0.0);
    EXPECT_LE(map, 100.0);
  }
  EXPECT_EQ(q.at("best").at(0).at("keyword"), "cat");

  // Templates of one's own, and the validation split (which has no images here).
  const auto [rc2, out2] =
      eval("m.jsonl", "--query-template '{} photo' --json " + (dir_ / "out2.json").string());
  ASSERT_EQ(rc2, 0) << out2;
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(dir_ / "out2.json"))["queries"]["templates"],
            (nlohmann::json{"{} photo"}));
  const auto [rc3, out3] = eval("m.jsonl", "--split val");
  EXPECT_NE(rc3, 0);
}

TEST_F(QueriesCliTest, AManifestWithoutUsableKeywordsIsRefusedByName) {
  std::ofstream m(dir_ / "few.jsonl");
  for (int i = 0; i < 3; ++i) add(m, "x" + std::to_string(i), "test", {"cat"}, "Cat");
  m.close();
  const auto [rc, out] = eval("few.jsonl");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("has no keyword with enough images for natural queries"), std::string::npos)
      << out;
  EXPECT_NE(out.find("few.jsonl"), std::string::npos) << out;
}

}  // namespace
