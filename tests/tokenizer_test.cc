// Trains a small SentencePiece model on a corpus the test writes, then checks the tokenizer as
// the text encoder and the CLI use it: ids, padding, round trips, errors, spm_encode parity.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"

namespace mms {
namespace {

namespace fs = std::filesystem;

const char* const kWords[] = {
    "a",        "the",      "cat",      "dog",      "runs",      "jumps",  "over",       "lazy",
    "quick",    "brown",    "fox",      "red",      "blue",      "green",  "house",      "tree",
    "car",      "small",    "large",    "happy",    "bird",      "flies",  "above",      "river",
    "mountain", "photo",    "of",       "with",     "and",       "woman",  "man",        "child",
    "plays",    "in",       "park",     "yellow",   "flower",    "sunny",  "beach",      "ocean",
    "waves",    "zebra",    "giraffe",  "kitchen",  "table",     "chair",  "window",     "street",
    "night",    "city",     "lights",   "snow",     "winter",    "quiet",  "bicycle",    "orange",
    "purple",   "smiling",  "face",     "heart",    "star",      "moon",   "sun",        "cloud",
    "rain",     "umbrella", "train",    "station",  "airplane",  "sky",    "boat",       "harbor",
    "horse",    "field",    "grass",    "forest",   "castle",    "bridge", "stone",      "wooden",
    "glass",    "bottle",   "coffee",   "cup",      "breakfast", "dinner", "plate",      "pizza",
    "guitar",   "music",    "dancing",  "people",   "crowd",     "market", "vegetables", "fruit",
    "apple",    "banana",   "sandwich", "computer", "keyboard",  "phone",  "book",       "reading",
};

// Suffixes glued to some words so the corpus has enough distinct pieces for the vocabulary.
const char* const kSuffixes[] = {"", "", "", "s", "ing", "ed", "er", "ly", "ness"};

// Unicode lines repeated often enough to sit inside character_coverage.
const char* const kUnicodeLines[] = {
    "café crème brûlée",   "a naïve résumé from zürich", "东京 的 猫 很 可爱",
    "🐱 cat 🐶 dog 🍕 pizza", "señor niño piñata",          "über straße",
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string random_sentence(std::mt19937& rng, int words, bool suffixes = false) {
  std::uniform_int_distribution<size_t> pick(0, std::size(kWords) - 1);
  std::uniform_int_distribution<size_t> pick_suffix(0, std::size(kSuffixes) - 1);
  std::string s;
  for (int i = 0; i < words; ++i) {
    if (i > 0) s += ' ';
    s += kWords[pick(rng)];
    if (suffixes) s += kSuffixes[pick_suffix(rng)];
  }
  return s;
}

// Expects `fn` to throw mms::Error of `kind` whose message contains `needle`.
template <typename Fn>
void expect_error(Fn fn, ErrorKind kind, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an mms::Error of kind " << error_kind_name(kind);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not mention '" << needle << "'";
  }
}

class TokenizerTest : public testing::Test {
 protected:
  static constexpr int32_t kVocabSize = 300;

  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() /
                        ("mms_tokenizer_test_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    std::mt19937 rng(7);
    std::ostringstream corpus;
    for (int i = 0; i < 400; ++i) {
      corpus << random_sentence(rng, 6 + i % 7, true) << (i % 3 == 0 ? "." : "") << "\n";
      if (i % 2 == 0) corpus << kUnicodeLines[(i / 2) % std::size(kUnicodeLines)] << "\n";
    }
    write_file(corpus_path(), corpus.str());

    TokenizerTrainOptions options;
    options.corpus_path = corpus_path().string();
    options.vocab_size = kVocabSize;
    options.out_path = model_path().string();
    options.num_threads = 2;
    train_tokenizer(options);
    tokenizer_ = new Tokenizer(Tokenizer::load(model_path().string()));
  }

  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
    dir_ = nullptr;
  }

  static fs::path corpus_path() { return *dir_ / "corpus.txt"; }
  static fs::path model_path() { return *dir_ / "models" / "tok.model"; }
  static const Tokenizer& tok() { return *tokenizer_; }

