// The model's memory of training pairs (encoders/memory.h) as a user of the library meets
// it: the memory.safetensors file (round trip, and what a bad one is told), and the
// Embedder that consults it, against the formula computed here by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "encoders/embedder.h"
#include "encoders/image_io.h"
#include "encoders/memory.h"
#include "encoders/safetensors.h"
#include "error_testing.h"
#include "index_test_support.h"

namespace {

namespace fs = std::filesystem;
using mms::EmbeddingMemory;
using mms::ErrorKind;
using mms::testing::error_of;
using mms::testing::kind_of;

std::vector<float> random_unit_rows(int64_t n, int32_t dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(n) * dim);
  for (int64_t i = 0; i < n; ++i) {
    double norm = 0;
    for (int32_t d = 0; d < dim; ++d) norm += std::pow(v[i * dim + d] = normal(rng), 2);
    for (int32_t d = 0; d < dim; ++d) v[i * dim + d] /= static_cast<float>(std::sqrt(norm));
  }
  return v;
}

std::vector<float> unit(std::vector<float> v) {
  double norm = 0;
  for (float x : v) norm += double(x) * x;
  for (float& x : v) x /= static_cast<float>(std::sqrt(norm));
  return v;
}

std::vector<float> row(const std::vector<float>& rows, int64_t i, int32_t dim) {
  return {rows.begin() + i * dim, rows.begin() + (i + 1) * dim};
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

// The highest similarity of row i of `rows` to any row of `keys`.
double nearest_similarity(const std::vector<float>& rows, int64_t i,
                          const std::vector<float>& keys, int32_t dim) {
  double best = -1;
  for (size_t j = 0; j < keys.size() / dim; ++j)
    best = std::max(best, dot(row(rows, i, dim), row(keys, int64_t(j), dim)));
  return best;
}

EmbeddingMemory small_memory(int32_t dim = 8) {
  EmbeddingMemory m;
  m.dim = dim;
  m.image_keys = random_unit_rows(3, dim, 1);
  m.text_keys = random_unit_rows(2, dim, 2);
  m.pairs = {{0, 0}, {1, 0}, {2, 1}};
  m.settings.k = 2;
  m.settings.temperature = 0.1;
  m.settings.weight = 0.5;
  return m;
}

class MemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mms_memory_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(MemoryTest, FileRoundTripKeepsKeysPairsAndSettings) {
  const EmbeddingMemory m = small_memory();
  const std::string path = (dir_ / "memory.safetensors").string();
  mms::write_memory(path, m);
  const EmbeddingMemory back = mms::read_memory(path, m.dim);
  EXPECT_EQ(back.n_images(), 3);
  EXPECT_EQ(back.n_texts(), 2);
  EXPECT_EQ(back.pairs, m.pairs);
  EXPECT_EQ(back.settings.k, 2);
  EXPECT_DOUBLE_EQ(back.settings.temperature, 0.1);
  EXPECT_DOUBLE_EQ(back.settings.weight, 0.5);
  EXPECT_DOUBLE_EQ(back.settings.gate_low, 0.75);
  EXPECT_DOUBLE_EQ(back.settings.gate_high, 0.9);
  EXPECT_DOUBLE_EQ(back.settings.recall_weight, m.settings.recall_weight);
  EXPECT_DOUBLE_EQ(back.settings.recall_gate_low, m.settings.recall_gate_low);
  EXPECT_DOUBLE_EQ(back.settings.recall_gate_high, m.settings.recall_gate_high);
  EXPECT_GT(back.settings.recall_weight, 0);
  EXPECT_DOUBLE_EQ(back.settings.image_weight, m.settings.image_weight);
  EXPECT_DOUBLE_EQ(back.settings.image_pull(), m.settings.image_weight);
  // Keys are stored in half precision: within its rounding of values below 1.
  for (size_t i = 0; i < m.image_keys.size(); ++i)
    EXPECT_NEAR(back.image_keys[i], m.image_keys[i], 1e-3);
  for (size_t i = 0; i < m.text_keys.size(); ++i)
    EXPECT_NEAR(back.text_keys[i], m.text_keys[i], 1e-3);
  // It is a plain safetensors file: F16 keys, I32 pairs.
  const mms::SafeTensors st = mms::read_safetensors(path);
  EXPECT_EQ(st.tensors.at("image_keys").dtype, mms::DType::kF16);
  EXPECT_EQ(st.tensors.at("pairs").shape, (std::vector<int64_t>{3, 2}));

  // A file written before the gate existed has no gate (nor recall) settings: it reads as
  // ungated.
  mms::SafeTensors old = st;
  old.metadata.erase("gate_low");
  old.metadata.erase("gate_high");
  for (const char* key : {"recall_weight", "recall_gate_low", "recall_gate_high", "image_weight"})
    old.metadata.erase(key);
  mms::write_safetensors(path, old);
  const EmbeddingMemory ungated = mms::read_memory(path, m.dim);
  EXPECT_DOUBLE_EQ(ungated.settings.gate_low, -1);
  EXPECT_DOUBLE_EQ(ungated.settings.gate_high, -1);
  EXPECT_DOUBLE_EQ(mms::memory_gate(ungated.settings, -1.0), 1.0);
  // Nor had it recall settings: it recognises no image.
  EXPECT_DOUBLE_EQ(ungated.settings.recall_weight, 0);
  // Nor an image weight: it pulls images by `weight`, as before.
  EXPECT_DOUBLE_EQ(ungated.settings.image_weight, -1);
  EXPECT_DOUBLE_EQ(ungated.settings.image_pull(), ungated.settings.weight);
}

TEST(MemoryGate, RampsFromLowToHigh) {
  mms::MemorySettings g;
  g.gate_low = 0.6;
  g.gate_high = 0.8;
  EXPECT_DOUBLE_EQ(mms::memory_gate(g, 0.5), 0.0);
  EXPECT_DOUBLE_EQ(mms::memory_gate(g, 0.6), 0.0);
  EXPECT_NEAR(mms::memory_gate(g, 0.65), 0.25, 1e-12);
  EXPECT_NEAR(mms::memory_gate(g, 0.7), 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(mms::memory_gate(g, 0.8), 1.0);
  EXPECT_DOUBLE_EQ(mms::memory_gate(g, 1.0), 1.0);
  g.gate_low = g.gate_high = 0.7;  // a step
  EXPECT_DOUBLE_EQ(mms::memory_gate(g, 0.69), 0.0);
  EXPECT_DOUBLE_EQ(mms::memory_gate(g, 0.7), 1.0);
}

TEST_F(MemoryTest, InconsistentMemoriesAndSettingsAreRefusedByName) {
  const std::string path = (dir_ / "memory.safetensors").string();
  EmbeddingMemory m = small_memory();
  m.pairs.push_back({3, 0});  // image row 3 of 3
  EXPECT_EQ(kind_of([&] { mms::write_memory(path, m); }), ErrorKind::kInvalidArgument);
  m = small_memory();
  m.pairs = {{0, 0}, {1, 1}};  // image 2 has no text: it would have no value
  const std::string unpaired = error_of([&] { mms::write_memory(path, m); }).second;
  EXPECT_NE(unpaired.find("image row 2 has no text"), std::string::npos) << unpaired;
  for (auto [k, temperature, weight, name] :
       {std::tuple{0, 0.1, 0.5, "k"}, std::tuple{2, 0.0, 0.5, "temperature"},
        std::tuple{2, 0.1, -1.0, "weight"}}) {
    m = small_memory();
    m.settings = {k, temperature, weight};
    const auto [kind, what] = error_of([&] { mms::write_memory(path, m); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument) << name;
    EXPECT_NE(what.find(name), std::string::npos) << what;
  }
  for (auto [low, high] : {std::pair{0.9, 0.8}, std::pair{-1.5, 0.5}, std::pair{0.5, 1.2}}) {
    m = small_memory();
    m.settings.gate_low = low;
    m.settings.gate_high = high;
    const auto [kind, what] = error_of([&] { mms::write_memory(path, m); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument) << "gate " << low << ".." << high;
    EXPECT_NE(what.find("gate_low"), std::string::npos) << what;
  }
  for (auto [weight, low, high] : {std::tuple{-0.5, 0.9, 0.95}, std::tuple{2.0, 0.99, 0.9},
                                   std::tuple{2.0, 0.9, 1.5}}) {
    m = small_memory();
    m.settings.recall_weight = weight;
    m.settings.recall_gate_low = low;
    m.settings.recall_gate_high = high;
    const auto [kind, what] = error_of([&] { mms::write_memory(path, m); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument) << weight << " " << low << ".." << high;
    EXPECT_NE(what.find("recall"), std::string::npos) << what;
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST_F(MemoryTest, ABadMemoryFileIsToldWhatIsWrong) {
  const std::string path = (dir_ / "memory.safetensors").string();
  mms::write_memory(path, small_memory(8));
  // Built with a model of another dimension.
  {
    const auto [kind, what] = error_of([&] { mms::read_memory(path, 16); });
    EXPECT_EQ(kind, ErrorKind::kMismatch);
    EXPECT_NE(what.find("another model"), std::string::npos) << what;
  }
  // Truncated.
  const auto size = fs::file_size(path);
  fs::resize_file(path, size - 5);
  EXPECT_EQ(kind_of([&] { mms::read_memory(path, 8); }), ErrorKind::kCorrupt);
  // A weights file (no memory format in its header) in the memory's place.
  mms::SafeTensors st;
  mms::TensorData t;
  t.dtype = mms::DType::kF32;
  t.shape = {2};
  t.bytes.resize(8);
  st.tensors["w"] = t;
  mms::write_safetensors(path, st);
  {
    const auto [kind, what] = error_of([&] { mms::read_memory(path, 8); });
    EXPECT_EQ(kind, ErrorKind::kCorrupt);
    EXPECT_NE(what.find("format"), std::string::npos) << what;
  }
  // A pair pointing past the keys, written by hand past write_memory's checks.
  mms::write_memory(path, small_memory(8));
  st = mms::read_safetensors(path);
  int32_t bad_row[2] = {7, 0};
  std::memcpy(st.tensors.at("pairs").bytes.data(), bad_row, 8);
  mms::write_safetensors(path, st);
  EXPECT_EQ(kind_of([&] { mms::read_memory(path, 8); }), ErrorKind::kCorrupt);
  EXPECT_EQ(kind_of([&] { mms::read_memory((dir_ / "none").string(), 8); }), ErrorKind::kNotFound);
}

// The Embedder with a memory: each embedding is what the formula in memory.h says, computed
// here from the encoders' own embeddings, the keys and the pairs.
TEST_F(MemoryTest, EmbeddingsMoveTowardTheirNeighboursValues) {
  const fs::path model = dir_ / "model";
  mms::testing::make_tiny_model(model);
  const auto plain = mms::Embedder::load(model.string(), /*use_memory=*/false);
  const int32_t dim = plain->dim(), s = plain->image_size();
  EXPECT_FALSE(plain->uses_memory());

  // Four images, two texts; the memory holds images 0..2 (0 and 1 captioned by text 0) and
  // the texts "a red circle" and "a blue square".
  std::vector<float> pixels(4 * 3 * size_t(s) * s);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0, 1);
  for (float& p : pixels) p = u(rng);
  // Image 3 is a smooth ramp, unlike the noise of 0..2, so that a gate can tell it apart.
  for (size_t p = 0; p < 3 * size_t(s) * s; ++p) {
    pixels[3 * 3 * size_t(s) * s + p] = float(p % s) / float(s);
  }
  const std::vector<float> images = plain->embed_pixels(pixels.data(), 4);
  const std::vector<std::string> texts = {"a red circle", "a blue square"};
  const std::vector<float> text_emb = plain->embed_texts(texts);
  EmbeddingMemory m;
  m.dim = dim;
  m.image_keys = {images.begin(), images.begin() + 3 * dim};
  m.text_keys = text_emb;
  m.pairs = {{0, 0}, {1, 0}, {2, 1}};
  // No gate: every embedding moves by the whole weight; no recall (the next test's).
  m.settings = {2, 0.1, 0.5, -1, -1, 0};
  m.settings.image_weight = -1;  // images pulled by `weight` too (image_weight: its own test)
  mms::write_memory((model / "memory.safetensors").string(), m);
  const EmbeddingMemory stored = mms::read_memory((model / "memory.safetensors").string(), dim);

  const auto with = mms::Embedder::load(model.string());
  EXPECT_TRUE(with->uses_memory());
  EXPECT_NE(with->fingerprint(), plain->fingerprint());  // indexes of one refuse the other

  // expected(e) = unit(e + g * weight * unit(sum over the 2 nearest keys of softmax(sim/T) *
  // value)), g rising linearly from 0 at similarity `low` to 1 at `high` (no gate: g = 1).
  auto expected = [&](const std::vector<float>& e, const std::vector<float>& keys,
                      const std::vector<std::vector<float>>& values, double low = -1,
                      double high = -1, double weight = 0.5) {
    std::vector<std::pair<double, int>> sims;
    for (size_t j = 0; j < values.size(); ++j) sims.push_back({dot(e, row(keys, j, dim)), int(j)});
    std::sort(sims.rbegin(), sims.rend());
    const double g = high <= low ? (sims[0].first >= high ? 1.0 : 0.0)
                                 : std::clamp((sims[0].first - low) / (high - low), 0.0, 1.0);
    const double w0 = 1.0, w1 = std::exp((sims[1].first - sims[0].first) / 0.1);
    std::vector<float> mix(dim);
    for (int32_t d = 0; d < dim; ++d)
      mix[d] = static_cast<float>(
          (w0 * values[sims[0].second][d] + w1 * values[sims[1].second][d]) / (w0 + w1));
    mix = unit(mix);
    std::vector<float> out(dim);
    for (int32_t d = 0; d < dim; ++d) out[d] = e[d] + static_cast<float>(g * weight) * mix[d];
    return unit(out);
  };
  // Values: an image's is its text's key; text 0's is the mean of image keys 0 and 1.
  const std::vector<std::vector<float>> image_values = {unit(row(stored.text_keys, 0, dim)),
                                                        unit(row(stored.text_keys, 0, dim)),
                                                        unit(row(stored.text_keys, 1, dim))};
  std::vector<float> t0(dim);
  for (int32_t d = 0; d < dim; ++d) t0[d] = stored.image_keys[d] + stored.image_keys[dim + d];
  const std::vector<std::vector<float>> text_values = {unit(t0),
                                                       unit(row(stored.image_keys, 2, dim))};

  const std::vector<float> got_images = with->embed_pixels(pixels.data(), 4);
  for (int64_t i = 0; i < 4; ++i) {  // image 3 is not in the memory; it is augmented all the same
    const std::vector<float> want = expected(row(images, i, dim), stored.image_keys, image_values);
    const std::vector<float> got = row(got_images, i, dim);
    for (int32_t d = 0; d < dim; ++d) EXPECT_NEAR(got[d], want[d], 1e-4) << "image " << i;
    EXPECT_NEAR(dot(got, got), 1.0, 1e-5);
  }
  const std::vector<std::string> queries = {"a red circle", "the green star 7"};
  const std::vector<float> plain_queries = plain->embed_texts(queries);
  const std::vector<float> got_texts = with->embed_texts(queries);
  for (int64_t i = 0; i < 2; ++i) {
    const std::vector<float> want =
        expected(row(plain_queries, i, dim), stored.text_keys, text_values);
    for (int32_t d = 0; d < dim; ++d)
      EXPECT_NEAR(got_texts[i * dim + d], want[d], 1e-4) << "text " << i;
  }

  // The gate: image 3 (not in the memory) has its nearest key at similarity s3, below that
  // of images 0..2 (their own keys, up to half-precision rounding; an untrained model maps
  // all images close together, so the margin is small). A gate from s3 - h to s3 + h moves
  // image 3 by half the weight and images 0..2 by all of it; a gate that opens above s3
  // leaves image 3 as the encoders made it.
  auto nearest_key = [&](int64_t i) {
    return nearest_similarity(images, i, stored.image_keys, dim);
  };
  const double s3 = nearest_key(3);
  const double keys_own = std::min({nearest_key(0), nearest_key(1), nearest_key(2)});
  ASSERT_GT(keys_own - s3, 2e-4) << "image 3 is too like the memory's images for this test";
  const double half = std::min(0.1, (keys_own - s3) / 2);
  {
    mms::MemoryOverrides ramp;
    ramp.gate_low = s3 - half;
    ramp.gate_high = s3 + half;
    const auto gated = mms::Embedder::load(model.string(), true, ramp);
    EXPECT_NE(gated->fingerprint(), with->fingerprint());
    const std::vector<float> got = gated->embed_pixels(pixels.data(), 4);
    for (int64_t i = 0; i < 4; ++i) {
      const std::vector<float> want =
          expected(row(images, i, dim), stored.image_keys, image_values, s3 - half, s3 + half);
      for (int32_t d = 0; d < dim; ++d)
        EXPECT_NEAR(got[i * dim + d], want[d], 1e-4) << "image " << i;
    }
    // Half the pull is not the whole pull: image 3 lies between its plain and ungated embeddings.
    const double to_plain = dot(row(got, 3, dim), row(images, 3, dim));
    EXPECT_GT(to_plain, dot(row(got_images, 3, dim), row(images, 3, dim)) + 1e-4);
    EXPECT_LT(to_plain, 1.0 - 1e-4);
    mms::MemoryOverrides shut;
    shut.gate_low = shut.gate_high = s3 + half;  // a step above image 3
    const std::vector<float> alone =
        mms::Embedder::load(model.string(), true, shut)->embed_pixels(pixels.data(), 4);
    for (int32_t d = 0; d < dim; ++d) EXPECT_NEAR(alone[3 * dim + d], images[3 * dim + d], 1e-6);
  }

  // image_weight pulls images by its own amount and leaves texts to `weight`; 0 leaves images
  // as the encoders made them while texts still move.
  for (const double image_weight : {0.2, 0.0}) {
    mms::MemoryOverrides images_apart;
    images_apart.image_weight = image_weight;
    const auto apart = mms::Embedder::load(model.string(), true, images_apart);
    EXPECT_TRUE(apart->uses_memory());
    EXPECT_NE(apart->fingerprint(), with->fingerprint());
    const std::vector<float> got = apart->embed_pixels(pixels.data(), 4);
    for (int64_t i = 0; i < 4; ++i) {
      const std::vector<float> want = expected(row(images, i, dim), stored.image_keys,
                                               image_values, -1, -1, image_weight);
      for (int32_t d = 0; d < dim; ++d)
        EXPECT_NEAR(got[i * dim + d], want[d], 1e-4) << "image " << i << " at " << image_weight;
    }
    EXPECT_EQ(apart->embed_texts(queries), got_texts);
  }
  {
    mms::MemoryOverrides same;  // image_weight equal to weight is the old pull, fingerprint too
    same.image_weight = 0.5;
    EXPECT_EQ(mms::Embedder::load(model.string(), true, same)->fingerprint(), with->fingerprint());
    mms::MemoryOverrides texts_only;  // weight 0, images still pulled: the memory is used
    texts_only.weight = 0.0;
    texts_only.image_weight = 0.2;
    EXPECT_TRUE(mms::Embedder::load(model.string(), true, texts_only)->uses_memory());
    mms::MemoryOverrides negative;
    negative.image_weight = -0.5;
    const auto [kind, what] =
        error_of([&] { mms::Embedder::load(model.string(), true, negative); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
    EXPECT_NE(what.find("image_weight"), std::string::npos) << what;
  }

  // Settings given at load replace the stored ones: with k = 1 an image moves toward its
  // single nearest key's value (image 2 is its own nearest key: toward text 1).
  mms::MemoryOverrides one;
  one.k = 1;
  const auto nearest = mms::Embedder::load(model.string(), true, one);
  EXPECT_NE(nearest->fingerprint(), with->fingerprint());
  {
    const std::vector<float> e = row(images, 2, dim), v = unit(row(stored.text_keys, 1, dim));
    std::vector<float> want(dim);
    for (int32_t d = 0; d < dim; ++d) want[d] = e[d] + 0.5f * v[d];
    want = unit(want);
    const std::vector<float> got = nearest->embed_pixels(pixels.data() + 2 * 3 * size_t(s) * s, 1);
    for (int32_t d = 0; d < dim; ++d) EXPECT_NEAR(got[d], want[d], 1e-4);
  }
  mms::MemoryOverrides bad;
  bad.temperature = 0.0;
  EXPECT_EQ(kind_of([&] { mms::Embedder::load(model.string(), true, bad); }),
            ErrorKind::kInvalidArgument);
  mms::MemoryOverrides zero;
  zero.weight = 0.0;
  EXPECT_FALSE(mms::Embedder::load(model.string(), true, zero)->uses_memory());

  // Without the memory (asked for, or weight 0) the encoders' own embeddings come back.
  EXPECT_EQ(mms::Embedder::load(model.string(), false)->embed_texts(queries), plain_queries);
  m.settings.weight = 0;
  mms::write_memory((model / "memory.safetensors").string(), m);
  const auto off = mms::Embedder::load(model.string());
  EXPECT_FALSE(off->uses_memory());
  EXPECT_EQ(off->embed_texts(queries), plain_queries);
  EXPECT_EQ(off->fingerprint(), plain->fingerprint());
}

// Recall: an image that is one of the memory's own (its nearest key at a similarity within
// the recall gate) moves toward its own texts by recall_weight; an image the memory does not
// hold, and every text, keep the encoders' embeddings.
TEST_F(MemoryTest, TheMemorysOwnImagesAreRecognisedAndMoveTowardTheirTexts) {
  const fs::path model = dir_ / "model";
  mms::testing::make_tiny_model(model);
  const auto plain = mms::Embedder::load(model.string(), /*use_memory=*/false);
  const int32_t dim = plain->dim(), s = plain->image_size();
  const size_t image_floats = 3 * size_t(s) * s;
  // Images 0..2 noise (held by the memory), image 3 a smooth ramp (not held).
  std::vector<float> pixels(4 * image_floats);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0, 1);
  for (float& p : pixels) p = u(rng);
  for (size_t p = 0; p < image_floats; ++p) pixels[3 * image_floats + p] = float(p % s) / float(s);
  const std::vector<float> images = plain->embed_pixels(pixels.data(), 4);
  const std::vector<std::string> texts = {"a red circle", "a blue square"};
  EmbeddingMemory m;
  m.dim = dim;
  m.image_keys = {images.begin(), images.begin() + 3 * dim};
  m.text_keys = plain->embed_texts(texts);
  m.pairs = {{0, 0}, {1, 0}, {2, 1}};
  // The recall gate opens between image 3's nearest key and the held images' own keys
  // (their own embeddings, up to half-precision rounding).
  auto nearest_key = [&](int64_t i) { return nearest_similarity(images, i, m.image_keys, dim); };
  const double s3 = nearest_key(3);
  const double own = std::min({nearest_key(0), nearest_key(1), nearest_key(2)});
  ASSERT_GT(own - s3, 2e-4) << "image 3 is too like the memory's images for this test";
  const double quarter = (own - s3) / 4;
  m.settings = {2, 0.1, /*weight=*/0, -1, -1, /*recall_weight=*/2, s3 + quarter, own - quarter};
  m.settings.image_weight = -1;  // no pull but recall
  mms::write_memory((model / "memory.safetensors").string(), m);
  const EmbeddingMemory stored = mms::read_memory((model / "memory.safetensors").string(), dim);

  const auto with = mms::Embedder::load(model.string());
  EXPECT_TRUE(with->uses_memory());  // recall alone uses the memory
  EXPECT_NE(with->fingerprint(), plain->fingerprint());
  const std::vector<float> got = with->embed_pixels(pixels.data(), 4);
  // Each moves toward its text's key carried across the modality gap: plus the mean image key,
  // minus the mean text key.
  std::vector<float> gap(dim, 0.0f);
  for (int32_t d = 0; d < dim; ++d) {
    for (int64_t j = 0; j < 3; ++j) gap[d] += stored.image_keys[j * dim + d] / 3;
    for (int64_t j = 0; j < 2; ++j) gap[d] -= stored.text_keys[j * dim + d] / 2;
  }
  const int64_t text_of[3] = {0, 0, 1};
  for (int64_t i = 0; i < 3; ++i) {
    std::vector<float> v = unit(row(stored.text_keys, text_of[i], dim));
    for (int32_t d = 0; d < dim; ++d) v[d] += gap[d];
    v = unit(v);
    const std::vector<float> e = row(images, i, dim);
    std::vector<float> want(dim);
    for (int32_t d = 0; d < dim; ++d) want[d] = e[d] + 2.0f * v[d];
    want = unit(want);
    for (int32_t d = 0; d < dim; ++d) EXPECT_NEAR(got[i * dim + d], want[d], 1e-4) << "image " << i;
    EXPECT_LT(dot(row(got, i, dim), e), 1.0 - 1e-3) << "image " << i << " did not move";
  }
  for (int32_t d = 0; d < dim; ++d) EXPECT_NEAR(got[3 * dim + d], images[3 * dim + d], 1e-6);
  EXPECT_EQ(with->embed_texts(texts), plain->embed_texts(texts));

  // Overridden at load: recall_weight 0 switches it off (and with weight 0, the memory).
  mms::MemoryOverrides off;
  off.recall_weight = 0.0;
  EXPECT_FALSE(mms::Embedder::load(model.string(), true, off)->uses_memory());
}

TEST_F(MemoryTest, AModelRefusesAMemoryOfAnotherDimension) {
  const fs::path model = dir_ / "model";
  mms::testing::make_tiny_model(model);
  const int32_t dim = mms::Embedder::load(model.string())->dim();
  mms::write_memory((model / "memory.safetensors").string(), small_memory(dim + 1));
  EXPECT_EQ(kind_of([&] { mms::Embedder::load(model.string()); }), ErrorKind::kMismatch);
  // The encoders alone still load.
  EXPECT_FALSE(mms::Embedder::load(model.string(), false)->uses_memory());
}

// The same text twice in a memory (one caption in two sources) is one key whose value gathers
// both copies' images: a text embedded alone (whose nearest keys come from KeySearch) and in a
// batch (a matrix product) then agree, as they must for an index and its queries; and the
// result is that of a memory holding the text once with all its pairs.
TEST_F(MemoryTest, IdenticalKeysAreMergedSoLoneAndBatchedEmbeddingsAgree) {
  const fs::path model = dir_ / "model";
  mms::testing::make_tiny_model(model);
  const auto plain = mms::Embedder::load(model.string(), /*use_memory=*/false);
  const int32_t dim = plain->dim();
  // Enough texts for KeySearch's bound (several hundred keys); text 0 comes again last.
  std::vector<std::string> texts;
  for (int i = 0; i < 400; ++i) texts.push_back("text " + std::to_string(i * 7919 % 1000));
  texts.push_back(texts[0]);
  const std::vector<float> keys = plain->embed_texts(texts);
  EmbeddingMemory twice;
  twice.dim = dim;
  twice.text_keys = keys;
  twice.image_keys = {keys.begin(), keys.begin() + 2 * dim};  // two "images": any unit rows
  twice.pairs = {{0, 0}, {1, 400}};  // the two copies of text 0 name different images
  for (int32_t t = 1; t < 400; ++t) twice.pairs.push_back({t % 2, t});
  twice.settings = {3, 0.05, 0.5, -1, -1};
  EmbeddingMemory once = twice;
  once.text_keys.resize(400 * size_t(dim));
  once.pairs[1] = {1, 0};

  std::vector<std::vector<float>> got;
  for (const EmbeddingMemory* m : {&twice, &once}) {
    mms::write_memory((model / "memory.safetensors").string(), *m);
    const auto with = mms::Embedder::load(model.string());
    const std::vector<float> alone = with->embed_texts({texts[0]});
    const std::vector<float> batch =
        with->embed_texts({texts[0], texts[1], texts[2], texts[3], texts[4], texts[5]});
    for (int32_t d = 0; d < dim; ++d) EXPECT_NEAR(alone[d], batch[d], 1e-6) << d;
    got.push_back(alone);
  }
  for (int32_t d = 0; d < dim; ++d) EXPECT_NEAR(got[0][d], got[1][d], 1e-6) << d;
}

}  // namespace

// Hubness-aware scoring (encoders/memory.h): the banks are the memory's keys as the Embedder
// augments them (what queries look like to the search), they survive the file, and h is each
// document's mean of its hub_k highest cosines to the bank of the other modality.
TEST_F(MemoryTest, HubBanksAreAugmentedKeysAndHubsTheirMeanTopCosines) {
  const fs::path model = dir_ / "model";
  mms::testing::make_tiny_model(model);
  const auto plain = mms::Embedder::load(model.string(), /*use_memory=*/false);
  const int32_t dim = plain->dim(), s = plain->image_size();
  std::vector<float> pixels(4 * 3 * size_t(s) * s);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0, 1);
  for (float& p : pixels) p = u(rng);
  const std::vector<std::string> texts = {"a red circle", "a blue square", "three green stars"};
  EmbeddingMemory m;
  m.dim = dim;
  m.image_keys = plain->embed_pixels(pixels.data(), 4);
  m.text_keys = plain->embed_texts(texts);
  m.pairs = {{0, 0}, {1, 0}, {2, 1}, {3, 2}};
  m.settings.k = 2;
  m.settings.hub_k = 2;
  m.settings.hub_weight = 0.3;
  mms::add_hub_banks(m, 7);
  ASSERT_TRUE(m.has_hub_banks());
  ASSERT_EQ(m.image_bank.size(), m.image_keys.size());  // fewer keys than kHubBankRows: all
  ASSERT_EQ(m.text_bank.size(), m.text_keys.size());
  const std::string path = (model / "memory.safetensors").string();
  mms::write_memory(path, m);
  const EmbeddingMemory stored = mms::read_memory(path, dim);
  EXPECT_EQ(stored.settings.hub_k, 2);
  EXPECT_DOUBLE_EQ(stored.settings.hub_weight, 0.3);
  ASSERT_EQ(stored.text_bank.size(), m.text_bank.size());
  for (size_t i = 0; i < m.text_bank.size(); ++i) {
    EXPECT_NEAR(stored.text_bank[i], m.text_bank[i], 1e-3);  // F16 in the file
  }

  // The banks are what the Embedder with this memory makes of the same images and texts (up
  // to the keys' half-precision rounding), in the keys' order.
  const auto with = mms::Embedder::load(model.string());
  const std::vector<float> images = with->embed_pixels(pixels.data(), 4);
  const std::vector<float> text_emb = with->embed_texts(texts);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_GT(dot(row(images, i, dim), row(m.image_bank, i, dim)), 0.999) << "image " << i;
  }
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_GT(dot(row(text_emb, i, dim), row(m.text_bank, i, dim)), 0.999) << "text " << i;
  }

  // h: the mean of the 2 highest cosines to the bank of the other modality (as read back).
  auto mean_top2 = [&](const std::vector<float>& e, const std::vector<float>& bank) {
    std::vector<double> sims;
    for (size_t j = 0; j < bank.size() / dim; ++j) sims.push_back(dot(e, row(bank, j, dim)));
    std::sort(sims.rbegin(), sims.rend());
    return (sims[0] + sims[1]) / 2;
  };
  EXPECT_FLOAT_EQ(with->hub_weight(), 0.3f);
  const std::vector<float> image_h = with->image_hubs(images.data(), 4);
  const std::vector<float> text_h = with->text_hubs(text_emb.data(), 3);
  ASSERT_EQ(image_h.size(), 4u);
  ASSERT_EQ(text_h.size(), 3u);
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_NEAR(image_h[i], mean_top2(row(images, i, dim), stored.text_bank), 1e-5) << i;
  for (int64_t i = 0; i < 3; ++i)
    EXPECT_NEAR(text_h[i], mean_top2(row(text_emb, i, dim), stored.image_bank), 1e-5) << i;

  // hub_k changes what is stored with a document, so the fingerprint; hub_weight weighs h at
  // query time only, so not; weight 0 (or no memory) is plain cosines.
  mms::MemoryOverrides k3, w0;
  k3.hub_k = 3;
  w0.hub_weight = 0;
  EXPECT_NE(mms::Embedder::load(model.string(), true, k3)->fingerprint(), with->fingerprint());
  const auto off = mms::Embedder::load(model.string(), true, w0);
  EXPECT_EQ(off->fingerprint(), with->fingerprint());
  EXPECT_EQ(off->hub_weight(), 0.f);
  EXPECT_EQ(off->image_hubs(images.data(), 4), std::vector<float>(4, 0.f));
  EXPECT_EQ(plain->hub_weight(), 0.f);

  // A memory without banks (every file written before them) scores plain cosines.
  m.text_bank.clear();
  m.image_bank.clear();
  mms::write_memory(path, m);
  const auto old = mms::Embedder::load(model.string());
  EXPECT_EQ(old->hub_weight(), 0.f);
  EXPECT_NE(old->fingerprint(), with->fingerprint());
}

TEST_F(MemoryTest, BadHubBanksAndSettingsAreToldByName) {
  const std::string path = (dir_ / "memory.safetensors").string();
  EmbeddingMemory m = small_memory();
  m.text_bank = random_unit_rows(3, m.dim, 9);  // one bank without the other
  const std::string lone = error_of([&] { mms::write_memory(path, m); }).second;
  EXPECT_NE(lone.find("one hub bank without the other"), std::string::npos) << lone;
  m.image_bank = random_unit_rows(2, m.dim, 10);
  m.settings.hub_k = 0;
  const auto [kind, what] = error_of([&] { mms::write_memory(path, m); });
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(what.find("hub_k"), std::string::npos) << what;
  m.settings.hub_k = 10;
  m.settings.hub_weight = -0.1;
  EXPECT_NE(error_of([&] { mms::write_memory(path, m); }).second.find("hub_weight"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(path));

  // A file that lost one bank is corrupt, naming the missing tensor.
  m.settings.hub_weight = 0.3;
  mms::write_memory(path, m);
  mms::SafeTensors st = mms::read_safetensors(path);
  st.tensors.erase("image_bank");
  mms::write_safetensors(path, st);
  const auto [bad_kind, bad] = error_of([&] { mms::read_memory(path, m.dim); });
  EXPECT_EQ(bad_kind, ErrorKind::kCorrupt);
  EXPECT_NE(bad.find("image_bank"), std::string::npos) << bad;
}
