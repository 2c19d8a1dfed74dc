// Shared by the tests/encoders_image_*_test.cc files: paths to and bytes of the committed
// fixtures in tests/fixtures/images/ (made by make_fixtures.py there), and a way to assert
// that a call throws mms::Error of a given kind.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/error.h"
#include "encoders/image_io.h"

namespace mms::testing {

inline std::string fixture_path(const std::string& name) {
  return std::string(MMS_SOURCE_DIR) + "/tests/fixtures/images/" + name;
}

inline std::vector<uint8_t> fixture_bytes(const std::string& name) {
  std::ifstream in(fixture_path(name), std::ios::binary);
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs `call`, expects an mms::Error of `kind`, and returns its message (empty otherwise).
template <typename Call>
std::string error_message(Call&& call, ErrorKind kind) {
  try {
    call();
  } catch (const Error& e) {
    EXPECT_EQ(error_kind_name(e.kind()), std::string(error_kind_name(kind))) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an mms::Error of kind " << error_kind_name(kind);
  return "";
}

// The RGB triple at (x, y).
inline std::array<int, 3> pixel_at(const DecodedImage& image, int x, int y) {
  const size_t at = (static_cast<size_t>(y) * image.width + x) * 3;
  return {image.rgb[at], image.rgb[at + 1], image.rgb[at + 2]};
}

// True when every channel of `got` is within `tolerance` of `want`.
inline bool near(const std::array<int, 3>& got, const std::array<int, 3>& want, int tolerance) {
  for (size_t c = 0; c < 3; ++c) {
    if (got[c] < want[c] - tolerance || got[c] > want[c] + tolerance) return false;
  }
  return true;
}

}  // namespace mms::testing
