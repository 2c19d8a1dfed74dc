// Decoding with OpenCV behind the limits checked in image_probe.cc. OpenCV 4.6's flags decide
// what we get back, so they are chosen per format:
//   JPEG    IMREAD_COLOR (or IMREAD_REDUCED_COLOR_2/4/8) | IMREAD_IGNORE_ORIENTATION: no
//           alpha to lose; libjpeg converts grayscale and CMYK to BGR; we apply the EXIF
//           orientation ourselves.
//   others  IMREAD_UNCHANGED: IMREAD_COLOR would drop alpha (leaving transparent pixels
//           whatever colour they hide) and 16-bit precision. UNCHANGED ignores EXIF
//           orientation, so a PNG's eXIf is applied by us; libtiff applies TIFF's itself.
//           Palette PNGs come back expanded to BGR(A), gray+alpha PNGs as BGRA.
#include "encoders/image_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <system_error>

#include "common/error.h"
#include "common/file_io.h"
#include "encoders/image_probe.h"

namespace mms {
namespace {

// Callers decode many images on their own threads; OpenCV's pool on top would
// oversubscribe the cores. Its logger is limited to errors, since every failure reaches the
// caller as an Error naming the file (imdecode itself, libpng and libjpeg still print a line
// to stderr for some corrupt files; only a process-wide stderr redirect would stop that).
// Both settings are process-wide; this module is the program's only OpenCV user.
void configure_opencv_once() {
  static const bool configured = [] {
    cv::setNumThreads(0);
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_ERROR);
    return true;
  }();
  (void)configured;
}

std::string quoted(std::string_view name) {
  return "'" + std::string(name) + "'";
}

void check_decode_arguments(const ImageLimits& limits, int32_t min_side_hint) {
  if (limits.max_bytes <= 0 || limits.max_side <= 0 || limits.max_pixels <= 0) {
    throw Error::invalid_argument("image limits must be positive, got max_bytes " +
                                  std::to_string(limits.max_bytes) + ", max_side " +
                                  std::to_string(limits.max_side) + ", max_pixels " +
                                  std::to_string(limits.max_pixels));
  }
  if (min_side_hint < 0) {
    throw Error::invalid_argument("min_side_hint must be >= 0, got " +
                                  std::to_string(min_side_hint));
  }
}

void check_pixel_limits(const ImageHeader& header, const ImageLimits& limits,
                        std::string_view name) {
  const int64_t width = header.stored_width;
  const int64_t height = header.stored_height;
  const std::string size = std::to_string(width) + "x" + std::to_string(height);
  if (width > limits.max_side || height > limits.max_side) {
    throw Error::too_large(quoted(name) + " is " + size + " pixels, over the limit of " +
                           std::to_string(limits.max_side) + " pixels per side");
  }
  if (width * height > limits.max_pixels) {
    throw Error::too_large(quoted(name) + " is " + size + " pixels (" +
                           std::to_string(width * height) + "), over the limit of " +
                           std::to_string(limits.max_pixels) + " pixels");
  }
}

// The largest JPEG DCT scaling (1/8, 1/4, 1/2) that keeps the shorter side >= the hint;
// libjpeg rounds scaled sides up.
int32_t jpeg_reduction(const ImageHeader& header, int32_t min_side_hint) {
  if (header.info.format != ImageFormat::kJpeg || min_side_hint <= 0) return 1;
  const int32_t shorter = std::min(header.stored_width, header.stored_height);
  for (int32_t factor : {8, 4, 2}) {
    if ((shorter + factor - 1) / factor >= min_side_hint) return factor;
  }
  return 1;
}

int imread_flags(const ImageHeader& header, int32_t reduction) {
  if (header.info.format != ImageFormat::kJpeg) return cv::IMREAD_UNCHANGED;
  const int color = reduction == 8   ? cv::IMREAD_REDUCED_COLOR_8
                    : reduction == 4 ? cv::IMREAD_REDUCED_COLOR_4
                    : reduction == 2 ? cv::IMREAD_REDUCED_COLOR_2
                                     : cv::IMREAD_COLOR;
  return color | cv::IMREAD_IGNORE_ORIENTATION;
}

uint8_t over_white(int color, int alpha, bool premultiplied) {
  const int white_share = 255 - alpha;
  if (premultiplied) return static_cast<uint8_t>(std::min(255, color + white_share));
  return static_cast<uint8_t>((color * alpha + 255 * white_share + 127) / 255);
}

// 8-bit gray+alpha (2 channels) or BGRA (4) to RGB over a white background.
cv::Mat composite_on_white(const cv::Mat& image, bool premultiplied) {
  const int channels = image.channels();
  cv::Mat rgb(image.rows, image.cols, CV_8UC3);
  for (int y = 0; y < image.rows; ++y) {
    const uint8_t* src = image.ptr<uint8_t>(y);
    uint8_t* dst = rgb.ptr<uint8_t>(y);
    for (int x = 0; x < image.cols; ++x, src += channels, dst += 3) {
      const int alpha = src[channels - 1];
      const bool gray = channels == 2;
      dst[0] = over_white(gray ? src[0] : src[2], alpha, premultiplied);
      dst[1] = over_white(gray ? src[0] : src[1], alpha, premultiplied);
      dst[2] = over_white(src[0], alpha, premultiplied);
    }
  }
  return rgb;
}

// Whatever imdecode returned (depth 8U/16U/32F/64F, 1-4 channels in BGR order) as 8-bit RGB.
cv::Mat to_rgb8(const cv::Mat& decoded, bool premultiplied, std::string_view name) {
  cv::Mat image8;
  switch (decoded.depth()) {
    case CV_8U: image8 = decoded; break;
    case CV_16U: decoded.convertTo(image8, CV_8U, 1.0 / 257.0); break;
    case CV_32F:
    case CV_64F: decoded.convertTo(image8, CV_8U, 255.0); break;  // float samples are 0..1
    default:
      throw Error::unsupported(quoted(name) +
                               " has signed-integer samples, which are not supported");
  }
  cv::Mat rgb;
  switch (image8.channels()) {
    case 1: cv::cvtColor(image8, rgb, cv::COLOR_GRAY2RGB); break;
    case 3: cv::cvtColor(image8, rgb, cv::COLOR_BGR2RGB); break;
    case 2:
    case 4: rgb = composite_on_white(image8, premultiplied); break;
    default:
      throw Error::unsupported(quoted(name) + " has " + std::to_string(image8.channels()) +
                               " channels, which is not supported");
  }
  return rgb;
}

// EXIF orientation 2..8 applied the way OpenCV's own loader does it.
cv::Mat apply_orientation(const cv::Mat& image, int32_t orientation) {
  cv::Mat out;
  switch (orientation) {
    case 2: cv::flip(image, out, 1); return out;
    case 3: cv::flip(image, out, -1); return out;
    case 4: cv::flip(image, out, 0); return out;
    case 5: cv::transpose(image, out); return out;
    case 6: cv::rotate(image, out, cv::ROTATE_90_CLOCKWISE); return out;
    case 7:
      cv::transpose(image, out);
      cv::flip(out, out, -1);
      return out;
    case 8: cv::rotate(image, out, cv::ROTATE_90_COUNTERCLOCKWISE); return out;
    default: return image;
  }
}

void check_rgb_image(const DecodedImage& image, const char* function) {
  const bool consistent =
      image.width > 0 && image.height > 0 &&
      image.rgb.size() == static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3;
  if (!consistent) {
    throw Error::invalid_argument(std::string(function) + ": the image is " +
                                  std::to_string(image.width) + "x" + std::to_string(image.height) +
                                  " but holds " + std::to_string(image.rgb.size()) +
                                  " bytes of RGB");
  }
}

// A cv::Mat over the image's pixels, without copying; OpenCV only reads from it.
cv::Mat rgb_view(const DecodedImage& image) {
  return cv::Mat(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.rgb.data()));
}

}  // namespace

