// base64_decode as the HTTP service uses it for images sent inside JSON.
#include <gtest/gtest.h>

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
