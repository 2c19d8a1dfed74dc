// Pair readers (JSONL manifest, COCO captions, Karpathy split), format detection and the
// evaluation galleries, on tiny fixtures in the real formats and on malformed files
// written per test.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "training/manifest.h"

namespace mms {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(MMS_SOURCE_DIR) / "tests" / "fixtures" / "manifests";

std::string fixture(const std::string& name) {
  return (kFixtures / name).string();
}

std::string in_fixtures(const std::string& relative) {
  return (kFixtures / relative).lexically_normal().string();
}

// Runs `read` and returns the mms::Error it must throw.
template <typename Read>
Error error_of(Read read) {
  try {
    read();
  } catch (const Error& error) {
    return error;
  }
  ADD_FAILURE() << "expected an mms::Error";
  return Error::internal("no error");
}

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("mms_manifest_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& content) {
    const fs::path path = dir_ / name;
    std::ofstream(path, std::ios::binary) << content;
    return path.string();
  }

  fs::path dir_;
};

TEST(Split, NamesRoundTrip) {
  for (Split split : {Split::kTrain, Split::kVal, Split::kTest}) {
    EXPECT_EQ(parse_split(split_name(split)), split);
  }
  EXPECT_STREQ(split_name(Split::kVal), "val");
  const Error error = error_of([] { parse_split("restval"); });
  EXPECT_EQ(error.kind(), ErrorKind::kInvalidArgument);
  EXPECT_STREQ(error.what(), "unknown split 'restval' (expected train, val or test)");
}

TEST(ReadManifest, ParsesFixtureAndResolvesPaths) {
  const std::vector<Pair> pairs = read_manifest(fixture("pairs.jsonl"));
  ASSERT_EQ(pairs.size(), 5u);

  EXPECT_EQ(pairs[0].image, in_fixtures("images/grinning_google.png"));
  EXPECT_EQ(pairs[0].caption, "grinning face");
  EXPECT_EQ(pairs[0].split, Split::kTest);
  EXPECT_EQ(pairs[0].group, "1f600");
  EXPECT_EQ(pairs[1].image, in_fixtures("images/grinning_twitter.png"));
  EXPECT_EQ(pairs[1].caption, "grinning face");

  // "./images/../images/x" normalizes to the same file; the caption loses its whitespace.
  EXPECT_EQ(pairs[2].image, pairs[0].image);
  EXPECT_EQ(pairs[2].caption, "happy smiley");

  // Absolute paths are kept; unknown keys are ignored; no group means the image path.
  EXPECT_EQ(pairs[3].image, "/srv/clipart/tree.png");
  EXPECT_EQ(pairs[3].split, Split::kVal);
  EXPECT_EQ(pairs[3].group, "/srv/clipart/tree.png");

  // No split means train; ".." leaves the manifest's folder.
  EXPECT_EQ(pairs[4].image, (kFixtures.parent_path() / "shared" / "cat.png").string());
  EXPECT_EQ(pairs[4].split, Split::kTrain);
  EXPECT_EQ(pairs[4].group, pairs[4].image);
}

TEST(ReadManifest, ImageRootReplacesManifestFolder) {
  const std::vector<Pair> pairs = read_manifest(fixture("pairs.jsonl"), "/data/emoji/");
  ASSERT_EQ(pairs.size(), 5u);
  EXPECT_EQ(pairs[0].image, "/data/emoji/images/grinning_google.png");
  EXPECT_EQ(pairs[3].image, "/srv/clipart/tree.png");
  EXPECT_EQ(pairs[4].image, "/data/shared/cat.png");
}

TEST_F(TempDir, ManifestRelativePathResolvesAgainstAbsoluteFolder) {
  write("m.jsonl", R"({"image": "a.png", "caption": "x"})");
  const fs::path cwd = fs::current_path();
  fs::current_path(dir_);
  const std::vector<Pair> pairs = read_manifest("m.jsonl");
  fs::current_path(cwd);
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(pairs[0].image, (dir_ / "a.png").lexically_normal().string());
}

