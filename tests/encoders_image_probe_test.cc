// Header-only probing: format by content, size from the header, and no crash or stray
// exception type on any prefix or corruption of a valid header.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "encoders/image_io.h"
#include "tests/encoders_image_fixtures.h"

namespace mms {
namespace {

using testing::error_message;
using testing::fixture_bytes;

struct Expected {
  const char* file;
  ImageFormat format;
  int32_t width;
  int32_t height;
  int32_t orientation;
};

const Expected kGoodFixtures[] = {
    {"quadrants.png", ImageFormat::kPng, 8, 6, 1},
    {"quadrants.jpg", ImageFormat::kJpeg, 32, 24, 1},
    {"quadrants.webp", ImageFormat::kWebp, 8, 6, 1},
    {"quadrants.bmp", ImageFormat::kBmp, 8, 6, 1},
    {"quadrants.tiff", ImageFormat::kTiff, 8, 6, 1},
    {"quadrants.ppm", ImageFormat::kPnm, 8, 6, 1},
    {"gray.png", ImageFormat::kPng, 8, 2, 1},
    {"gray.pgm", ImageFormat::kPnm, 8, 2, 1},
    {"rgb16.png", ImageFormat::kPng, 8, 6, 1},
    {"rgba.png", ImageFormat::kPng, 4, 3, 1},
    {"rgba.webp", ImageFormat::kWebp, 4, 3, 1},
    {"rgba.tiff", ImageFormat::kTiff, 4, 3, 1},
    {"palette.png", ImageFormat::kPng, 4, 1, 1},
    {"exif_orientation6.jpg", ImageFormat::kJpeg, 16, 32, 6},  // stored 32x16
    {"orientation6.png", ImageFormat::kPng, 6, 8, 6},          // stored 8x6
    {"orientation6.tiff", ImageFormat::kTiff, 6, 8, 6},
    {"gradient_256x192.jpg", ImageFormat::kJpeg, 256, 192, 1},
    {"huge_30000x30000.png", ImageFormat::kPng, 30000, 30000, 1},
};

TEST(ImageProbe, ReadsFormatSizeAndOrientationFromTheHeader) {
  for (const Expected& want : kGoodFixtures) {
    SCOPED_TRACE(want.file);
    const std::vector<uint8_t> bytes = fixture_bytes(want.file);
    EXPECT_EQ(sniff_image_format(bytes.data(), bytes.size()), want.format);
    EXPECT_TRUE(looks_like_image(bytes.data(), std::min(bytes.size(), kImageSniffBytes)));
    const ImageInfo info = probe_image(bytes.data(), bytes.size(), want.file);
    EXPECT_EQ(info.format, want.format);
    EXPECT_EQ(info.width, want.width);
    EXPECT_EQ(info.height, want.height);
    EXPECT_EQ(info.orientation, want.orientation);
  }
}

TEST(ImageProbe, RecognizesByContentNotByName) {
  // random_bytes.png has a .png name and no PNG inside; the JPEG probes as JPEG whatever
  // it is called.
  const std::vector<uint8_t> random = fixture_bytes("random_bytes.png");
  EXPECT_FALSE(looks_like_image(random.data(), random.size()));
  const std::vector<uint8_t> jpeg = fixture_bytes("quadrants.jpg");
  EXPECT_EQ(probe_image(jpeg.data(), jpeg.size(), "photo.txt").format, ImageFormat::kJpeg);
}

TEST(ImageProbe, TextIsNotAnImage) {
  for (const std::string text : {"This is a text file", "BMW is a car maker, 12345678901234",
                                 "P9 is not netpbm", "RIFF....WAVEfmt "}) {
    EXPECT_FALSE(looks_like_image(reinterpret_cast<const uint8_t*>(text.data()), text.size()))
        << text;
  }
  const std::vector<uint8_t> bytes = fixture_bytes("not_an_image.txt");
  const std::string message = error_message(
      [&] { probe_image(bytes.data(), bytes.size(), "notes.txt"); }, ErrorKind::kUnsupported);
  EXPECT_NE(message.find("'notes.txt' is not a recognized image"), std::string::npos) << message;
  EXPECT_NE(message.find("JPEG, PNG, WebP, BMP, TIFF, PNM"), std::string::npos) << message;
}

TEST(ImageProbe, NamesKnownButUnsupportedFormats) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string("GIF89a\x08\x00\x06\x00\x00\x00\x00", 13), "GIF"},
      {std::string("\0\0\0\x1c"
                   "ftypheic\0\0\0\0",
                   16),
       "HEIF"},
      {std::string("\0\0\0\x1c"
                   "ftypavif\0\0\0\0",
                   16),
       "AVIF"},
      {std::string("\xff\x4f\xff\x51\0\0", 6), "JPEG 2000"},
      {std::string("II+\0\x08\0\0\0", 8), "BigTIFF"},
  };
  for (const auto& [bytes, format] : cases) {
    const std::string message = error_message(
        [&] { probe_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.img"); },
        ErrorKind::kUnsupported);
    EXPECT_NE(message.find("'x.img' is a " + format + " image, which is not supported"),
              std::string::npos)
        << message;
  }
}

