// Image loading, bounded: recognizes an image by its content (magic bytes), reads its size
// from the header alone, refuses it before decoding when it is over ImageLimits, then decodes
// with OpenCV to 8-bit RGB (orientation applied, alpha composited on white). Also the
// preprocessing the image encoder consumes and the JPEG thumbnails the HTTP service serves.
// Every function is free and safe to call concurrently from any number of threads; OpenCV's
// own worker threads are switched off on first use (callers parallelize across images).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mms {

// The one place the image limits live. A limit is checked against what the file's header
// claims, before any pixel is decoded, so a few-KB file claiming 30000x30000 costs nothing.
struct ImageLimits {
  // Encoded size in bytes: files are refused by their size before being read, in-memory
  // buffers (HTTP uploads) before anything else. 64 MiB holds any camera JPEG.
  int64_t max_bytes = int64_t{64} << 20;
  // Longest side in pixels, as stored (before orientation and reduced decoding).
  int32_t max_side = 16384;
  // width * height, as stored. 64 MP admits 48-50 MP camera photos; decoding one needs at
  // most max_pixels * 8 bytes (16-bit RGBA) transiently, plus 3 bytes a pixel for the result.
  // OpenCV's own ceiling (2^30 pixels) is higher, so this is the bound that matters.
  int64_t max_pixels = 64'000'000;
};

// Formats OpenCV 4.6 as packaged by Debian decodes and this module can probe. Others that
// build also reads (JPEG 2000, OpenEXR, Radiance HDR, PFM, Sun raster, GDAL) are refused:
// rare in photo collections and a large attack surface.
enum class ImageFormat { kUnknown, kJpeg, kPng, kWebp, kBmp, kTiff, kPnm };

// "JPEG", "PNG", "WebP", "BMP", "TIFF", "PNM" or "unknown".
const char* image_format_name(ImageFormat format);

// What an image's header says, read without decoding.
struct ImageInfo {
  ImageFormat format = ImageFormat::kUnknown;
  // Size as displayed: stored size with the EXIF orientation applied (so equal to what
  // decode_image returns without a reduction).
  int32_t width = 0;
  int32_t height = 0;
  // EXIF orientation 1..8 (1 = as stored; 5..8 swap width and height). Read from JPEG APP1
  // Exif, PNG eXIf (before IDAT) and the TIFF IFD0; WebP's EXIF is not applied, as neither
  // libwebp nor OpenCV applies it.
  int32_t orientation = 1;
};

// How many leading bytes sniff_image_format and looks_like_image need to decide (fewer when
// the whole file is shorter).
inline constexpr size_t kImageSniffBytes = 32;

// The format whose magic bytes start `data` (size bytes, any length), or kUnknown. Content
// only: the file name plays no part. Cheap enough for a directory walk.
ImageFormat sniff_image_format(const uint8_t* data, size_t size);

// True when the first bytes of a file are a supported image's magic (see kImageSniffBytes).
bool looks_like_image(const uint8_t* data, size_t size);

// Parses the header of the encoded image in data[0, size). name_for_errors names the file or
// upload in error messages. Throws Error::unsupported for bytes that are not a supported
// image (naming the format when recognized, e.g. GIF), Error::corrupt for a header that is
// cut short or malformed, Error::too_large for a side beyond int32.
ImageInfo probe_image(const uint8_t* data, size_t size, std::string_view name_for_errors);

// An image decoded to 8-bit RGB.
struct DecodedImage {
  int32_t width = 0;
  int32_t height = 0;
  std::vector<uint8_t> rgb;  // row-major, interleaved R,G,B; width * height * 3 bytes
  ImageInfo source;          // the encoded image's header (full-size dimensions)
};

// Decodes the encoded image in data[0, size): grayscale becomes RGB, 16-bit and float
// samples become 8-bit, alpha is composited on white, palettes are expanded and the EXIF
// orientation is applied. When min_side_hint > 0 and the image is a JPEG, it is decoded at
// 1/2, 1/4 or 1/8 scale, the largest reduction that keeps the shorter side >= the hint (the
// result is then smaller than source). Throws Error with a message naming name_for_errors:
//   corrupt      empty, truncated or undecodable data (a JPEG without its end marker too)
//   unsupported  not a supported image format
//   too_large    over a limit in `limits`; refused from the header, nothing decoded
//   invalid_argument  a limit <= 0 or min_side_hint < 0
DecodedImage decode_image(const uint8_t* data, size_t size, std::string_view name_for_errors,
                          const ImageLimits& limits, int32_t min_side_hint = 0);

// The bytes of the image file at `path`, read safely from a folder that may hold anything:
// opened without blocking (a FIFO never hangs the caller), refused unless the opened file is
// regular (a device, FIFO or socket), refused by its size before reading when over
// `max_bytes`, and read up to the size it had when opened, so a file that keeps growing
// costs at most `max_bytes`. Throws Error::not_found when it does not exist, Error::io when it
// cannot be read or is not a regular file, Error::too_large over `max_bytes`.
std::vector<uint8_t> read_image_file(const std::string& path, int64_t max_bytes);

// Reads the file at `path` with read_image_file (limits.max_bytes) and decodes it as
// decode_image does, naming `path` in errors. Throws Error::not_found when
// it does not exist, Error::io when it cannot be read or is not a regular file.
DecodedImage load_image_file(const std::string& path, const ImageLimits& limits,
                             int32_t min_side_hint = 0);

// The image encoder's input: the shorter side resized to `size` (area averaging when
// shrinking, bilinear when growing), then the centre size x size square. Returns float32
// [3, size, size] (CHW, channels R, G, B), values 0..1; mean/std normalization is the
// model's. Throws Error::invalid_argument when size is not in 1..ImageLimits{}.max_side or
// the image's rgb buffer does not hold width * height * 3 bytes.
std::vector<float> preprocess_image(const DecodedImage& image, int32_t size);

// A baseline JPEG of the image scaled down (never up) so that its longer side is at most
// max_side, at JPEG quality 1..100. Throws Error::invalid_argument for out-of-range
// arguments or an inconsistent image.
std::vector<uint8_t> encode_jpeg_thumbnail(const DecodedImage& image, int32_t max_side,
                                           int32_t quality);

}  // namespace mms
