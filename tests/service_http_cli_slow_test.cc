// `mmsearch serve` as a client sees it: the program is started on a free loopback port
// against an index that `mmsearch index` built from a tiny random model, and every route,
// error status, the API key, concurrency, reloading under load and a clean SIGTERM are
// checked over HTTP.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "index_test_support.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using mms::testing::kProgram;
std::pair<int, std::string> run(const std::string& args) {
  return mms::testing::run_program(args);
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Equal ids, paths and texts in the same order, scores equal up to float rounding (a query
// embedded in a batch with others may differ in the last bits).
// Equal up to float rounding: batched and single encodes/searches may differ in the last
// bits, so scores agree within kScoreTolerance, and two hits whose scores tie within it may
// come in either order (or, at the k-th place, either may be the one returned).
bool same_results(const json& a, const json& b) {
  constexpr double kScoreTolerance = 5e-5;
  if (a.size() != b.size()) return false;
  auto tied = [&](const json& list, size_t i) {
    for (size_t j = 0; j < list.size(); ++j) {
      if (j != i && std::abs(list[j]["score"].get<double>() - list[i]["score"].get<double>()) <=
                        kScoreTolerance) {
        return true;
      }
    }
    return i + 1 == list.size();
  };
  for (size_t i = 0; i < a.size(); ++i) {
    json x = a[i], y = b[i];
    if (std::abs(x["score"].get<double>() - y["score"].get<double>()) > kScoreTolerance) {
      ADD_FAILURE() << "score " << x.dump() << " vs " << y.dump();
      return false;
    }
    x.erase("score");
    y.erase("score");
    if (x != y && !(tied(a, i) && tied(b, i))) {
      ADD_FAILURE() << x.dump() << " vs " << y.dump();
      return false;
    }
  }
  return true;
}

// `mmsearch serve` on the suite's index, small body limit; stopped with SIGTERM (and reaped)
// on destruction.
struct Server {
  mms::testing::ServeProcess process;
  const int port;

  Server(const fs::path& dir, const std::vector<std::string>& extra, const fs::path& log)
      : process(args(dir, extra), log), port(process.port()) {
    if (!process.up()) ADD_FAILURE() << "the server did not come up; its log:\n" << read_file(log);
  }
  // Sends SIGTERM; returns the exit status (or -1 when killed by a signal).
  int stop() { return process.stop(); }

 private:
  static std::vector<std::string> args(const fs::path& dir, const std::vector<std::string>& extra) {
    std::vector<std::string> a = {
        "--index", (dir / "index").string(), "--model", (dir / "model").string(), "--threads",
        "1",       "--max-body-bytes",       "1048576"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
};

class ServiceHttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A server that refuses an upload closes the connection while the client still sends;
    // the client must see an error, not die of SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);
    dir_ = fs::temp_directory_path() / ("mms_http_cli_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "photos");
    mms::testing::make_tiny_model(dir_ / "model");
    for (int i = 0; i < 12; ++i) {
      mms::testing::write_test_jpeg(dir_ / "photos" / ("img" + std::to_string(i) + ".jpg"), i + 1);
    }
    ASSERT_EQ(run("index " + common() + " " + (dir_ / "photos").string()).first, 0);
    std::ofstream(dir_ / "texts.txt") << "a red circle\na blue square on white\nthe green star\n";
    ASSERT_EQ(run("add-texts " + common() + " " + (dir_ / "texts.txt").string()).first, 0);
    server_ = new Server(dir_, {}, dir_ / "server.log");
  }
  static void TearDownTestSuite() {
    delete server_;
    fs::remove_all(dir_);
  }
  static std::string common() {
    return "--index " + (dir_ / "index").string() + " --model " + (dir_ / "model").string() +
           " --threads 1";
  }
  static httplib::Client client() {
    httplib::Client c("127.0.0.1", server_->port);
    c.set_read_timeout(30, 0);
    return c;
  }
  static json post_json(const std::string& path, const json& body, int expect = 200) {
    auto res = client().Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(res);
    if (!res) return {};
    EXPECT_EQ(res->status, expect) << res->body;
    return json::parse(res->body);
  }
  // Asserts an error answer: the status and the JSON error shape.
  static void expect_error(const httplib::Result& res, int status) {
    ASSERT_TRUE(res) << "no response";
    EXPECT_EQ(res->status, status) << res->body;
    const json body = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(body.is_object()) << res->body;
    EXPECT_TRUE(body["error"]["code"].is_string()) << res->body;
    EXPECT_TRUE(body["error"]["message"].is_string()) << res->body;
  }

  static fs::path dir_;
  static Server* server_;
};

fs::path ServiceHttpTest::dir_;
Server* ServiceHttpTest::server_ = nullptr;

TEST_F(ServiceHttpTest, OperationalRoutes) {
  auto c = client();
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(json::parse(health->body), json({{"status", "ok"}}));

  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(page->body.find("/v1/search/text"), std::string::npos);
  EXPECT_EQ(page->body.find("http://"), std::string::npos);  // nothing from a CDN
  EXPECT_EQ(page->body.find("https://"), std::string::npos);

  auto api = c.Get("/openapi.json");
  ASSERT_TRUE(api);
  const json doc = json::parse(api->body);
  EXPECT_EQ(doc["openapi"].get<std::string>().substr(0, 2), "3.");
  for (const char* path :
       {"/healthz", "/metrics", "/v1/search", "/v1/search/text", "/v1/search/image",
        "/v1/search/vector", "/v1/embed/text", "/v1/embed/image", "/v1/items/{id}",
        "/v1/items/{id}/image", "/v1/admin/reload"}) {
    EXPECT_TRUE(doc["paths"].contains(path)) << path;
  }

  post_json("/v1/search/text", {{"query", "a red circle"}});
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  for (const char* series :
       {"mmsearch_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"}",
        "mmsearch_http_request_duration_seconds_bucket", "mmsearch_batch_size_bucket{kind=\"text\"",
        "mmsearch_batch_size_bucket{kind=\"search\"", "mmsearch_queue_depth",
        "mmsearch_index_vectors{target=\"images\"} 12"}) {
    EXPECT_NE(metrics->body.find(series), std::string::npos) << series << "\n" << metrics->body;
  }
}

TEST_F(ServiceHttpTest, TextSearchAnswersAsTheCli) {
  for (const std::string target : {"images", "texts"}) {
    const json http =
        post_json("/v1/search/text", {{"query", "a red circle"}, {"k", 5}, {"target", target}});
    const auto [code, out] =
        run("search " + common() + " --text \"a red circle\" -k 5 --json --target " + target);
    ASSERT_EQ(code, 0);
    const json cli = json::parse(out);
    ASSERT_TRUE(http["took_ms"].is_number());
    ASSERT_EQ(http["results"].size(), cli["results"].size());
    ASSERT_EQ(http["results"].size(), target == "images" ? 5u : 3u);
    for (size_t i = 0; i < cli["results"].size(); ++i) {
      json h = http["results"][i], l = cli["results"][i];
      EXPECT_NEAR(h["score"].get<double>(), l["score"].get<double>(), 1e-6);
      h.erase("score");
      l.erase("score");
      EXPECT_EQ(h, l);
    }
  }
}

// `mmsearch search --server URL` asks the running service and prints what the local search
// prints: the same table, and the same JSON results; files named on its command line (an
// image, a --query image: term) are read by the client, never by the server.
TEST_F(ServiceHttpTest, SearchServerModeAnswersAsTheLocalSearch) {
  const std::string server = " --server http://127.0.0.1:" + std::to_string(server_->port);
  const std::string image = (dir_ / "photos/img3.jpg").string();
  const std::vector<std::string> queries = {
      "--text \"a red circle\" -k 4 --min-score 0.1",
      "--query '2 * \"the green star\" + image:" + image + "' -k 5 --target texts"};
  for (const std::string& query : queries) {
    SCOPED_TRACE(query);
    const auto [local_code, local] = run("search " + common() + " " + query + " --json");
    const auto [remote_code, remote] = run("search" + server + " " + query + " --json");
    ASSERT_EQ(local_code, 0) << local;
    ASSERT_EQ(remote_code, 0) << remote;
    EXPECT_TRUE(same_results(json::parse(remote)["results"], json::parse(local)["results"]));
  }
  // The table too, for an image query and an item.
  const std::string table_query = "--image " + image + " --item 2 -k 3";
  EXPECT_EQ(run("search" + server + " " + table_query).second,
            run("search " + common() + " " + table_query).second);
  // Errors keep their meaning: a bad k is a usage error (exit 2) with the server's message;
  // an unreachable server is a failure (exit 1) that names the URL.
  auto run_with_stderr = [](const std::string& args) {
    return mms::testing::run_command(kProgram + " " + args + " 2>&1");
  };
  const auto [bad_code, bad] = run_with_stderr("search" + server + " --text x -k 5000");
  EXPECT_EQ(bad_code, 2) << bad;
  EXPECT_NE(bad.find("k = 5000"), std::string::npos) << bad;
  const auto [down_code, down] = run_with_stderr(
      "search --server http://127.0.0.1:" + std::to_string(mms::testing::free_port()) +
      " --text x");
  EXPECT_EQ(down_code, 1) << down;
  EXPECT_NE(down.find("cannot reach the server"), std::string::npos) << down;
  EXPECT_EQ(
      run("search --server http://127.0.0.1:1 --index " + (dir_ / "index").string() + " --text x")
          .first,
      2);
}

TEST_F(ServiceHttpTest, ImageSearchEmbedAndItemRoutes) {
  const std::string jpeg = read_file(dir_ / "photos/img3.jpg");
  auto raw = client().Post("/v1/search/image?k=3", jpeg, "image/jpeg");
  ASSERT_TRUE(raw);
  ASSERT_EQ(raw->status, 200) << raw->body;
  const json by_raw = json::parse(raw->body);
  ASSERT_EQ(by_raw["results"].size(), 3u);
  EXPECT_EQ(by_raw["results"][0]["path"], (dir_ / "photos/img3.jpg").string());
  EXPECT_NEAR(by_raw["results"][0]["score"].get<double>(), 1.0, 1e-3);

  httplib::MultipartFormDataItems items = {{"image", jpeg, "img3.jpg", "image/jpeg"}};
  auto multi = client().Post("/v1/search/image?k=3", items);
  ASSERT_TRUE(multi);
  ASSERT_EQ(multi->status, 200) << multi->body;
  EXPECT_EQ(json::parse(multi->body)["results"], by_raw["results"]);

  auto texts = client().Post("/v1/search/image?k=2&target=texts", jpeg, "image/jpeg");
  ASSERT_TRUE(texts);
  EXPECT_EQ(json::parse(texts->body)["results"][0].count("text"), 1u);

  // The embed routes give unit vectors of the model's size.
  {
    const json text = post_json("/v1/embed/text", {{"text", "the green star"}});
    auto res = client().Post("/v1/embed/image", read_file(dir_ / "photos/img0.jpg"), "image/jpeg");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    const json image = json::parse(res->body);
    for (const json& e : {text, image}) {
      ASSERT_EQ(e["embedding"].size(), 16u);
      EXPECT_EQ(e["dim"], 16);
      double norm = 0;
      for (const auto& x : e["embedding"]) norm += x.get<double>() * x.get<double>();
      EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-4);
    }
  }

  // An item's metadata and thumbnail.
  {
    const json hit =
        post_json("/v1/search/text", {{"query", "a blue square"}, {"k", 1}})["results"][0];
    const std::string id = std::to_string(hit["id"].get<int64_t>());
    auto meta = client().Get(("/v1/items/" + id).c_str());
    ASSERT_TRUE(meta);
    ASSERT_EQ(meta->status, 200);
    const json item = json::parse(meta->body);
    EXPECT_EQ(item["path"], hit["path"]);
    EXPECT_EQ(item["width"], 40);
    EXPECT_EQ(item["status"], "ok");

    auto thumb = client().Get(("/v1/items/" + id + "/image?size=32").c_str());
    ASSERT_TRUE(thumb);
    ASSERT_EQ(thumb->status, 200) << thumb->body;
    EXPECT_EQ(thumb->get_header_value("Content-Type"), "image/jpeg");
    ASSERT_GT(thumb->body.size(), 2u);
    EXPECT_EQ(static_cast<unsigned char>(thumb->body[0]), 0xFF);
    EXPECT_EQ(static_cast<unsigned char>(thumb->body[1]), 0xD8);
    expect_error(client().Get(("/v1/items/" + id + "/image?size=5000").c_str()), 400);
  }
}

// Standard base64 with padding, for images sent inside JSON.
std::string base64(const std::string& bytes) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = 0;
    for (size_t j = 0; j < 3; ++j) v = (v << 8) | (j < n ? static_cast<uint8_t>(bytes[i + j]) : 0);
    for (size_t j = 0; j < 4; ++j) out += j <= n ? abc[(v >> (18 - 6 * j)) & 63] : '=';
  }
  return out;
}