std::vector<uint8_t> read_image_file(const std::string& path, int64_t max_bytes) {
  auto os_error = [&](const char* action) {
    return Error::io("cannot " + std::string(action) + " image file '" + path +
                     "': " + std::system_category().message(errno));
  };
  // O_NONBLOCK so that a FIFO cannot hang us before fstat says it is not a regular file;
  // O_NOCTTY so that a terminal device never becomes our controlling terminal.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      throw Error::not_found("image file '" + path + "' does not exist");
    }
    throw os_error("open");
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw os_error("inspect");
  if (!S_ISREG(st.st_mode)) {
    throw Error::io("image path '" + path + "' is not a regular file (" +
                    file_type_name(st.st_mode) + ")");
  }
  if (st.st_size > max_bytes) {
    throw Error::too_large("image file '" + path + "' is " + std::to_string(st.st_size) +
                           " bytes, over the limit of " + std::to_string(max_bytes) + " bytes");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t filled = 0;
  while (filled < bytes.size()) {
    const ssize_t got = ::read(fd, bytes.data() + filled, bytes.size() - filled);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw os_error("read");
    if (got == 0) break;  // shrank since fstat: decode what is there, it will say truncated
    filled += static_cast<size_t>(got);
  }
  bytes.resize(filled);
  return bytes;
}