TEST_F(TempDir, ManifestSkipsBlankLinesAndAcceptsBomAndCrlf) {
  const std::string path = write("m.jsonl",
                                 "\xEF\xBB\xBF{\"image\": \"a.png\", \"caption\": \"one\"}\r\n"
                                 "\r\n"
                                 "   \n"
                                 "{\"image\": \"b.png\", \"caption\": \"two\", \"split\": null,"
                                 " \"group\": null}\n");
  const std::vector<Pair> pairs = read_manifest(path);
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[0].caption, "one");
  EXPECT_EQ(pairs[1].caption, "two");
  EXPECT_EQ(pairs[1].split, Split::kTrain);
  EXPECT_EQ(pairs[1].group, (dir_ / "b.png").string());
  EXPECT_TRUE(read_manifest(write("empty.jsonl", "")).empty());
}

TEST_F(TempDir, ManifestReadsTitleKeywordsAndNames) {
  const std::string path = write(
      "m.jsonl",
      R"({"image": "a.png", "caption": "Red apple. Keywords: apple, fruit.", "title": " Red apple ",)"
      R"( "keywords": ["apple", " ", "fruit "], "names": ["mela rossa", "roter Apfel"]})"
      "\n"
      R"({"image": "b.png", "caption": "plain", "title": null, "keywords": null})");
  const std::vector<Pair> pairs = read_manifest(path);
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[0].title, "Red apple");
  EXPECT_EQ(pairs[0].keywords, (std::vector<std::string>{"apple", "fruit"}));  // trimmed, blanks out
  EXPECT_EQ(pairs[0].names, (std::vector<std::string>{"mela rossa", "roter Apfel"}));
  EXPECT_TRUE(pairs[1].title.empty());
  EXPECT_TRUE(pairs[1].keywords.empty());
  EXPECT_TRUE(pairs[1].names.empty());
}

TEST_F(TempDir, ManifestAcceptsRestvalAsTrain) {
  const std::string path =
      write("m.jsonl", R"({"image": "a.png", "caption": "x", "split": "restval"})");
  EXPECT_EQ(read_manifest(path).at(0).split, Split::kTrain);
}

TEST_F(TempDir, ManifestErrorsNameFileAndLine) {
  const std::string good = R"({"image": "a.png", "caption": "fine"})";
  struct Case {
    std::string bad_line;
    std::string problem;
  };
  const std::vector<Case> cases = {
      {R"({"image": "a.png", "caption": "x")", "column 34: invalid JSON: syntax error"},
      {"not json at all", "column 2: invalid JSON: syntax error"},
      {R"(["a.png", "x"])", ": expected a JSON object, found an array"},
      {R"("a.png")", ": expected a JSON object, found a string"},
      {R"({"caption": "x"})", ": missing \"image\""},
      {R"({"image": "a.png"})", ": missing \"caption\""},
      {R"({"image": 7, "caption": "x"})", ": \"image\" must be a string, not a number"},
      {R"({"image": "a.png", "caption": ["x"]})", ": \"caption\" must be a string, not an array"},
      {R"({"image": "a.png", "caption": null})", ": \"caption\" must be a string, not a null"},
      {R"({"image": "a.png", "caption": "x", "split": 1})", ": \"split\" must be a string"},
      {R"({"image": "a.png", "caption": "x", "split": "dev"})",
       ": unknown split 'dev' (expected train, val or test)"},
      {R"({"image": "a.png", "caption": "x", "group": {}})", ": \"group\" must be a string"},
      {R"({"image": "a.png", "caption": "  "})", ": empty caption"},
      {R"({"image": "", "caption": "x"})", ": empty image path"},
      {R"({"image": "a.png", "caption": "x", "title": 3})", ": \"title\" must be a string"},
      {R"({"image": "a.png", "caption": "x", "keywords": "cat"})",
       ": \"keywords\" must be an array of strings, not a string"},
      {R"({"image": "a.png", "caption": "x", "names": ["a", 1]})",
       ": \"names\" must hold only strings, not a number"},
      // Bytes that are not UTF-8 are escaped in the message, which stays ASCII.
      {"{\"image\": \"a.png\", \"caption\": \"\xC3\x28\"}",
       "invalid JSON: syntax error while parsing value - invalid string: ill-formed UTF-8 byte; "
       "last read: '\"\\xC3('"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.bad_line);
    // The bad line is line 4: a good line and two blank lines come before it.
    const std::string path = write("bad.jsonl", good + "\n\n\n" + c.bad_line + "\n" + good + "\n");
    const Error error = error_of([&] { read_manifest(path); });
    EXPECT_EQ(error.kind(), ErrorKind::kCorrupt);
    const std::string message = error.what();
    EXPECT_EQ(message.rfind("manifest '" + path + "' line 4", 0), 0u) << message;
    EXPECT_NE(message.find(c.problem), std::string::npos) << message;
  }
}

