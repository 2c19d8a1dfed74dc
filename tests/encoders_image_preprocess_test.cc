// Preprocessing for the image encoder (resize the shorter side, centre crop, CHW 0..1) and
// JPEG thumbnails (scaled down, decodable by our own loader).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "encoders/image_io.h"
#include "tests/encoders_image_fixtures.h"

namespace mms {
namespace {

using testing::error_message;
using testing::fixture_path;
using testing::near;
using testing::pixel_at;

DecodedImage load(const std::string& name) {
  return load_image_file(fixture_path(name), ImageLimits{});
}

// Channel c (0 R, 1 G, 2 B) at (x, y) of a [3, size, size] tensor.
float at(const std::vector<float>& chw, int32_t size, int c, int x, int y) {
  return chw[(static_cast<size_t>(c) * size + y) * size + x];
}

TEST(ImagePreprocess, CentreCropWithoutResizeKeepsPixels) {
  // 8x6 quadrants: the centre 6x6 square is columns 1..6, so (0,0) is red and (5,5) white.
  const std::vector<float> chw = preprocess_image(load("quadrants.png"), 6);
  ASSERT_EQ(chw.size(), 3u * 6u * 6u);
  EXPECT_EQ(at(chw, 6, 0, 0, 0), 1.0f);
  EXPECT_EQ(at(chw, 6, 1, 0, 0), 0.0f);
  EXPECT_EQ(at(chw, 6, 2, 0, 0), 0.0f);
  EXPECT_EQ(at(chw, 6, 1, 5, 0), 1.0f);  // green, top right
  EXPECT_EQ(at(chw, 6, 0, 5, 0), 0.0f);
  EXPECT_EQ(at(chw, 6, 2, 0, 5), 1.0f);  // blue, bottom left
  EXPECT_EQ(at(chw, 6, 0, 0, 5), 0.0f);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(at(chw, 6, c, 5, 5), 1.0f);
}

TEST(ImagePreprocess, ShrinksByAveraging) {
  // 6x6 centre square to 3x3: each output pixel averages a 2x2 block, so the corners stay
  // pure and the middle row/column mixes the quadrants.
  const std::vector<float> chw = preprocess_image(load("quadrants.png"), 3);
  ASSERT_EQ(chw.size(), 27u);
  EXPECT_FLOAT_EQ(at(chw, 3, 0, 0, 0), 1.0f);
  EXPECT_FLOAT_EQ(at(chw, 3, 1, 0, 0), 0.0f);
  EXPECT_FLOAT_EQ(at(chw, 3, 1, 2, 0), 1.0f);
  EXPECT_FLOAT_EQ(at(chw, 3, 0, 2, 0), 0.0f);
  // Middle of the top row: half red, half green.
  EXPECT_NEAR(at(chw, 3, 0, 1, 0), 0.5f, 0.01f);
  EXPECT_NEAR(at(chw, 3, 1, 1, 0), 0.5f, 0.01f);
}

TEST(ImagePreprocess, OutputShapeAndRange) {
  const DecodedImage gradient = load("gradient_256x192.jpg");
  for (int32_t size : {1, 16, 224, 300}) {
    SCOPED_TRACE(size);
    const std::vector<float> chw = preprocess_image(gradient, size);
    ASSERT_EQ(chw.size(), 3u * size * size);
    const auto [lo, hi] = std::minmax_element(chw.begin(), chw.end());
    EXPECT_GE(*lo, 0.0f);
    EXPECT_LE(*hi, 1.0f);
  }
  // The gradient's red grows left to right, its green top to bottom, blue is flat at 128.
  const std::vector<float> chw = preprocess_image(gradient, 64);
  EXPECT_LT(at(chw, 64, 0, 2, 32), at(chw, 64, 0, 61, 32));
  EXPECT_LT(at(chw, 64, 1, 32, 2), at(chw, 64, 1, 32, 61));
  EXPECT_NEAR(at(chw, 64, 2, 32, 32), 128.0f / 255.0f, 0.05f);
}

TEST(ImagePreprocess, RejectsBadArguments) {
  const DecodedImage image = load("quadrants.png");
  std::string message =
      error_message([&] { preprocess_image(image, 0); }, ErrorKind::kInvalidArgument);
  EXPECT_NE(message.find("size must be in 1..16384, got 0"), std::string::npos) << message;
  DecodedImage broken = image;
  broken.rgb.pop_back();
  message = error_message([&] { preprocess_image(broken, 8); }, ErrorKind::kInvalidArgument);
  EXPECT_NE(message.find("8x6 but holds 143 bytes"), std::string::npos) << message;
  error_message([&] { preprocess_image(DecodedImage{}, 8); }, ErrorKind::kInvalidArgument);
}

TEST(ImageThumbnail, ScalesDownAndRoundTrips) {
  const DecodedImage gradient = load("gradient_256x192.jpg");
  const std::vector<uint8_t> jpeg = encode_jpeg_thumbnail(gradient, 64, 85);
  ASSERT_FALSE(jpeg.empty());
  const DecodedImage thumb = decode_image(jpeg.data(), jpeg.size(), "thumb.jpg", ImageLimits{});
  EXPECT_EQ(thumb.source.format, ImageFormat::kJpeg);
  EXPECT_EQ(thumb.width, 64);
  EXPECT_EQ(thumb.height, 48);
  EXPECT_TRUE(near(pixel_at(thumb, 32, 24), pixel_at(gradient, 128, 96), 12));
  EXPECT_TRUE(near(pixel_at(thumb, 60, 44), pixel_at(gradient, 240, 176), 12));
}

TEST(ImageThumbnail, NeverScalesUp) {
  const std::vector<uint8_t> jpeg = encode_jpeg_thumbnail(load("quadrants.png"), 256, 95);
  const DecodedImage thumb = decode_image(jpeg.data(), jpeg.size(), "thumb.jpg", ImageLimits{});
  EXPECT_EQ(thumb.width, 8);
  EXPECT_EQ(thumb.height, 6);
}

TEST(ImageThumbnail, RejectsBadArguments) {
  const DecodedImage image = load("quadrants.png");
  std::string message =
      error_message([&] { encode_jpeg_thumbnail(image, 64, 0); }, ErrorKind::kInvalidArgument);
  EXPECT_NE(message.find("quality must be in 1..100, got 0"), std::string::npos) << message;
  message =
      error_message([&] { encode_jpeg_thumbnail(image, 0, 80); }, ErrorKind::kInvalidArgument);
  EXPECT_NE(message.find("max_side must be in 1..16384, got 0"), std::string::npos) << message;
}

}  // namespace
}  // namespace mms