DecodedImage decode_image(const uint8_t* data, size_t size, std::string_view name_for_errors,
                          const ImageLimits& limits, int32_t min_side_hint) {
  const std::string_view name = name_for_errors;
  check_decode_arguments(limits, min_side_hint);
  // cv::Mat counts bytes in an int.
  if (size > static_cast<uint64_t>(limits.max_bytes) || size > INT32_MAX) {
    throw Error::too_large(quoted(name) + " is " + std::to_string(size) +
                           " bytes, over the limit of " + std::to_string(limits.max_bytes) +
                           " bytes");
  }
  const ImageHeader header = parse_image_header(data, size, name);
  check_pixel_limits(header, limits, name);
  check_image_complete(header, data, size, name);
  configure_opencv_once();

  const char* format = image_format_name(header.info.format);
  const int32_t reduction = jpeg_reduction(header, min_side_hint);
  cv::Mat decoded;
  try {
    const cv::Mat encoded(1, static_cast<int>(size), CV_8UC1, const_cast<uint8_t*>(data));
    decoded = cv::imdecode(encoded, imread_flags(header, reduction));
  } catch (const cv::Exception& e) {
    throw Error::corrupt(quoted(name) + " is a corrupt " + format + " image: " + e.err);
  }
  if (decoded.empty()) {
    throw Error::corrupt(quoted(name) + " is a corrupt " + format +
                         " image: the decoder rejected its data");
  }

  cv::Mat rgb;
  try {
    rgb = to_rgb8(decoded, header.premultiplied_alpha, name);
    if (!header.orientation_applied_by_decoder) {
      rgb = apply_orientation(rgb, header.info.orientation);
    }
  } catch (const cv::Exception& e) {
    throw Error::internal("converting " + quoted(name) + " to RGB failed: " + e.err);
  }

  // The header's promise, checked: a decoder that read a different size than we bounded
  // means we misjudged the file. TIFF may differ by orientation alone (libtiff applies it).
  const int32_t stored_w = (header.stored_width + reduction - 1) / reduction;
  const int32_t stored_h = (header.stored_height + reduction - 1) / reduction;
  const bool swap = header.info.orientation >= 5;
  const int32_t want_w = swap ? stored_h : stored_w;
  const int32_t want_h = swap ? stored_w : stored_h;
  const bool as_expected = rgb.cols == want_w && rgb.rows == want_h;
  const bool tiff_unrotated =
      header.info.format == ImageFormat::kTiff && rgb.cols == stored_w && rgb.rows == stored_h;
  if (!as_expected && !tiff_unrotated) {
    throw Error::corrupt(quoted(name) + " decoded to " + std::to_string(rgb.cols) + "x" +
                         std::to_string(rgb.rows) + " pixels but its header says " +
                         std::to_string(want_w) + "x" + std::to_string(want_h));
  }

  DecodedImage image;
  image.width = rgb.cols;
  image.height = rgb.rows;
  image.source = header.info;
  if (!rgb.isContinuous()) rgb = rgb.clone();
  image.rgb.assign(rgb.data, rgb.data + rgb.total() * 3);
  return image;
}