TEST(ImageProbe, EmptyInputIsCorrupt) {
  const std::string message =
      error_message([] { probe_image(nullptr, 0, "empty.png"); }, ErrorKind::kCorrupt);
  EXPECT_NE(message.find("'empty.png' is empty"), std::string::npos) << message;
  EXPECT_FALSE(looks_like_image(nullptr, 0));
}

std::vector<uint8_t> bytes_of(const std::string& s) {
  return {s.begin(), s.end()};
}

TEST(ImageProbe, HandMadeHeaders) {
  // BMP stored top-down has a negative height.
  std::vector<uint8_t> bmp = bytes_of(std::string("BM", 2) + std::string(12, '\0'));
  const uint8_t dib[] = {40, 0, 0, 0, 7, 0, 0, 0, 0xFB, 0xFF, 0xFF, 0xFF, 1, 0, 24, 0};
  bmp.insert(bmp.end(), std::begin(dib), std::end(dib));
  ImageInfo info = probe_image(bmp.data(), bmp.size(), "top_down.bmp");
  EXPECT_EQ(info.format, ImageFormat::kBmp);
  EXPECT_EQ(info.width, 7);
  EXPECT_EQ(info.height, 5);

  // Netpbm allows comments anywhere in the header.
  const std::vector<uint8_t> pgm = bytes_of("P5\n# made by hand\n12 # width\n34\n255\n");
  info = probe_image(pgm.data(), pgm.size(), "comment.pgm");
  EXPECT_EQ(info.width, 12);
  EXPECT_EQ(info.height, 34);

  // Lossless JPEG (SOF3) and 12-bit JPEG are refused by name.
  const std::vector<uint8_t> sof3 =
      bytes_of(std::string("\xff\xd8\xff\xc3\x00\x0b\x08\x00\x10\x00\x10\x01\x01\x11\x00", 15));
  std::string message = error_message(
      [&] { probe_image(sof3.data(), sof3.size(), "lossless.jpg"); }, ErrorKind::kUnsupported);
  EXPECT_NE(message.find("'lossless.jpg' is a lossless or hierarchical JPEG (SOF3)"),
            std::string::npos)
      << message;
  std::vector<uint8_t> twelve_bit = sof3;
  twelve_bit[3] = 0xC1;
  twelve_bit[6] = 12;
  message = error_message([&] { probe_image(twelve_bit.data(), twelve_bit.size(), "12.jpg"); },
                          ErrorKind::kUnsupported);
  EXPECT_NE(message.find("12-bit"), std::string::npos) << message;

  // Animated WebP (VP8X with the animation flag).
  const std::vector<uint8_t> animated =
      bytes_of(std::string("RIFF\x1a\0\0\0WEBPVP8X\x0a\0\0\0\x02\0\0\0\x07\0\0\x07\0\0", 30));
  message = error_message([&] { probe_image(animated.data(), animated.size(), "anim.webp"); },
                          ErrorKind::kUnsupported);
  EXPECT_NE(message.find("'anim.webp' is an animated WebP"), std::string::npos) << message;
}

TEST(ImageProbe, CutHeadersAreCorruptAndNamed) {
  const std::vector<uint8_t> png = fixture_bytes("quadrants.png");
  const std::string message =
      error_message([&] { probe_image(png.data(), 20, "cut.png"); }, ErrorKind::kCorrupt);
  EXPECT_NE(message.find("'cut.png' is a corrupt PNG image"), std::string::npos) << message;
}

// Every prefix and many random corruptions of every fixture: probe_image returns or throws
// mms::Error, nothing else (run under -fsanitize=address,undefined to catch stray reads).
TEST(ImageProbe, SurvivesEveryPrefixAndRandomCorruption) {
  std::mt19937 random(1234);
  for (const Expected& fixture : kGoodFixtures) {
    SCOPED_TRACE(fixture.file);
    const std::vector<uint8_t> bytes = fixture_bytes(fixture.file);
    auto probe = [&](const std::vector<uint8_t>& data) {
      try {
        const ImageInfo info = probe_image(data.data(), data.size(), fixture.file);
        EXPECT_GT(info.width, 0);
        EXPECT_GT(info.height, 0);
      } catch (const Error&) {
      }
    };
    for (size_t n = 0; n < bytes.size(); ++n) {
      probe(std::vector<uint8_t>(bytes.begin(), bytes.begin() + n));
    }
    for (int round = 0; round < 300; ++round) {
      std::vector<uint8_t> mutated(bytes.begin(),
                                   bytes.begin() + std::min<size_t>(bytes.size(), 96));
      for (int flips = 1 + random() % 4; flips > 0; --flips) {
        mutated[random() % mutated.size()] = static_cast<uint8_t>(random());
      }
      probe(mutated);
    }
  }
}

}  // namespace
}  // namespace mms
