// Fuzzes the image header parsers (encoders/image_probe.h): sniff_image_format, probe_image,
// parse_image_header and check_image_complete on any bytes. Findings: a crash or sanitizer
// report (the parsers promise never to read outside data[0, size)), a non-Error exception,
// or a header that parses into a non-positive size or an orientation outside 1..8.
#include "encoders/image_io.h"
#include "encoders/image_probe.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  const ImageFormat sniffed = sniff_image_format(data, size);
  check(looks_like_image(data, size) == (sniffed != ImageFormat::kUnknown),
        "looks_like_image disagrees with sniff_image_format");
  fuzz::parses([&] {
    const ImageHeader header = parse_image_header(data, size, "fuzz");
    const ImageInfo& info = header.info;
    check(info.width > 0 && info.height > 0, "a parsed header has a non-positive size");
    check(header.stored_width > 0 && header.stored_height > 0, "non-positive stored size");
    check(info.orientation >= 1 && info.orientation <= 8, "orientation outside 1..8");
    check(info.format == sniffed, "the header's format differs from the sniffed one");
    check_image_complete(header, data, size, "fuzz");
  });
  fuzz::parses([&] { probe_image(data, size, "fuzz"); });
  return 0;
}
