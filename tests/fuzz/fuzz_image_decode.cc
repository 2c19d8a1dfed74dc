// Fuzzes decode_image (encoders/image_io.h): header checks, then OpenCV's decoders on any
// bytes, under the limits the HTTP service applies to uploads (ServeLimits::upload_image),
// the strictest a stranger's bytes meet. Findings: a crash or sanitizer report (ours or
// OpenCV's), a non-Error exception (a cv::Exception that escaped translation), or a result
// that breaks decode_image's promises (RGB of width * height * 3 bytes, within the limits).
#include "encoders/image_io.h"
#include "service/http_server.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  const ImageLimits limits = ServeLimits{}.upload_image;
  // The service decodes at the model's input size (64), which takes JPEG's reduced-size
  // path; an input of odd length decodes at full size, so both paths are fuzzed.
  const int32_t hint = size % 2 ? 0 : 64;
  fuzz::parses([&] {
    const DecodedImage image = decode_image(data, size, "fuzz", limits, hint);
    check(image.width > 0 && image.height > 0, "decoded to a non-positive size");
    check(image.rgb.size() == size_t(image.width) * size_t(image.height) * 3,
          "decoded RGB is not width * height * 3 bytes");
    check(int64_t{image.source.width} * image.source.height <= limits.max_pixels,
          "decoded an image over max_pixels");
    check(image.source.width <= limits.max_side && image.source.height <= limits.max_side,
          "decoded an image over max_side");
  });
  return 0;
}