TEST_F(ServiceHttpTest, CompoundQueriesAndFiltersAnswerAsTheCli) {
  // The query syntax: the same results over HTTP and from `mmsearch search --query`.
  const std::string query = "2 * \"a red circle\" - \"the green star\" + 0.5 * blue";
  const json http = post_json("/v1/search", {{"query", query}, {"k", 6}});
  const auto [code, out] = run("search " + common() + " --query '" + query + "' -k 6 --json");
  ASSERT_EQ(code, 0) << out;
  ASSERT_EQ(http["results"].size(), 6u);
  EXPECT_TRUE(same_results(http["results"], json::parse(out)["results"])) << http << "\n" << out;

  // An uploaded image as a term finds what /v1/search/image finds; an item id finds the item.
  const std::string jpeg = read_file(dir_ / "photos/img3.jpg");
  auto by_image = client().Post("/v1/search/image?k=3", jpeg, "image/jpeg");
  ASSERT_TRUE(by_image);
  const json image_results = json::parse(by_image->body)["results"];
  const json terms = post_json(
      "/v1/search",
      {{"terms", {{{"image_base64", "data:image/jpeg;base64," + base64(jpeg)}}}}, {"k", 3}});
  EXPECT_TRUE(same_results(terms["results"], image_results)) << terms;
  const int64_t id = image_results[0]["id"];
  const json like_item = post_json("/v1/search", {{"terms", {{{"item", id}}}}, {"k", 1}});
  EXPECT_EQ(like_item["results"][0]["id"], id);
  EXPECT_NEAR(like_item["results"][0]["score"].get<double>(), 1.0, 1e-4);

  // A raw embedding: /v1/search/vector with what /v1/embed/text answers equals a text search.
  const json embedding = post_json("/v1/embed/text", {{"text", "a blue square"}});
  const json by_vector =
      post_json("/v1/search/vector", {{"vector", embedding["embedding"]}, {"k", 4}});
  const json by_text = post_json("/v1/search/text", {{"query", "a blue square"}, {"k", 4}});
  EXPECT_TRUE(same_results(by_vector["results"], by_text["results"]));

  // min_score cuts the list; path_prefix keeps one folder (here: one file); dedup parses.
  const double third = by_text["results"][2]["score"].get<double>() - 1e-6;
  const json cut =
      post_json("/v1/search/text", {{"query", "a blue square"}, {"k", 10}, {"min_score", third}});
  EXPECT_EQ(cut["results"].size(), 3u);
  const std::string file = (dir_ / "photos/img5.jpg").string();
  const json one =
      post_json("/v1/search/text", {{"query", "a blue square"}, {"k", 10}, {"path_prefix", file}});
  ASSERT_EQ(one["results"].size(), 1u);
  EXPECT_EQ(one["results"][0]["path"], file);
  auto image_prefix = client().Post(
      ("/v1/search/image?k=5&dedup=true&path_prefix=" + (dir_ / "none").string()).c_str(), jpeg,
      "image/jpeg");
  ASSERT_TRUE(image_prefix);
  EXPECT_EQ(json::parse(image_prefix->body)["results"].size(), 0u);
  const auto [cli_code, cli_out] = run(
      "search " + common() + " --text \"a blue square\" -k 10 --path-prefix " + file + " --json");
  ASSERT_EQ(cli_code, 0);
  EXPECT_TRUE(same_results(json::parse(cli_out)["results"], one["results"]));

  // Bad compound queries and filters are 400 (or 404 for an unknown item), never files read.
  auto c = client();
  const std::pair<json, int> bad[] = {
      {{{"query", "image:/etc/passwd"}}, 400},
      {{{"query", "cat + "}}, 400},
      {{{"k", 3}}, 400},
      {{{"terms", json::array()}}, 400},
      {{{"terms", {{{"text", "a"}, {"item", 1}}}}}, 400},
      {{{"terms", {{{"image_base64", "not*base64"}}}}}, 400},
      {{{"terms", {{{"image_base64", base64("plain words")}}}}}, 415},
      {{{"terms", {{{"vector", {1, 2, 3}}}}}}, 400},
      {{{"terms", {{{"text", "a"}, {"weight", 0}}}}}, 400},
      {{{"terms", {{{"text", "a"}}, {{"text", "a"}, {"weight", -1}}}}}, 400},
      {{{"terms", {{{"item", 999999}}}}}, 404},
      {{{"query", "red"}, {"min_score", 3}}, 400},
      {{{"query", "red"}, {"dedup", "yes"}}, 400},
      {{{"query", "red"}, {"target", "texts"}, {"path_prefix", "/x"}}, 400},
  };
  for (const auto& [body, status] : bad) {
    SCOPED_TRACE(body.dump());
    expect_error(c.Post("/v1/search", body.dump(), "application/json"), status);
  }
  expect_error(c.Post("/v1/search/vector", R"({"k": 3})", "application/json"), 400);
  expect_error(c.Post("/v1/search/image?min_score=high", jpeg, "image/jpeg"), 400);
}