DecodedImage load_image_file(const std::string& path, const ImageLimits& limits,
                             int32_t min_side_hint) {
  check_decode_arguments(limits, min_side_hint);
  const std::vector<uint8_t> bytes = read_image_file(path, limits.max_bytes);
  return decode_image(bytes.data(), bytes.size(), path, limits, min_side_hint);
}

std::vector<float> preprocess_image(const DecodedImage& image, int32_t size) {
  check_rgb_image(image, "preprocess_image");
  if (size <= 0 || size > ImageLimits{}.max_side) {
    throw Error::invalid_argument("preprocess_image: size must be in 1.." +
                                  std::to_string(ImageLimits{}.max_side) + ", got " +
                                  std::to_string(size));
  }
  configure_opencv_once();
  // Cropping the centre square first and resizing it equals resizing the shorter side to
  // `size` and cropping after, and resizes fewer pixels.
  const int32_t side = std::min(image.width, image.height);
  const cv::Rect square((image.width - side) / 2, (image.height - side) / 2, side, side);
  cv::Mat resized;
  try {
    const cv::Mat crop = rgb_view(image)(square);
    if (side == size) {
      resized = crop;
    } else {
      cv::resize(crop, resized, cv::Size(size, size), 0, 0,
                 side > size ? cv::INTER_AREA : cv::INTER_LINEAR);
    }
  } catch (const cv::Exception& e) {
    throw Error::internal("preprocess_image: resizing failed: " + e.err);
  }
  const size_t plane = static_cast<size_t>(size) * static_cast<size_t>(size);
  std::vector<float> chw(3 * plane);
  for (int32_t y = 0; y < size; ++y) {
    const uint8_t* row = resized.ptr<uint8_t>(y);
    for (int32_t x = 0; x < size; ++x) {
      for (size_t c = 0; c < 3; ++c) {
        chw[c * plane + static_cast<size_t>(y) * size + x] = row[x * 3 + c] / 255.0f;
      }
    }
  }
  return chw;
}

std::vector<uint8_t> encode_jpeg_thumbnail(const DecodedImage& image, int32_t max_side,
                                           int32_t quality) {
  check_rgb_image(image, "encode_jpeg_thumbnail");
  if (max_side <= 0 || max_side > ImageLimits{}.max_side) {
    throw Error::invalid_argument("encode_jpeg_thumbnail: max_side must be in 1.." +
                                  std::to_string(ImageLimits{}.max_side) + ", got " +
                                  std::to_string(max_side));
  }
  if (quality < 1 || quality > 100) {
    throw Error::invalid_argument("encode_jpeg_thumbnail: quality must be in 1..100, got " +
                                  std::to_string(quality));
  }
  configure_opencv_once();
  std::vector<uint8_t> jpeg;
  try {
    cv::Mat scaled = rgb_view(image);
    const int32_t longer = std::max(image.width, image.height);
    if (longer > max_side) {
      const double scale = static_cast<double>(max_side) / longer;
      const cv::Size target(std::max(1, static_cast<int>(std::lround(image.width * scale))),
                            std::max(1, static_cast<int>(std::lround(image.height * scale))));
      cv::resize(scaled, scaled, target, 0, 0, cv::INTER_AREA);
    }
    cv::Mat bgr;
    cv::cvtColor(scaled, bgr, cv::COLOR_RGB2BGR);
    if (!cv::imencode(".jpg", bgr, jpeg, {cv::IMWRITE_JPEG_QUALITY, quality})) {
      throw Error::internal("encode_jpeg_thumbnail: OpenCV could not encode a JPEG");
    }
  } catch (const cv::Exception& e) {
    throw Error::internal("encode_jpeg_thumbnail: " + e.err);
  }
  return jpeg;
}

}  // namespace mms