  static fs::path* dir_;
  static Tokenizer* tokenizer_;
};

fs::path* TokenizerTest::dir_ = nullptr;
Tokenizer* TokenizerTest::tokenizer_ = nullptr;

TEST_F(TokenizerTest, ReservedIdsAndVocabSize) {
  EXPECT_EQ(tok().pad_id(), 0);
  EXPECT_EQ(tok().unk_id(), 1);
  EXPECT_EQ(tok().bos_id(), 2);
  EXPECT_EQ(tok().eos_id(), 3);
  EXPECT_EQ(tok().vocab_size(), kVocabSize);
}

TEST_F(TokenizerTest, TrainingWritesOnlyTheModel) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(model_path().parent_path())) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{"tok.model"});
}

TEST_F(TokenizerTest, WrapsInBosEos) {
  const auto ids = tok().encode("a quick brown fox");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), tok().bos_id());
  EXPECT_EQ(ids.back(), tok().eos_id());
  for (size_t i = 1; i + 1 < ids.size(); ++i) {
    EXPECT_GT(ids[i], tok().eos_id()) << "special id inside the sequence at " << i;
    EXPECT_LT(ids[i], tok().vocab_size());
  }
}

TEST_F(TokenizerTest, EmptyAndBlankTextGiveOnlyBosEos) {
  const std::vector<int32_t> expected = {tok().bos_id(), tok().eos_id()};
  EXPECT_EQ(tok().encode(""), expected);
  EXPECT_EQ(tok().encode("   \t  "), expected);
  EXPECT_EQ(tok().decode(expected), "");
}

TEST_F(TokenizerTest, AsciiRoundTripIsCaseFoldedAndSpaceCollapsed) {
  EXPECT_EQ(tok().decode(tok().encode("the quick brown fox jumps over the lazy dog.")),
            "the quick brown fox jumps over the lazy dog.");
  EXPECT_EQ(tok().decode(tok().encode("  The QUICK  Brown   Fox ")), "the quick brown fox");
  EXPECT_EQ(tok().encode("A Happy Dog"), tok().encode("a happy dog"));
}

TEST_F(TokenizerTest, UnicodeRoundTrip) {
  for (const char* line : kUnicodeLines) {
    EXPECT_EQ(tok().decode(tok().encode(line)), line);
  }
  // Case folding applies beyond ASCII, and NFKC composes "e" + U+0301 into "é".
  EXPECT_EQ(tok().decode(tok().encode("CAFÉ CRÈME")), "café crème");
  EXPECT_EQ(tok().encode("cafe\xCC\x81"), tok().encode("café"));
}

TEST_F(TokenizerTest, UnseenCharactersBecomeUnk) {
  const auto ids = tok().encode("cat Ω dog");
  EXPECT_NE(std::find(ids.begin(), ids.end(), tok().unk_id()), ids.end());
  // UNK decodes as " ⁇ " (U+2047 between spaces), here between the words' own spaces.
  EXPECT_EQ(tok().decode(ids), "cat  \xE2\x81\x87  dog");
}

TEST_F(TokenizerTest, SpecialPieceNamesInTextAreNotSpecialIds) {
  const auto ids = tok().encode("<s> </s> <pad> <unk>");
  ASSERT_GE(ids.size(), 3u);
  for (size_t i = 1; i + 1 < ids.size(); ++i) {
    EXPECT_NE(ids[i], tok().pad_id());
    EXPECT_NE(ids[i], tok().bos_id());
    EXPECT_NE(ids[i], tok().eos_id());
  }
}

TEST_F(TokenizerTest, InvalidUtf8DoesNotCrash) {
  const std::string bad = std::string("cat \xFF\xFE dog \xC3") + std::string(1, '\0') + "\x80 x";
  const auto ids = tok().encode(bad);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), tok().bos_id());
  EXPECT_EQ(ids.back(), tok().eos_id());
  const std::string text = tok().decode(ids);
  EXPECT_NE(text.find("cat"), std::string::npos) << text;
  EXPECT_NE(text.find("dog"), std::string::npos) << text;
  // Truncated multi-byte sequence at the very end.
  EXPECT_EQ(tok().encode("\xE4\xB8").front(), tok().bos_id());
}