TEST_F(ServiceHttpTest, BadRequestsGetJsonErrors) {
  auto c = client();
  expect_error(c.Post("/v1/search/text", "{\"query\": ", "application/json"), 400);
  expect_error(c.Post("/v1/search/text", "[1, 2]", "application/json"), 400);
  expect_error(c.Post("/v1/search/text", R"({"query": 7})", "application/json"), 400);
  expect_error(c.Post("/v1/search/text", R"({"query": "x", "k": 0})", "application/json"), 400);
  expect_error(c.Post("/v1/search/text", R"({"query": "x", "k": 1001})", "application/json"), 400);
  expect_error(c.Post("/v1/search/text", R"({"query": "x", "k": "5"})", "application/json"), 400);
  expect_error(c.Post("/v1/search/text", R"({"query": "x", "target": "maps"})", "application/json"),
               400);
  expect_error(c.Post("/v1/search/image?k=abc", "x", "image/jpeg"), 400);
  expect_error(c.Post("/v1/search/text", json({{"query", std::string(70000, 'a')}}).dump(),
                      "application/json"),
               413);
  expect_error(c.Get("/v1/items/999999"), 404);
  expect_error(c.Get("/v1/items/999999/image"), 404);
  expect_error(c.Get("/no/such/route"), 404);
  expect_error(c.Get("/v1/items/abc"), 404);
  expect_error(c.Get("/v1/search/text"), 405);
  expect_error(c.Delete("/healthz"), 405);
  expect_error(c.Post("/v1/search/image", std::string(2 << 20, 'x'), "image/jpeg"), 413);
  expect_error(c.Post("/v1/search/image", "plain words", "text/plain"), 415);
  expect_error(c.Post("/v1/search/image", "GIF89a not really an image", "image/gif"), 415);
  httplib::MultipartFormDataItems words = {{"image", "plain words", "a.txt", "text/plain"}};
  expect_error(c.Post("/v1/search/image", words), 415);
  httplib::MultipartFormDataItems other = {{"picture", "x", "a.jpg", "image/jpeg"}};
  expect_error(c.Post("/v1/embed/image", other), 400);
  const std::string jpeg = read_file(dir_ / "photos/img1.jpg");
  expect_error(c.Post("/v1/search/image", jpeg.substr(0, jpeg.size() / 2), "image/jpeg"), 422);
  // The server is still healthy after all of that.
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);

  // Chunked bodies are bounded too.
  {
    auto c = client();
    size_t sent = 0;
    auto res = c.Post(
        "/v1/search/image",
        [&](size_t, httplib::DataSink& sink) {
          const std::string block(64 << 10, 'x');
          if (sent >= (size_t{1} << 20) + (128 << 10)) {
            sink.done();
            return true;
          }
          sent += block.size();
          return sink.write(block.data(), block.size());
        },
        "image/jpeg");
    // Either the 413 arrives, or the server closed the connection before the client finished
    // sending; it never buffers the whole body.
    if (res) {
      expect_error(res, 413);
    } else {
      std::fprintf(stderr, "note: the server closed the chunked upload early (%s)\n",
                   httplib::to_string(res.error()).c_str());
    }
    auto health = client().Get("/healthz");
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);
  }
}

