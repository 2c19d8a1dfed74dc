// Internal to encoders/: the header parsing behind probe_image, with the extra facts that
// decode_image needs to drive OpenCV. Every parser reads only inside data[0, size) and
// throws mms::Error (never reads out of bounds, never asserts) on any input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "encoders/image_io.h"

namespace mms {

struct ImageHeader {
  ImageInfo info;            // what probe_image reports (displayed size)
  int32_t stored_width = 0;  // size of the pixel data before orientation
  int32_t stored_height = 0;
  // The decoder leaves EXIF orientation to us (JPEG, PNG with IGNORE_ORIENTATION); libtiff
  // applies TIFF's own orientation tag itself.
  bool orientation_applied_by_decoder = false;
  // OpenCV hands TIFF alpha over premultiplied when libtiff's RGBA path decodes it (8-bit)
  // or when the file says so (ExtraSamples = associated alpha).
  bool premultiplied_alpha = false;
};

// Parses the header; throws Error::unsupported / Error::corrupt naming `name`.
ImageHeader parse_image_header(const uint8_t* data, size_t size, std::string_view name);

// Throws Error::corrupt when the data is cut short in a way the decoder would not notice.
// Only JPEG needs it: libjpeg fills missing scan data with grey and merely warns, while
// OpenCV's PNG, WebP, BMP, TIFF and PNM decoders fail on truncated input by themselves.
void check_image_complete(const ImageHeader& header, const uint8_t* data, size_t size,
                          std::string_view name);

}  // namespace mms