TEST_F(TokenizerTest, LongTextIsNeverTruncated) {
  std::mt19937 rng(11);
  const int kWordCount = 50'000;
  const std::string text = random_sentence(rng, kWordCount);
  ASSERT_GT(text.size(), 100'000u);
  const auto ids = tok().encode(text);
  // Pieces never span a space, so each word needs at least one id.
  EXPECT_GE(ids.size(), static_cast<size_t>(kWordCount) + 2);
  EXPECT_EQ(ids.front(), tok().bos_id());
  EXPECT_EQ(ids.back(), tok().eos_id());
  EXPECT_EQ(tok().decode(ids), text);
}

TEST_F(TokenizerTest, EncodeBatchPadsToLongest) {
  const std::vector<std::string> texts = {"a cat", "", "the quick brown fox jumps over the dog",
                                          "东京 的 猫"};
  const TokenBatch batch = tok().encode_batch(texts);
  ASSERT_EQ(batch.batch_size(), 4);
  size_t longest = 0;
  for (const auto& t : texts) longest = std::max(longest, tok().encode(t).size());
  ASSERT_EQ(batch.max_len, static_cast<int32_t>(longest));
  ASSERT_EQ(batch.ids.size(), texts.size() * longest);
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto expected = tok().encode(texts[i]);
    EXPECT_EQ(batch.lengths[i], static_cast<int32_t>(expected.size()));
    const auto row_begin = batch.ids.begin() + i * batch.max_len;
    const std::vector<int32_t> row(row_begin, row_begin + batch.max_len);
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), row.begin())) << "row " << i;
    EXPECT_TRUE(std::all_of(row.begin() + expected.size(), row.end(),
                            [&](int32_t id) { return id == tok().pad_id(); }))
        << "row " << i;
    EXPECT_EQ(tok().decode(row), tok().decode(expected));
  }
  EXPECT_EQ(batch.lengths[1], 2);

  const TokenBatch empty = tok().encode_batch({});
  EXPECT_EQ(empty.batch_size(), 0);
  EXPECT_EQ(empty.max_len, 0);
  EXPECT_TRUE(empty.ids.empty());
}

TEST_F(TokenizerTest, NBestSegmentationsStartWithEncodeAndSpellTheSameText) {
  for (const char* text : {"the quick brown fox jumps over the lazy dog.", "a happy dog"}) {
    const auto all = tok().encode_nbest(text, 8);
    ASSERT_GE(all.size(), 2u) << text;  // words of several pieces can be cut more than one way
    ASSERT_LE(all.size(), 8u);
    EXPECT_EQ(all.front(), tok().encode(text));
    std::set<std::vector<int32_t>> distinct(all.begin(), all.end());
    EXPECT_EQ(distinct.size(), all.size()) << "a segmentation came twice for " << text;
    for (const auto& ids : all) {
      EXPECT_EQ(ids.front(), tok().bos_id());
      EXPECT_EQ(ids.back(), tok().eos_id());
      EXPECT_EQ(tok().decode(ids), tok().decode(all.front())) << text;
    }
  }
  EXPECT_EQ(tok().encode_nbest("a happy dog", 1),
            std::vector<std::vector<int32_t>>{tok().encode("a happy dog")});
  const std::vector<int32_t> framed_empty = {tok().bos_id(), tok().eos_id()};
  EXPECT_EQ(tok().encode_nbest("", 4), std::vector<std::vector<int32_t>>{framed_empty});
  expect_error([&] { tok().encode_nbest("x", 0); }, ErrorKind::kInvalidArgument, "n must be");
  EXPECT_TRUE(tok().has_nbest());
}

TEST_F(TokenizerTest, AWordModelHasOneSegmentation) {
  TokenizerTrainOptions options;
  options.corpus_path = corpus_path().string();
  options.vocab_size = 200;
  options.model_type = "word";
  options.out_path = (*dir_ / "word.model").string();
  train_tokenizer(options);
  const Tokenizer words = Tokenizer::load(options.out_path);
  EXPECT_FALSE(words.has_nbest());
  EXPECT_EQ(words.encode_nbest("a happy dog", 8),
            std::vector<std::vector<int32_t>>{words.encode("a happy dog")});
}

