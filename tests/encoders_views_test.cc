// An image embedded from several views (config.json image.views, encoders/model_config.h):
// the Embedder's embedding against the mean of single-view embeddings of the whole input
// and of its corner crops, cut and resized here by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "encoders/embedder.h"
#include "encoders/model_config.h"
#include "index_test_support.h"

namespace {

namespace fs = std::filesystem;

class ViewsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mms_views_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    mms::testing::make_tiny_model(dir_ / "model");
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A copy of the tiny model whose config.json embeds images from `views` views.
  fs::path with_views(int32_t views, float crop) {
    const fs::path out = dir_ / ("views" + std::to_string(views));
    fs::create_directories(out);
    for (const char* name : {"model.safetensors", "tokenizer.model"}) {
      fs::copy_file(dir_ / "model" / name, out / name);
    }
    mms::ModelConfig c = mms::load_model_config((dir_ / "model" / "config.json").string());
    c.image.views = views;
    c.image.view_crop = crop;
    std::ofstream(out / "config.json") << mms::model_config_to_json(c);
    return out;
  }

  fs::path dir_;
};

// The square of `side` at (x0, y0) of a [3, s, s] image, resized to s x s by bilinear
// interpolation with half-pixel centres (torch.nn.functional.interpolate, bilinear,
// align_corners false: source = (destination + 0.5) * side / s - 0.5, at least 0).
std::vector<float> crop_resized(const float* image, int s, int x0, int y0, int side) {
  std::vector<float> out(3 * size_t(s) * s);
  const double scale = double(side) / s;
  auto source = [&](int d, int& i0, int& i1, double& frac) {
    const double x = std::max(0.0, (d + 0.5) * scale - 0.5);
    i0 = int(x);
    i1 = std::min(i0 + 1, side - 1);
    frac = x - i0;
  };
  for (int c = 0; c < 3; ++c) {
    const float* plane = image + size_t(c) * s * s;
    for (int y = 0; y < s; ++y) {
      int ya, yb;
      double fy;
      source(y, ya, yb, fy);
      for (int x = 0; x < s; ++x) {
        int xa, xb;
        double fx;
        source(x, xa, xb, fx);
        auto at = [&](int yy, int xx) { return double(plane[size_t(y0 + yy) * s + x0 + xx]); };
        out[(size_t(c) * s + y) * s + x] =
            float((1 - fy) * ((1 - fx) * at(ya, xa) + fx * at(ya, xb)) +
                  fy * ((1 - fx) * at(yb, xa) + fx * at(yb, xb)));
      }
    }
  }
  return out;
}

TEST_F(ViewsTest, AnImageIsTheMeanOfItsWholeAndCornerViews) {
  const auto plain = mms::Embedder::load((dir_ / "model").string());
  const int32_t s = plain->image_size(), dim = plain->dim();
  ASSERT_EQ(s, 32);
  std::vector<float> pixels(2 * 3 * size_t(s) * s);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0, 1);
  for (float& p : pixels) p = u(rng);

  const int side = 24, far = s - side;  // crop 0.75 of 32
  // Top-left, bottom-right, top-right, bottom-left (x0, y0): 3 views take the first two.
  const int corners[4][2] = {{0, 0}, {far, far}, {far, 0}, {0, far}};
  for (int32_t views : {3, 5}) {
    const auto viewed = mms::Embedder::load(with_views(views, 0.75f).string());
    EXPECT_NE(viewed->fingerprint(), plain->fingerprint());  // indexes of one refuse the other
    const std::vector<float> got = viewed->embed_pixels(pixels.data(), 2);
    const std::vector<float> whole = plain->embed_pixels(pixels.data(), 2);
    double moved = 0;
    for (int i = 0; i < 2; ++i) {
      const float* image = pixels.data() + size_t(i) * 3 * s * s;
      std::vector<double> sum(whole.begin() + i * dim, whole.begin() + (i + 1) * dim);
      for (int v = 0; v + 1 < views; ++v) {
        const std::vector<float> crop = crop_resized(image, s, corners[v][0], corners[v][1], side);
        const std::vector<float> e = plain->embed_pixels(crop.data(), 1);
        for (int d = 0; d < dim; ++d) sum[d] += e[d];
      }
      double norm = 0;
      for (double x : sum) norm += x * x;
      norm = std::sqrt(norm);
      for (int d = 0; d < dim; ++d) {
        EXPECT_NEAR(got[i * dim + d], sum[d] / norm, 1e-5) << views << " views, image " << i;
        moved = std::max(moved, std::abs(double(got[i * dim + d]) - whole[i * dim + d]));
      }
    }
    EXPECT_GT(moved, 1e-3) << "the views must change the embedding, or this proves nothing";
  }
}

TEST_F(ViewsTest, OneViewIsTheWholeInputAsBefore) {
  const auto plain = mms::Embedder::load((dir_ / "model").string());
  const auto one = mms::Embedder::load(with_views(1, 0.75f).string());
  EXPECT_EQ(one->fingerprint(), plain->fingerprint());  // older indexes stay valid
  std::vector<float> pixels(3 * size_t(plain->image_size()) * plain->image_size(), 0.25f);
  EXPECT_EQ(one->embed_pixels(pixels.data(), 1), plain->embed_pixels(pixels.data(), 1));
}

}  // namespace