TEST_F(TempDir, ManifestErrorOnLastLineOfLargeFile) {
  std::string content;
  for (int i = 0; i < 20000; ++i) {
    content += R"({"image": "img/)" + std::to_string(i % 500) + R"(.png", "caption": "caption )" +
               std::to_string(i) + "\", \"split\": \"test\"}\n";
  }
  EXPECT_EQ(read_manifest(write("big.jsonl", content)).size(), 20000u);
  const std::string path = write("bad.jsonl", content + R"({"image": "x.png"})" + "\n");
  EXPECT_STREQ(error_of([&] { read_manifest(path); }).what(),
               ("manifest '" + path + "' line 20001: missing \"caption\"").c_str());
}

TEST_F(TempDir, MissingOrDirectoryManifest) {
  const std::string missing = (dir_ / "nope.jsonl").string();
  Error error = error_of([&] { read_manifest(missing); });
  EXPECT_EQ(error.kind(), ErrorKind::kNotFound);
  EXPECT_EQ(std::string(error.what()), "manifest '" + missing + "' does not exist");
  error = error_of([&] { read_pairs(missing); });
  EXPECT_EQ(error.kind(), ErrorKind::kNotFound);
  EXPECT_EQ(std::string(error.what()), "manifest '" + missing + "' does not exist");

  error = error_of([&] { read_manifest(dir_.string()); });
  EXPECT_EQ(error.kind(), ErrorKind::kInvalidArgument);
  EXPECT_NE(std::string(error.what()).find("is a directory"), std::string::npos);
}

TEST(ReadCocoCaptions, OnePairPerAnnotation) {
  const std::vector<Pair> pairs =
      read_coco_captions(fixture("coco_captions.json"), "/data/coco/val2014", Split::kTest);
  ASSERT_EQ(pairs.size(), 6u);
  EXPECT_EQ(pairs[0].image, "/data/coco/val2014/COCO_val2014_000000000042.jpg");
  EXPECT_EQ(pairs[0].caption, "A white vase with flowers on a table.");
  EXPECT_EQ(pairs[0].group, "42");
  EXPECT_EQ(pairs[0].split, Split::kTest);
  EXPECT_EQ(pairs[1].image, "/data/coco/val2014/COCO_val2014_000000000073.jpg");
  EXPECT_EQ(pairs[1].caption, "A motorcycle parked on a gravel road.");
  EXPECT_EQ(pairs[2].image, pairs[0].image);
  EXPECT_EQ(pairs[5].group, "74");

  const Gallery gallery = make_gallery(pairs, Split::kTest);
  EXPECT_EQ(gallery.images.size(), 3u);
  EXPECT_EQ(gallery.texts.size(), 6u);
  EXPECT_EQ(gallery.image_to_texts[0], (std::vector<int32_t>{0, 2}));
}

TEST(ReadCocoCaptions, ImageRootDefaultsToFileFolder) {
  const std::vector<Pair> pairs =
      read_coco_captions(fixture("coco_captions.json"), "", Split::kVal);
  EXPECT_EQ(pairs.at(3).image, in_fixtures("COCO_val2014_000000000074.jpg"));
  EXPECT_EQ(pairs.at(3).split, Split::kVal);
}