TEST_F(TokenizerTest, DecodeRejectsIdsOutsideVocabulary) {
  expect_error(
      [&] {
        tok().decode({2, 10, kVocabSize, 3});
      },
      ErrorKind::kInvalidArgument, std::to_string(kVocabSize));
  expect_error([&] { tok().decode({-5}); }, ErrorKind::kInvalidArgument, "-5");
}

TEST_F(TokenizerTest, ConcurrentEncodeMatchesSerial) {
  std::mt19937 rng(3);
  std::vector<std::string> texts;
  for (int i = 0; i < 40; ++i) texts.push_back(random_sentence(rng, 5 + i));
  texts.push_back(kUnicodeLines[2]);
  std::vector<std::vector<int32_t>> serial;
  for (const auto& t : texts) serial.push_back(tok().encode(t));

  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          if (tok().encode(texts[i]) != serial[i]) ++mismatches[t];
          if (tok().decode(serial[i]).empty()) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST_F(TokenizerTest, LoadFromBytesMatchesLoad) {
  const Tokenizer copy = Tokenizer::load_from_bytes(read_file(model_path()));
  EXPECT_EQ(copy.vocab_size(), tok().vocab_size());
  EXPECT_EQ(copy.encode(kUnicodeLines[0]), tok().encode(kUnicodeLines[0]));
}

TEST_F(TokenizerTest, MatchesStockSpmEncode) {
  const char* const kSpmEncode = "/usr/bin/spm_encode";
  if (!fs::exists(kSpmEncode))
    GTEST_SKIP() << kSpmEncode << " not installed (package sentencepiece)";
  std::vector<std::string> lines = {"the quick brown fox jumps over the lazy dog.",
                                    "A Happy DOG in the PARK", "cat Ω dog", ""};
  for (const char* line : kUnicodeLines) lines.push_back(line);
  std::ostringstream input;
  for (const auto& l : lines) input << l << "\n";
  const fs::path input_path = *dir_ / "spm_input.txt";
  write_file(input_path, input.str());

  const std::string command = std::string(kSpmEncode) + " --model=" + model_path().string() +
                              " --output_format=id < " + input_path.string();
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr) << command;
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  ASSERT_EQ(::pclose(pipe), 0) << command;

  std::istringstream out(output);
  std::string out_line;
  for (const auto& line : lines) {
    ASSERT_TRUE(std::getline(out, out_line)) << "spm_encode printed too few lines";
    std::vector<int32_t> expected;
    std::istringstream fields(out_line);
    for (int32_t id; fields >> id;) expected.push_back(id);
    auto ids = tok().encode(line);
    ids.erase(ids.begin());
    ids.pop_back();
    EXPECT_EQ(ids, expected) << "line '" << line << "'";
  }
}

TEST_F(TokenizerTest, LoadMissingFileNamesPath) {
  const std::string path = (*dir_ / "nowhere" / "missing.model").string();
  expect_error([&] { Tokenizer::load(path); }, ErrorKind::kNotFound, path);
}

TEST_F(TokenizerTest, LoadGarbageNamesPath) {
  const fs::path garbage = *dir_ / "garbage.model";
  write_file(garbage, "this is not a sentencepiece model \x01\x02\x03\xff");
  expect_error([&] { Tokenizer::load(garbage.string()); }, ErrorKind::kCorrupt, garbage.string());
  const fs::path empty = *dir_ / "empty.model";
  write_file(empty, "");
  expect_error([&] { Tokenizer::load(empty.string()); }, ErrorKind::kCorrupt, empty.string());
  expect_error([&] { Tokenizer::load(dir_->string()); }, ErrorKind::kInvalidArgument,
               dir_->string());
  expect_error([] { Tokenizer::load_from_bytes("garbage"); }, ErrorKind::kCorrupt,
               "not a SentencePiece model");
}

TEST_F(TokenizerTest, LoadRejectsStockModelWithoutPad) {
  const char* const kSpmTrain = "/usr/bin/spm_train";
  if (!fs::exists(kSpmTrain)) GTEST_SKIP() << kSpmTrain << " not installed (package sentencepiece)";
  // Stock spm_train defaults: unk=0, bos=1, eos=2 and no <pad>.
  const fs::path prefix = *dir_ / "stock";
  const std::string command = std::string(kSpmTrain) + " --input=" + corpus_path().string() +
                              " --model_prefix=" + prefix.string() +
                              " --vocab_size=100 --minloglevel=2";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const std::string model = prefix.string() + ".model";
  expect_error([&] { Tokenizer::load(model); }, ErrorKind::kUnsupported, model);
  expect_error([&] { Tokenizer::load(model); }, ErrorKind::kUnsupported, "<pad>");
}

