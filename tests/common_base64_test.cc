// base64_decode as the HTTP service uses it for images sent inside JSON, and base64_encode as
// `mmsearch search --server` sends them.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "common/base64.h"
#include "common/error.h"

namespace mms {
namespace {

TEST(Base64, DecodesTheRfc4648Vectors) {
  const std::pair<const char*, const char*> cases[] = {{"", ""},
                                                       {"Zg==", "f"},
                                                       {"Zm8=", "fo"},
                                                       {"Zm9v", "foo"},
                                                       {"Zm9vYg==", "foob"},
                                                       {"Zm9vYmE=", "fooba"},
                                                       {"Zm9vYmFy", "foobar"}};
  for (const auto& [encoded, plain] : cases) EXPECT_EQ(base64_decode(encoded, "x"), plain);
}

TEST(Base64, SkipsLineBreaksAndAcceptsMissingPadding) {
  EXPECT_EQ(base64_decode("Zm9v\r\nYmFy", "x"), "foobar");
  EXPECT_EQ(base64_decode("Zm9vYg", "x"), "foob");
  const std::string bytes = base64_decode("/+8A", "x");
  EXPECT_EQ(bytes, std::string("\xff\xef\x00", 3));
}

TEST(Base64, RefusesWhatIsNotBase64NamingTheField) {
  for (const char* bad : {"Zm9v!", "Zm9vY", "Zg==Zg==", "Zm-_"}) {
    try {
      base64_decode(bad, "terms[0].image_base64");
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("terms[0].image_base64"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace mms

TEST(Base64, EncodesTheRfc4648VectorsAndRoundTripsAnyBytes) {
  const std::vector<std::pair<std::string, std::string>> vectors = {{"", ""},
                                                                    {"f", "Zg=="},
                                                                    {"fo", "Zm8="},
                                                                    {"foo", "Zm9v"},
                                                                    {"foob", "Zm9vYg=="},
                                                                    {"fooba", "Zm9vYmE="},
                                                                    {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) EXPECT_EQ(mms::base64_encode(plain), encoded);
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  EXPECT_EQ(mms::base64_decode(mms::base64_encode(all), "bytes"), all);
}
