// Fuzzes image uploads (service/http_request.h): a body with its Content-Type, read by
// uploaded_image (a multipart/form-data field "image", or a raw body of type image/*) and
// parse_multipart, then probed as the upload is before decoding. Input: the Content-Type
// line, then the body. Findings: a crash, a sanitizer report, a non-Error exception, a part
// or an upload whose bytes do not lie inside the body (they must point into it, never
// copy), or more parts than max_parts.
#include <string>
#include <utility>
#include <vector>

#include "encoders/image_io.h"
#include "service/http_request.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

bool inside(std::string_view part, std::string_view body) {
  return part.empty() ||
         (part.data() >= body.data() && part.data() + part.size() <= body.data() + body.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  const std::pair<std::string_view, std::string_view> input =
      fuzz::first_line(fuzz::as_text(data, size));
  const std::string_view content_type = input.first;
  HttpRequest req;
  req.headers = {{"content-type", std::string(content_type)}};
  req.body = std::string(input.second);
  fuzz::parses([&] {
    const std::vector<MultipartPart> parts = parse_multipart(content_type, req.body, 4);
    check(parts.size() <= 4, "more parts than max_parts");
    for (const MultipartPart& p : parts) check(inside(p.data, req.body), "a part outside the body");
  });
  fuzz::parses([&] {
    const std::string_view image = uploaded_image(req);
    check(inside(image, req.body), "the uploaded image lies outside the body");
    probe_image(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "the upload");
  });
  return 0;
}