TEST_F(TokenizerTest, TrainRejectsMissingAndEmptyCorpus) {
  TokenizerTrainOptions options;
  options.vocab_size = 100;
  options.out_path = (*dir_ / "never.model").string();
  options.corpus_path = (*dir_ / "no_such_corpus.txt").string();
  expect_error([&] { train_tokenizer(options); }, ErrorKind::kNotFound, options.corpus_path);

  options.corpus_path = (*dir_ / "empty_corpus.txt").string();
  write_file(options.corpus_path, "");
  expect_error([&] { train_tokenizer(options); }, ErrorKind::kInvalidArgument, options.corpus_path);

  // Lines that normalize to nothing: SentencePiece itself would abort the process on these.
  options.corpus_path = (*dir_ / "blank_corpus.txt").string();
  write_file(
      options.corpus_path,
      "\n  \t\r\n\x01\x02\n"
      "\xC2\xA0\xE2\x80\x8B\xE3\x80\x80\xEF\xBB\xBF\n");  // NBSP, ZWSP, ideographic space, BOM
  expect_error([&] { train_tokenizer(options); }, ErrorKind::kInvalidArgument, options.corpus_path);

  options.corpus_path = (*dir_ / "long_lines_corpus.txt").string();
  write_file(options.corpus_path, "a line far longer than the limit\nanother long line here\n");
  options.max_sentence_length = 10;
  expect_error([&] { train_tokenizer(options); }, ErrorKind::kInvalidArgument,
               "has no usable line");
  EXPECT_FALSE(fs::exists(options.out_path));
}

TEST_F(TokenizerTest, ByteFallbackSpellsUnseenCharacters) {
  TokenizerTrainOptions options;
  options.corpus_path = corpus_path().string();
  options.out_path = (*dir_ / "bytes.model").string();
  options.vocab_size = 400;
  options.byte_fallback = true;
  options.num_threads = 2;
  train_tokenizer(options);
  const Tokenizer bytes = Tokenizer::load(options.out_path);
  const auto ids = bytes.encode("cat Ω dog");
  EXPECT_EQ(std::find(ids.begin(), ids.end(), bytes.unk_id()), ids.end());
  EXPECT_EQ(bytes.decode(ids), "cat ω dog");  // case folded, spelled from its UTF-8 bytes
}

TEST_F(TokenizerTest, TrainRejectsVocabSizeTheCorpusCannotFill) {
  const fs::path corpus = *dir_ / "tiny_corpus.txt";
  write_file(corpus, "a small cat\nthe red dog\na small dog\nthe red cat\n");
  TokenizerTrainOptions options;
  options.corpus_path = corpus.string();
  options.out_path = (*dir_ / "tiny.model").string();
  options.num_threads = 1;

  options.vocab_size = 5000;
  testing::internal::CaptureStderr();
  expect_error([&] { train_tokenizer(options); }, ErrorKind::kInvalidArgument, "5000");
  expect_error([&] { train_tokenizer(options); }, ErrorKind::kInvalidArgument, corpus.string());
  // Quiet by default: SentencePiece's log does not reach stderr.
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");

  options.vocab_size = 6;  // fewer than the corpus' distinct characters
  expect_error([&] { train_tokenizer(options); }, ErrorKind::kInvalidArgument, "vocab_size 6");
  EXPECT_FALSE(fs::exists(options.out_path));
}

TEST_F(TokenizerTest, RetrainingReplacesTheModel) {
  const fs::path out = *dir_ / "retrain.model";
  write_file(out, "old contents");
  TokenizerTrainOptions options;
  options.corpus_path = corpus_path().string();
  options.out_path = out.string();
  options.vocab_size = 120;
  options.num_threads = 2;
  train_tokenizer(options);
  EXPECT_EQ(Tokenizer::load(out.string()).vocab_size(), 120);
}

}  // namespace
}  // namespace mms
