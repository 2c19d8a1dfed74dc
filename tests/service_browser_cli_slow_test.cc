// The search page in a real browser: `mmsearch serve` is started on an index built by the
// program from a tiny random model (images, some with captions, and texts), and
// tests/browser/search_page.mjs drives Debian's headless Chromium through playwright-core
// against it. The script checks the page against the API as it goes and exits non-zero
// naming a failed check; here its summary is checked once more against the fixture and an
// API answer of our own. The screenshot lands in build/test-artifacts/browser/.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "index_test_support.h"

namespace {

namespace fs = std::filesystem;
using mms::testing::run_program;
using nlohmann::json;

const fs::path kChromium = "/usr/bin/chromium";
const fs::path kBrowserDir = fs::path(MMS_SOURCE_DIR) / "tests/browser";

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ServiceBrowserTest, SearchPageWorksInChromium) {
  if (!fs::exists(kChromium)) {
    GTEST_SKIP() << kChromium << " is absent; scripts/setup.sh installs Debian's chromium";
  }
  if (!fs::exists(kBrowserDir / "node_modules/playwright-core")) {
    GTEST_SKIP() << kBrowserDir / "node_modules/playwright-core"
                 << " is absent; scripts/setup.sh runs npm ci --prefix tests/browser";
  }

  const fs::path dir =
      fs::temp_directory_path() / ("mms_browser_cli_test_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "photos");
  mms::testing::make_tiny_model(dir / "model");
  // 320x240: larger than the page's 256 px thumbnails, so that the full image is told apart.
  // Every other image gets a caption, which its card must show (the others: the file name).
  std::map<std::string, std::string> captions;  // path -> caption
  const fs::path manifest_path = dir / "captions.jsonl";
  {
    std::ofstream manifest(manifest_path);
    for (int i = 0; i < 8; ++i) {
      const std::string photo = (dir / "photos" / ("img" + std::to_string(i) + ".jpg")).string();
      mms::testing::write_test_jpeg(photo, i + 1, 320, 240);
      if (i % 2 == 0) {
        captions[photo] = "picture number " + std::to_string(i);
        manifest << json({{"image", photo}, {"caption", captions[photo]}}).dump() << "\n";
      }
    }
  }
  const std::string index = "--index " + (dir / "index").string() + " --model " +
                            (dir / "model").string() + " --threads 1 ";
  const std::string photos = (dir / "photos").string();
  const std::string with_captions = "--captions " + manifest_path.string() + " ";
  ASSERT_EQ(run_program("index " + index + with_captions + photos).first, 0);
  const std::set<std::string> texts = {"a red circle", "a blue square on white", "the green star"};
  {
    std::ofstream out(dir / "texts.txt");
    for (const std::string& t : texts) out << t << "\n";
  }
  ASSERT_EQ(run_program("add-texts " + index + (dir / "texts.txt").string()).first, 0);

  mms::testing::ServeProcess server(
      {"--index", (dir / "index").string(), "--model", (dir / "model").string(), "--threads", "1"},
      dir / "server.log");
  ASSERT_TRUE(server.up()) << "the server did not come up; its log:\n"
                           << read_file(dir / "server.log");

  const fs::path artifacts = fs::path(MMS_BINARY_DIR) / "test-artifacts/browser";
  fs::create_directories(artifacts);
  const fs::path screenshot = artifacts / "search_page.png";
  fs::remove(screenshot);
  const std::string base_url = "http://127.0.0.1:" + std::to_string(server.port()) + "/";
  const auto [code, out] =
      mms::testing::run_command("node " + (kBrowserDir / "search_page.mjs").string() + " " +
                                base_url + " " + screenshot.string());
  std::printf("screenshot: %s\n", screenshot.c_str());
  ASSERT_EQ(code, 0) << "search_page.mjs failed (its reason is above); the server's log:\n"
                     << read_file(dir / "server.log");
  ASSERT_TRUE(fs::exists(screenshot));
  EXPECT_GT(fs::file_size(screenshot), 0u);

  const json summary = json::parse(out);
  // The grid showed what the API answers for the same query, with the fixture's captions.
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(30, 0);
  const auto api = client.Post("/v1/search/text",
                               json({{"query", summary["query"]}, {"k", summary["k"]}}).dump(),
                               "application/json");
  ASSERT_TRUE(api);
  const json results = json::parse(api->body)["results"];
  const json& cards = summary["images"];
  ASSERT_EQ(cards.size(), results.size());
  ASSERT_GT(cards.size(), 0u);
  for (size_t i = 0; i < cards.size(); ++i) {
    const std::string path = cards[i]["path"];
    EXPECT_EQ(cards[i]["id"], results[i]["id"]) << "card " << i;
    EXPECT_EQ(path, results[i]["path"]) << "card " << i;
    if (captions.count(path)) {
      EXPECT_EQ(cards[i]["caption"], captions[path]) << path;
    } else {
      EXPECT_TRUE(cards[i]["caption"].is_null()) << path;
    }
    EXPECT_EQ(cards[i]["thumbnail"], json({256, 192})) << path;  // 320x240 scaled to 256
  }
  EXPECT_EQ(summary["full_image"], json({320, 240}));
  ASSERT_EQ(summary["texts"].size(), texts.size());
  for (const json& t : summary["texts"]) EXPECT_TRUE(texts.count(t["text"])) << t.dump();
  EXPECT_EQ(summary["foreign_requests"], json::array());
  std::printf("search_page.mjs took %lld ms in the browser\n", summary["took_ms"].get<long long>());

  EXPECT_EQ(server.stop(), 0);
  fs::remove_all(dir);
}

}  // namespace