TEST_F(ServiceHttpTest, ConcurrentClientsGetWhatSequentialOnesGet) {
  const std::vector<std::string> queries = {"a red circle", "a blue square on white",
                                            "the green star", "red", "green star on white"};
  std::vector<json> expected;
  for (const auto& q : queries)
    expected.push_back(post_json("/v1/search/text", {{"query", q}, {"k", 5}})["results"]);

  constexpr int kThreads = 16, kRequests = 5;
  std::atomic<int> ok{0}, same{0};
  std::mutex failures_mutex;
  std::string failures;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto c = client();
      for (int r = 0; r < kRequests; ++r) {
        const size_t q = (t + r) % queries.size();
        auto res = c.Post("/v1/search/text", json({{"query", queries[q]}, {"k", 5}}).dump(),
                          "application/json");
        if (res && res->status == 200) {
          ++ok;
          if (same_results(json::parse(res->body)["results"], expected[q])) ++same;
        } else {
          std::lock_guard<std::mutex> lock(failures_mutex);
          failures += res ? std::to_string(res->status) + " " + res->body + "\n"
                          : "no response: " + httplib::to_string(res.error()) + "\n";
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kRequests) << failures << "server log:\n"
                                             << read_file(dir_ / "server.log");
  EXPECT_EQ(same.load(), kThreads * kRequests);
  // Concurrent queries were merged: some batch held more than one (sum > count).
  const std::string metrics = client().Get("/metrics")->body;
  auto value = [&](const std::string& series) {
    const size_t at = metrics.find(series + " ");
    return at == std::string::npos ? -1.0 : std::stod(metrics.substr(at + series.size() + 1));
  };
  EXPECT_GT(value("mmsearch_batch_size_sum{kind=\"search\"}"),
            value("mmsearch_batch_size_count{kind=\"search\"}"))
      << metrics;
}

TEST_F(ServiceHttpTest, ReloadUnderLoadFailsNoRequest) {
  std::atomic<bool> done{false};
  std::atomic<int> failed{0}, answered{0};
  std::vector<std::thread> load;
  for (int t = 0; t < 4; ++t) {
    load.emplace_back([&] {
      auto c = client();
      while (!done) {
        auto res =
            c.Post("/v1/search/text", R"({"query": "a red circle", "k": 3})", "application/json");
        (res && res->status == 200) ? ++answered : ++failed;
      }
    });
  }
  // A writer adds images while the server runs; the server then loads the new index files,
  // by request and by SIGHUP.
  fs::create_directories(dir_ / "more");
  for (int i = 0; i < 3; ++i)
    mms::testing::write_test_jpeg(dir_ / "more" / ("new" + std::to_string(i) + ".jpg"), 40 + i);
  ASSERT_EQ(run("index " + common() + " " + (dir_ / "more").string()).first, 0);
  const json reloaded = post_json("/v1/admin/reload", json::object());
  EXPECT_EQ(reloaded["images"], 15);
  kill(server_->process.pid(), SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  done = true;
  for (auto& t : load) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(answered.load(), 0);
}

TEST_F(ServiceHttpTest, OverloadIsAnswered503WithRetryAfter) {
  Server small(dir_, {"--max-queue", "1"}, dir_ / "small.log");
  // Long enough to keep the one batching worker busy, within the model's 16384 tokens.
  const std::string long_query = json({{"query", std::string(12000, 'r')}}).dump();
  std::atomic<int> ok{0}, busy{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 12; ++t) {
    threads.emplace_back([&] {
      httplib::Client c("127.0.0.1", small.port);
      c.set_read_timeout(30, 0);
      auto res = c.Post("/v1/search/text", long_query, "application/json");
      if (res && res->status == 200) {
        ++ok;
      } else if (res && res->status == 503 && res->get_header_value("Retry-After") == "1" &&
                 json::parse(res->body)["error"]["code"] == "unavailable") {
        ++busy;
      } else {
        ++other;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(busy.load(), 0);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(small.stop(), 0);
}

TEST_F(ServiceHttpTest, ApiKeyIsRequiredWhenSetAndSigtermExitsZero) {
  setenv("MMSEARCH_API_KEY", "s3cret", 1);
  Server keyed(dir_, {}, dir_ / "keyed.log");
  unsetenv("MMSEARCH_API_KEY");
  httplib::Client c("127.0.0.1", keyed.port);
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  const std::string body = R"({"query": "a red circle"})";
  expect_error(c.Post("/v1/search/text", body, "application/json"), 401);
  expect_error(c.Get("/metrics"), 401);
  expect_error(c.Post("/v1/admin/reload", "", "application/json"), 401);
  c.set_bearer_token_auth("wrong");
  expect_error(c.Post("/v1/search/text", body, "application/json"), 401);
  c.set_bearer_token_auth("s3cret");
  auto res = c.Post("/v1/search/text", body, "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  // A second server on a port in use fails at once (exit 1) instead of sharing it.
  EXPECT_EQ(run("serve " + common() + " --port " + std::to_string(keyed.port)).first, 1);
  EXPECT_EQ(keyed.stop(), 0);
  const std::string log = read_file(dir_ / "keyed.log");
  EXPECT_NE(log.find("\"path\":\"/v1/search/text\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"status\":401"), std::string::npos) << log;
}

}  // namespace
