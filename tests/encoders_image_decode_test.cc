// Decoding: every supported format to the same RGB, alpha on white, orientation, reduced
// JPEG decoding, and every way a file can be refused (each error naming the file).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "encoders/image_io.h"
#include "tests/encoders_image_fixtures.h"

namespace mms {
namespace {

using testing::error_message;
using testing::fixture_bytes;
using testing::fixture_path;
using testing::near;
using testing::pixel_at;

constexpr std::array<int, 3> kRed = {255, 0, 0};
constexpr std::array<int, 3> kGreen = {0, 255, 0};
constexpr std::array<int, 3> kBlue = {0, 0, 255};
constexpr std::array<int, 3> kWhite = {255, 255, 255};

DecodedImage load(const std::string& name, int32_t min_side_hint = 0) {
  return load_image_file(fixture_path(name), ImageLimits{}, min_side_hint);
}

void expect_quadrants(const DecodedImage& image, int tolerance) {
  const int w = image.width;
  const int h = image.height;
  EXPECT_TRUE(near(pixel_at(image, 0, 0), kRed, tolerance));
  EXPECT_TRUE(near(pixel_at(image, w - 1, 0), kGreen, tolerance));
  EXPECT_TRUE(near(pixel_at(image, 0, h - 1), kBlue, tolerance));
  EXPECT_TRUE(near(pixel_at(image, w - 1, h - 1), kWhite, tolerance));
}

TEST(ImageDecode, EveryFormatDecodesToTheSameRgb) {
  for (const char* name : {"quadrants.png", "quadrants.webp", "quadrants.bmp", "quadrants.tiff",
                           "quadrants.ppm", "rgb16.png"}) {
    SCOPED_TRACE(name);
    const DecodedImage image = load(name);
    ASSERT_EQ(image.width, 8);
    ASSERT_EQ(image.height, 6);
    EXPECT_EQ(image.rgb.size(), 8u * 6u * 3u);
    expect_quadrants(image, 0);
  }
  const DecodedImage jpeg = load("quadrants.jpg");
  EXPECT_EQ(jpeg.width, 32);
  EXPECT_EQ(jpeg.height, 24);
  EXPECT_EQ(jpeg.source.format, ImageFormat::kJpeg);
  expect_quadrants(jpeg, 8);
}

TEST(ImageDecode, ProbedSizeIsDecodedSize) {
  for (const char* name :
       {"quadrants.png", "quadrants.jpg", "quadrants.webp", "quadrants.bmp", "quadrants.tiff",
        "quadrants.ppm", "gray.png", "gray.pgm", "rgba.png", "palette.png", "exif_orientation6.jpg",
        "orientation6.png", "orientation6.tiff"}) {
    SCOPED_TRACE(name);
    const std::vector<uint8_t> bytes = fixture_bytes(name);
    const ImageInfo info = probe_image(bytes.data(), bytes.size(), name);
    const DecodedImage image = decode_image(bytes.data(), bytes.size(), name, ImageLimits{});
    EXPECT_EQ(image.width, info.width);
    EXPECT_EQ(image.height, info.height);
    EXPECT_EQ(image.source.format, info.format);
  }
}

TEST(ImageDecode, GrayscaleBecomesRgb) {
  for (const char* name : {"gray.png", "gray.pgm"}) {
    SCOPED_TRACE(name);
    const DecodedImage image = load(name);
    for (int x = 0; x < 8; ++x) {
      EXPECT_EQ(pixel_at(image, x, 1), (std::array<int, 3>{x * 36, x * 36, x * 36}));
    }
  }
}

TEST(ImageDecode, AlphaIsCompositedOnWhite) {
  // Rows: opaque red, fully transparent black, red at alpha 128 (pink over white).
  for (const char* name : {"rgba.png", "rgba.webp", "rgba.tiff"}) {
    SCOPED_TRACE(name);
    const DecodedImage image = load(name);
    ASSERT_EQ(image.height, 3);
    EXPECT_EQ(pixel_at(image, 0, 0), kRed);
    EXPECT_EQ(pixel_at(image, 3, 1), kWhite);
    EXPECT_TRUE(near(pixel_at(image, 2, 2), {255, 127, 127}, 1));
  }
}

TEST(ImageDecode, PaletteWithTransparencyIsExpanded) {
  const DecodedImage image = load("palette.png");
  ASSERT_EQ(image.width, 4);
  EXPECT_EQ(pixel_at(image, 0, 0), kRed);
  EXPECT_EQ(pixel_at(image, 1, 0), kGreen);
  EXPECT_EQ(pixel_at(image, 2, 0), kBlue);
  EXPECT_EQ(pixel_at(image, 3, 0), kWhite);  // the transparent entry
}

TEST(ImageDecode, ExifOrientationIsApplied) {
  // Stored 32x16, left half red; orientation 6 shows it 16x32 with red on top.
  const DecodedImage jpeg = load("exif_orientation6.jpg");
  EXPECT_EQ(jpeg.width, 16);
  EXPECT_EQ(jpeg.height, 32);
  EXPECT_EQ(jpeg.source.orientation, 6);
  EXPECT_TRUE(near(pixel_at(jpeg, 8, 4), kRed, 8));
  EXPECT_TRUE(near(pixel_at(jpeg, 8, 28), kBlue, 8));

  // Quadrants stored 8x6 turned clockwise: blue, red on top; white, green below.
  for (const char* name : {"orientation6.png", "orientation6.tiff"}) {
    SCOPED_TRACE(name);
    const DecodedImage image = load(name);
    ASSERT_EQ(image.width, 6);
    ASSERT_EQ(image.height, 8);
    EXPECT_EQ(pixel_at(image, 0, 0), kBlue);
    EXPECT_EQ(pixel_at(image, 5, 0), kRed);
    EXPECT_EQ(pixel_at(image, 0, 7), kWhite);
    EXPECT_EQ(pixel_at(image, 5, 7), kGreen);
  }
}

TEST(ImageDecode, JpegIsDecodedReducedWhenAHintAllows) {
  // 256x192: 1/8 leaves a 24-pixel shorter side, 1/4 leaves 48, 1/2 leaves 96.
  const struct {
    int32_t hint, width, height;
  } cases[] = {{0, 256, 192}, {24, 32, 24},   {25, 64, 48},    {48, 64, 48},
               {90, 128, 96}, {97, 256, 192}, {1000, 256, 192}};
  const DecodedImage full = load("gradient_256x192.jpg");
  for (const auto& c : cases) {
    SCOPED_TRACE("hint " + std::to_string(c.hint));
    const DecodedImage image = load("gradient_256x192.jpg", c.hint);
    EXPECT_EQ(image.width, c.width);
    EXPECT_EQ(image.height, c.height);
    EXPECT_EQ(image.source.width, 256);
    EXPECT_EQ(image.source.height, 192);
    // Same picture, smaller: the centre pixel matches the full-size decode's.
    EXPECT_TRUE(near(pixel_at(image, c.width / 2, c.height / 2), pixel_at(full, 128, 96), 12));
  }
  // Other formats ignore the hint.
  EXPECT_EQ(load("quadrants.png", 2).width, 8);
}

TEST(ImageDecode, EmptyFileIsCorrupt) {
  const std::string message = error_message([] { load("empty.png"); }, ErrorKind::kCorrupt);
  EXPECT_NE(message.find("empty.png' is empty"), std::string::npos) << message;
}

TEST(ImageDecode, NonImagesAreUnsupported) {
  for (const char* name : {"not_an_image.txt", "random_bytes.png"}) {
    const std::string message = error_message([&] { load(name); }, ErrorKind::kUnsupported);
    EXPECT_NE(message.find(std::string(name) + "' is not a recognized image"), std::string::npos)
        << message;
  }
}

TEST(ImageDecode, TruncatedFilesAreCorrupt) {
  std::string message = error_message([] { load("truncated.png"); }, ErrorKind::kCorrupt);
  EXPECT_NE(message.find("truncated.png' is a corrupt PNG image"), std::string::npos) << message;
  // libjpeg alone would return the top half and grey below; the end marker check refuses it.
  message = error_message([] { load("truncated.jpg"); }, ErrorKind::kCorrupt);
  EXPECT_NE(message.find("truncated.jpg' is a truncated JPEG image"), std::string::npos) << message;
}

TEST(ImageDecode, EveryPrefixOfAnImageIsRefused) {
  for (const char* name :
       {"quadrants.png", "quadrants.jpg", "quadrants.webp", "quadrants.bmp", "quadrants.tiff",
        "quadrants.ppm", "rgba.png", "palette.png", "exif_orientation6.jpg"}) {
    SCOPED_TRACE(name);
    const std::vector<uint8_t> bytes = fixture_bytes(name);
    const DecodedImage whole = decode_image(bytes.data(), bytes.size(), name, ImageLimits{});
    for (size_t n = 0; n < bytes.size(); ++n) {
      try {
        const DecodedImage image = decode_image(bytes.data(), n, name, ImageLimits{});
        // Only a TIFF cut inside its trailing directory still holds every pixel.
        EXPECT_EQ(image.source.format, ImageFormat::kTiff) << "prefix " << n << " decoded";
        EXPECT_EQ(image.rgb, whole.rgb) << "prefix " << n;
      } catch (const Error& e) {
        EXPECT_TRUE(e.kind() == ErrorKind::kCorrupt || e.kind() == ErrorKind::kUnsupported)
            << e.what();
        EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      }
    }
  }
}

TEST(ImageDecode, HugeDimensionsAreRefusedFromTheHeader) {
  // A 196-byte PNG claiming 30000x30000 (900 MB of pixels); its data holds only a few rows,
  // so reaching the decoder would fail differently (corrupt), and slowly.
  const auto start = std::chrono::steady_clock::now();
  const std::string message =
      error_message([] { load("huge_30000x30000.png"); }, ErrorKind::kTooLarge);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_NE(message.find("huge_30000x30000.png' is 30000x30000 pixels, over the limit of 16384 "
                         "pixels per side"),
            std::string::npos)
      << message;
  EXPECT_LT(elapsed, std::chrono::milliseconds(200));
}

TEST(ImageDecode, EachLimitIsEnforced) {
  const std::vector<uint8_t> png = fixture_bytes("quadrants.png");  // 8x6, 87 bytes
  ImageLimits limits;
  limits.max_pixels = 47;
  std::string message = error_message(
      [&] { decode_image(png.data(), png.size(), "q.png", limits); }, ErrorKind::kTooLarge);
  EXPECT_NE(message.find("'q.png' is 8x6 pixels (48), over the limit of 47 pixels"),
            std::string::npos)
      << message;
  limits.max_pixels = 48;
  EXPECT_EQ(decode_image(png.data(), png.size(), "q.png", limits).width, 8);

  limits = ImageLimits{};
  limits.max_side = 7;
  message = error_message([&] { decode_image(png.data(), png.size(), "q.png", limits); },
                          ErrorKind::kTooLarge);
  EXPECT_NE(message.find("over the limit of 7 pixels per side"), std::string::npos) << message;

  limits = ImageLimits{};
  limits.max_bytes = 86;
  message = error_message([&] { decode_image(png.data(), png.size(), "q.png", limits); },
                          ErrorKind::kTooLarge);
  EXPECT_NE(message.find("'q.png' is 87 bytes, over the limit of 86 bytes"), std::string::npos)
      << message;
  // A file is refused by its size before it is read.
  const std::string path = fixture_path("quadrants.png");
  message = error_message([&] { load_image_file(path, limits); }, ErrorKind::kTooLarge);
  EXPECT_NE(message.find("image file '" + path + "' is 87 bytes"), std::string::npos) << message;

  limits.max_bytes = 0;
  error_message([&] { load_image_file(path, limits); }, ErrorKind::kInvalidArgument);
  error_message([&] { load_image_file(path, ImageLimits{}, -1); }, ErrorKind::kInvalidArgument);
}

TEST(ImageDecode, FileErrorsNameThePath) {
  const std::string missing = fixture_path("no_such_image.png");
  std::string message =
      error_message([&] { load_image_file(missing, ImageLimits{}); }, ErrorKind::kNotFound);
  EXPECT_NE(message.find("'" + missing + "' does not exist"), std::string::npos) << message;

  const std::string folder = fixture_path("");
  message = error_message([&] { load_image_file(folder, ImageLimits{}); }, ErrorKind::kIo);
  EXPECT_NE(message.find("'" + folder + "' is not a regular file"), std::string::npos) << message;
}

// What a folder to index may hold besides images: a FIFO with no writer (a blocking open
// would wait for ever) and a device that never ends are refused at once, by what the opened
// descriptor is.
TEST(ImageDecode, FifosAndDevicesAreRefusedWithoutBlocking) {
  const std::string fifo =
      ::testing::TempDir() + "mms_image_decode_fifo_" + std::to_string(::getpid());
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto reading = std::async(std::launch::async, [&] {
    return error_message([&] { read_image_file(fifo, ImageLimits{}.max_bytes); }, ErrorKind::kIo);
  });
  if (reading.wait_for(std::chrono::seconds(20)) == std::future_status::timeout) {
    // A writer releases a blocked open, so the test fails instead of hanging.
    const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
    ADD_FAILURE() << "opening a FIFO blocked";
    reading.wait();
    ::close(fd);
  }
  std::string message = reading.get();
  EXPECT_NE(message.find("'" + fifo + "' is not a regular file (a FIFO)"), std::string::npos)
      << message;
  ::unlink(fifo.c_str());
  message = error_message([&] { load_image_file("/dev/zero", ImageLimits{}); }, ErrorKind::kIo);
  EXPECT_NE(message.find("'/dev/zero' is not a regular file (a character device)"),
            std::string::npos)
      << message;
}

// Random corruption of real images reaches the decoders (our header checks pass most of
// it): each must end in an image of the promised shape or an mms::Error, never a crash or a
// foreign exception.
TEST(ImageDecode, SurvivesRandomCorruption) {
  std::mt19937 random(99);
  for (const char* name : {"quadrants.png", "quadrants.jpg", "quadrants.webp", "quadrants.bmp",
                           "quadrants.tiff", "quadrants.ppm", "rgba.png", "palette.png"}) {
    SCOPED_TRACE(name);
    const std::vector<uint8_t> bytes = fixture_bytes(name);
    for (int round = 0; round < 200; ++round) {
      std::vector<uint8_t> mutated = bytes;
      for (int flips = 1 + random() % 3; flips > 0; --flips) {
        mutated[random() % mutated.size()] = static_cast<uint8_t>(random());
      }
      try {
        const DecodedImage image = decode_image(mutated.data(), mutated.size(), name, {});
        EXPECT_EQ(image.rgb.size(), static_cast<size_t>(image.width) * image.height * 3);
      } catch (const Error&) {
      }
    }
  }
}

TEST(ImageDecode, ConcurrentDecodesAgree) {
  const std::vector<uint8_t> jpeg = fixture_bytes("gradient_256x192.jpg");
  const std::vector<uint8_t> png = fixture_bytes("rgba.png");
  const DecodedImage want_jpeg = decode_image(jpeg.data(), jpeg.size(), "g.jpg", {});
  const DecodedImage want_png = decode_image(png.data(), png.size(), "rgba.png", {});
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        if (decode_image(jpeg.data(), jpeg.size(), "g.jpg", {}).rgb != want_jpeg.rgb) {
          ++mismatches[t];
        }
        if (decode_image(png.data(), png.size(), "rgba.png", {}).rgb != want_png.rgb) {
          ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace mms