TEST_F(TempDir, CocoErrorsNameFileAndEntry) {
  const std::string image = R"({"id": 1, "file_name": "a.jpg"})";
  const std::string note = R"({"image_id": 1, "id": 10, "caption": "x"})";
  struct Case {
    std::string json;
    std::string problem;
  };
  const std::vector<Case> cases = {
      {"[]", ": expected a JSON object at the top, found an array"},
      {"{\"images\": [" + image + "],\n \"annotations\": [" + note + ",]}",
       ": invalid JSON: parse error at line 2, column"},
      {R"({"annotations": []})", ": missing \"images\""},
      {"{\"images\": [" + image + "]}", ": missing \"annotations\""},
      {"{\"images\": {}, \"annotations\": []}", ": \"images\" must be an array, not an object"},
      {R"({"images": [{"file_name": "a.jpg"}], "annotations": []})", ": images[0]: missing \"id\""},
      {R"({"images": [{"id": 1.5, "file_name": "a.jpg"}], "annotations": []})",
       ": images[0]: \"id\" must be an integer or a string, not a number"},
      {R"({"images": [{"id": 1}], "annotations": []})", ": images[0]: missing \"file_name\""},
      {"{\"images\": [" + image + ", " + image + "], \"annotations\": []}",
       ": images[1]: image id 1 appears twice"},
      {"{\"images\": [" + image + ", 3], \"annotations\": []}",
       ": images[1] must be an object, not a number"},
      {"{\"images\": [" + image + "], \"annotations\": [" + note +
           R"(, {"image_id": 99, "id": 11, "caption": "y"}]})",
       ": annotations[1] (id 11): unknown image_id 99 (not in \"images\")"},
      {"{\"images\": [" + image + R"(], "annotations": [{"id": 12, "caption": "y"}]})",
       ": annotations[0] (id 12): missing \"image_id\""},
      {"{\"images\": [" + image + R"(], "annotations": [{"id": 12, "image_id": 1}]})",
       ": annotations[0] (id 12): missing \"caption\""},
      {"{\"images\": [" + image + R"(], "annotations": [{"image_id": 1, "caption": " "}]})",
       ": annotations[0]: empty caption"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    const std::string path = write("captions.json", c.json);
    const Error error = error_of([&] { read_coco_captions(path, "", Split::kTest); });
    EXPECT_EQ(error.kind(), ErrorKind::kCorrupt);
    const std::string message = error.what();
    EXPECT_EQ(message.rfind("COCO captions '" + path + "'", 0), 0u) << message;
    EXPECT_NE(message.find(c.problem), std::string::npos) << message;
  }
}

TEST(ReadKarpathySplit, CocoFlavour) {
  const std::vector<Pair> pairs = read_karpathy_split(fixture("karpathy_coco.json"), "/data/coco");
  ASSERT_EQ(pairs.size(), 6u);
  EXPECT_EQ(pairs[0].image, "/data/coco/train2014/COCO_train2014_000000000009.jpg");
  EXPECT_EQ(pairs[0].caption, "A plate of food.");
  EXPECT_EQ(pairs[0].split, Split::kTrain);
  EXPECT_EQ(pairs[0].group, "9");
  EXPECT_EQ(pairs[1].caption, "Bowls of fruit");
  EXPECT_EQ(pairs[2].image, "/data/coco/val2014/COCO_val2014_000000000042.jpg");
  EXPECT_EQ(pairs[2].split, Split::kTrain);  // restval
  EXPECT_EQ(pairs[3].split, Split::kVal);
  EXPECT_EQ(pairs[4].split, Split::kTest);
  EXPECT_EQ(pairs[5].caption, "A dog in the shade.");
  EXPECT_EQ(pairs[5].group, "74");

  const Gallery test = make_gallery(pairs, Split::kTest);
  EXPECT_EQ(test.images, (std::vector<std::string>{pairs[4].image}));
  EXPECT_EQ(test.image_to_texts, (std::vector<std::vector<int32_t>>{{0, 1}}));
}

TEST(ReadKarpathySplit, FlickrFlavourWithoutFilepath) {
  const std::vector<Pair> pairs = read_karpathy_split(fixture("karpathy_flickr30k.json"), "");
  ASSERT_EQ(pairs.size(), 3u);
  EXPECT_EQ(pairs[0].image, in_fixtures("1000092795.jpg"));
  EXPECT_EQ(pairs[0].group, "0");  // no cocoid: imgid
  EXPECT_EQ(pairs[1].caption, "Two men outside.");
  EXPECT_EQ(pairs[2].split, Split::kTest);
  EXPECT_EQ(pairs[2].group, "1");
}

TEST_F(TempDir, KarpathyErrorsNameFileAndEntry) {
  struct Case {
    std::string json;
    std::string problem;
  };
  const std::vector<Case> cases = {
      {R"({"dataset": "coco"})", ": missing \"images\""},
      {R"({"images": [{"filename": "a.jpg", "split": "dev", "sentences": []}]})",
       ": images[0]: unknown split 'dev' (expected train, val, test or restval)"},
      {R"({"images": [{"split": "test", "sentences": []}]})", ": images[0]: missing \"filename\""},
      {R"({"images": [{"filename": "a.jpg", "sentences": []}]})", ": images[0]: missing \"split\""},
      {R"({"images": [{"filename": "a.jpg", "split": "test"}]})",
       ": images[0]: missing \"sentences\""},
      {R"({"images": [{"filename": "a.jpg", "split": "test", "sentences": [{"raw": "x"}, {}]}]})",
       ": images[0].sentences[1]: missing \"raw\""},
      {R"({"images": [{"filename": "a.jpg", "split": "test", "sentences": [{"raw": ""}]}]})",
       ": images[0].sentences[0]: empty caption"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    const std::string path = write("dataset.json", c.json);
    const Error error = error_of([&] { read_karpathy_split(path, ""); });
    EXPECT_EQ(error.kind(), ErrorKind::kCorrupt);
    const std::string message = error.what();
    EXPECT_EQ(message.rfind("Karpathy split '" + path + "'", 0), 0u) << message;
    EXPECT_NE(message.find(c.problem), std::string::npos) << message;
  }
}

TEST_F(TempDir, DetectsFormatByContent) {
  EXPECT_EQ(detect_pair_format(fixture("pairs.jsonl")), PairFormat::kManifest);
  EXPECT_EQ(detect_pair_format(fixture("coco_captions.json")), PairFormat::kCoco);
  EXPECT_EQ(detect_pair_format(fixture("karpathy_coco.json")), PairFormat::kKarpathy);
  EXPECT_EQ(detect_pair_format(fixture("karpathy_flickr30k.json")), PairFormat::kKarpathy);

  const auto detect = [&](const std::string& content) {
    return detect_pair_format(write("sniff.json", content));
  };
  EXPECT_EQ(detect(""), PairFormat::kManifest);
  EXPECT_EQ(detect("\n\n{\"caption\": \"x\", \"image\": \"a.png\"}\n"), PairFormat::kManifest);
  EXPECT_EQ(detect(R"({"group": "g", "split": "test"})"), PairFormat::kManifest);
  EXPECT_EQ(detect("garbage\n{\"image\": \"a\"}"), PairFormat::kManifest);
  EXPECT_EQ(detect("[1, 2]"), PairFormat::kManifest);
  EXPECT_EQ(detect(R"({"images": [{"id": 1, "file_name": "a.jpg"}]})"), PairFormat::kCoco);
  EXPECT_EQ(detect(R"({"info": {"images": 1}, "annotations": []})"), PairFormat::kCoco);
  EXPECT_EQ(detect(R"({"dataset": "flickr30k", "images": []})"), PairFormat::kKarpathy);
  EXPECT_EQ(detect(R"({"images": []})"), PairFormat::kKarpathy);
}

TEST(ReadPairs, DispatchesOnContent) {
  EXPECT_EQ(read_pairs(fixture("pairs.jsonl")).size(), 5u);
  const std::vector<Pair> coco = read_pairs(fixture("coco_captions.json"), "/coco");
  ASSERT_EQ(coco.size(), 6u);
  EXPECT_EQ(coco[0].split, Split::kTest);
  EXPECT_EQ(coco[0].image, "/coco/COCO_val2014_000000000042.jpg");
  EXPECT_EQ(read_pairs(fixture("coco_captions.json"), "", Split::kTrain)[0].split, Split::kTrain);
  EXPECT_EQ(read_pairs(fixture("karpathy_coco.json")).size(), 6u);
}

Pair pair(const std::string& image, const std::string& caption, Split split = Split::kTest) {
  return Pair{image, caption, split, image, "", "", {}, {}};
}

TEST(MakeGallery, SharedTextsAndMultiCaptionImages) {
  const std::vector<Pair> pairs = {
      pair("google/1f600.png", "grinning face"),
      pair("google/1f600.png", "happy smiley"),                // one image, two captions
      pair("twitter/1f600.png", "grinning face"),              // one caption, two images
      pair("train/only.png", "grinning face", Split::kTrain),  // another split: ignored
      pair("twitter/2764.png", "red heart"),
      pair("google/1f600.png", "grinning face"),  // a repeated pair links once
      pair("twitter/1f600.png", "happy smiley"),
  };
  const Gallery gallery = make_gallery(pairs, Split::kTest);
  EXPECT_EQ(gallery.images, (std::vector<std::string>{"google/1f600.png", "twitter/1f600.png",
                                                      "twitter/2764.png"}));
  EXPECT_EQ(gallery.texts,
            (std::vector<std::string>{"grinning face", "happy smiley", "red heart"}));
  EXPECT_EQ(gallery.text_to_images, (std::vector<std::vector<int32_t>>{{0, 1}, {0, 1}, {2}}));
  EXPECT_EQ(gallery.image_to_texts, (std::vector<std::vector<int32_t>>{{0, 1}, {0, 1}, {2}}));

  const Gallery train = make_gallery(pairs, Split::kTrain);
  EXPECT_EQ(train.images, (std::vector<std::string>{"train/only.png"}));
  EXPECT_EQ(train.text_to_images, (std::vector<std::vector<int32_t>>{{0}}));
  EXPECT_TRUE(make_gallery(pairs, Split::kVal).images.empty());
}

TEST(MakeGallery, IndexListsAreSorted) {
  // "b" is first paired with the second image, later with the first.
  const Gallery gallery =
      make_gallery({pair("x.png", "a"), pair("y.png", "b"), pair("x.png", "b")}, Split::kTest);
  EXPECT_EQ(gallery.text_to_images[1], (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(gallery.image_to_texts[0], (std::vector<int32_t>{0, 1}));
}

}  // namespace
}  // namespace mms

namespace {

TEST(ReadManifest, OptionalLabelsReachTheGallery) {
  const auto dir = std::filesystem::temp_directory_path() / "mms_manifest_labels";
  std::filesystem::create_directories(dir);
  {
    std::ofstream f(dir / "m.jsonl");
    f << R"({"image": "a.png", "caption": "a photo of a bag", "split": "test", "label": "a bag"})" "\n"
      << R"({"image": "b.png", "caption": "a shoe", "split": "test", "label": "a sneaker"})" "\n"
      << R"({"image": "c.png", "caption": "unlabelled", "split": "train"})" "\n";
  }
  const auto pairs = mms::read_manifest((dir / "m.jsonl").string());
  EXPECT_EQ(pairs[0].label, "a bag");
  EXPECT_EQ(pairs[2].label, "");
  const auto test = mms::make_gallery(pairs, mms::Split::kTest);
  EXPECT_EQ(test.image_labels, (std::vector<std::string>{"a bag", "a sneaker"}));
  // One unlabelled image means the split has no usable labels at all.
  EXPECT_TRUE(mms::make_gallery(pairs, mms::Split::kTrain).image_labels.empty());
  std::filesystem::remove_all(dir);
}

}  // namespace
