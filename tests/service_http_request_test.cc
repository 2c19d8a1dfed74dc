// The request parsing of the HTTP service (service/http_request.h), called as the server calls
// it, without a server: query strings and targets, JSON bodies (their byte and depth bounds),
// string fields, multipart/form-data and raw image uploads, the search options every search
// route takes, decimal parameters, the Host check and the query-term bound. Each refusal is
// checked for its Error kind (which picks the HTTP status) and for a message naming the problem.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "common/error.h"
#include "error_testing.h"
#include "service/http_request.h"

namespace mms {
namespace {

using mms::testing::error_of;
using mms::testing::kind_of;
using nlohmann::json;

// Whether an error message names what it should; a failure prints the whole message.
::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

// --- Query strings and targets --------------------------------------------------------------

TEST(ParseQueryString, DecodesEscapesPlusAndEmptyValuesInOrder) {
  const Fields f = parse_query_string("a=1&b=x%20y&c&q=red+circle&plus=%2B&slash=%2f%2F&e=");
  const Fields want = {{"a", "1"},    {"b", "x y"},    {"c", ""}, {"q", "red circle"},
                       {"plus", "+"}, {"slash", "//"}, {"e", ""}};
  EXPECT_EQ(f, want);
}

TEST(ParseQueryString, DecodesNamesAndKeepsRepeatsAndSkipsEmptyPairs) {
  const Fields f = parse_query_string("&&x%3Dy=1&k=1&k=2&");
  const Fields want = {{"x=y", "1"}, {"k", "1"}, {"k", "2"}};
  EXPECT_EQ(f, want);
  EXPECT_TRUE(parse_query_string("").empty());
  // Only the first '=' separates: the rest is the value.
  EXPECT_EQ(parse_query_string("a=b=c"), (Fields{{"a", "b=c"}}));
  // Any byte may be escaped, NUL included.
  EXPECT_EQ(parse_query_string("z=%00").at(0).second, std::string(1, '\0'));
}

TEST(ParseQueryString, RefusesMalformedEscapes) {
  for (const char* bad : {"a=%", "a=%4", "a=%ZZ", "a=%4g", "%=1", "a=1&b=%%41", "a=%-1"}) {
    SCOPED_TRACE(bad);
    const auto [kind, message] = error_of([&] { parse_query_string(bad); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
    EXPECT_TRUE(contains(message, "%-escape"));
  }
}

TEST(SplitTarget, SeparatesThePathFromTheParsedQuery) {
  std::string path;
  Fields params = {{"stale", "value"}};
  split_target("/v1/items/3/image?size=64&x=a%20b", path, params);
  EXPECT_EQ(path, "/v1/items/3/image");
  EXPECT_EQ(params, (Fields{{"size", "64"}, {"x", "a b"}}));

  split_target("/healthz", path, params);  // no query: the old parameters are gone
  EXPECT_EQ(path, "/healthz");
  EXPECT_TRUE(params.empty());

  split_target("/x?", path, params);
  EXPECT_EQ(path, "/x");
  EXPECT_TRUE(params.empty());

  // The path is not percent-decoded (routes are ASCII; an escaped path matches no route).
  split_target("/v1/search%2Ftext?a=1?b", path, params);
  EXPECT_EQ(path, "/v1/search%2Ftext");
  EXPECT_EQ(params, (Fields{{"a", "1?b"}}));

  EXPECT_EQ(kind_of([&] { split_target("/x?size=%zz", path, params); }),
            ErrorKind::kInvalidArgument);
}

TEST(HttpRequest, HeaderAndParamFindTheFirstOfAName) {
  HttpRequest r;
  r.headers = {{"content-type", "image/png"}, {"x-a", "1"}, {"x-a", "2"}};
  r.params = {{"k", "5"}, {"k", "6"}};
  EXPECT_EQ(r.header("content-type"), "image/png");
  EXPECT_EQ(r.header("x-a"), "1");
  EXPECT_EQ(r.header("absent"), "");
  ASSERT_NE(r.param("k"), nullptr);
  EXPECT_EQ(*r.param("k"), "5");
  EXPECT_EQ(r.param("target"), nullptr);
}

// --- JSON bodies ----------------------------------------------------------------------------

// A JSON object whose deepest value sits `levels` containers deep, the object counted:
// levels = 3 gives {"a":[[]]}.
std::string nested_object(int levels) {
  return "{\"a\":" + std::string(levels - 1, '[') + std::string(levels - 1, ']') + "}";
}

TEST(ParseJsonObject, ParsesAnObject) {
  const json j = parse_json_object(R"({"query": "a red circle", "k": 3, "dedup": true})");
  EXPECT_EQ(j["query"], "a red circle");
  EXPECT_EQ(j["k"], 3);
  EXPECT_EQ(j["dedup"], true);
  EXPECT_TRUE(parse_json_object("  {}  ").empty());
}

TEST(ParseJsonObject, RefusesOtherJsonValues) {
  for (const char* body : {"[1, 2]", "\"text\"", "3", "null", "true"}) {
    SCOPED_TRACE(body);
    const auto [kind, message] = error_of([&] { parse_json_object(body); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
    EXPECT_TRUE(contains(message, "JSON object"));
  }
}

TEST(ParseJsonObject, RefusesInvalidJson) {
  for (const char* body :
       {"", "{\"query\": ", "{'a': 1}", "{\"a\": 1} trailing", "{\"a\" 1}", "\xff\xfe{}"}) {
    SCOPED_TRACE(body);
    const auto [kind, message] = error_of([&] { parse_json_object(body); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
    EXPECT_TRUE(contains(message, "not valid JSON"));
  }
}

TEST(ParseJsonObject, NestingAtTheDepthLimitIsAcceptedOneDeeperIsRefused) {
  const JsonLimits limits;  // the defaults the service uses
  EXPECT_NO_THROW(parse_json_object(nested_object(limits.max_depth), limits));
  const auto [kind, message] =
      error_of([&] { parse_json_object(nested_object(limits.max_depth + 1), limits); });
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(message, "deeper than " + std::to_string(limits.max_depth)));

  const JsonLimits shallow{4, 1 << 20};
  EXPECT_NO_THROW(parse_json_object(nested_object(4), shallow));
  EXPECT_NO_THROW(parse_json_object(R"({"a": [1, {"b": [2]}], "c": {"d": {}}})", shallow));
  EXPECT_EQ(kind_of([&] { parse_json_object(nested_object(5), shallow); }),
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(kind_of([&] { parse_json_object(R"({"a": {"b": {"c": {"d": {}}}}})", shallow); }),
            ErrorKind::kInvalidArgument);
}

// 8 MiB of '[' is refused as too deep when the parser reaches the limit, not after reading
// (or recursing through) the whole body. The time bound is generous; the point is that the
// answer is the depth error and not a parse error at the end or a stack overflow.
TEST(ParseJsonObject, EightMebibytesOfBracketsAreRefusedAsTooDeepAtOnce) {
  const std::string body(8 << 20, '[');
  const JsonLimits limits{32, int64_t{16} << 20};
  const auto t0 = std::chrono::steady_clock::now();
  const auto [kind, message] = error_of([&] { parse_json_object(body, limits); });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(message, "deeper than 32 levels"));
  EXPECT_LT(seconds, 1.0);
  // Also inside an object, as a hostile client would wrap it.
  EXPECT_TRUE(contains(error_of([&] { parse_json_object("{\"query\": " + body, limits); }).second,
                       "deeper than 32"));
}

TEST(ParseJsonObject, ABodyOverMaxBytesIsTooLarge) {
  const std::string body = R"({"query": ")" + std::string(100, 'x') + "\"}";
  const int64_t size = static_cast<int64_t>(body.size());
  EXPECT_NO_THROW(parse_json_object(body, {32, size}));
  const auto [kind, message] = error_of([&] { parse_json_object(body, {32, size - 1}); });
  EXPECT_EQ(kind, ErrorKind::kTooLarge);
  EXPECT_TRUE(contains(message, std::to_string(size) + " bytes"));
  EXPECT_TRUE(contains(message, "limit is " + std::to_string(size - 1)));
  // The size is checked before parsing: a too-large body that is also too deep is too large.
  EXPECT_EQ(kind_of([&] {
              parse_json_object(std::string(4096, '['), {32, 1024});
            }),
            ErrorKind::kTooLarge);
}

TEST(StringField, ReturnsAPresentNonBlankString) {
  const json j = {{"query", "a red circle"}, {"k", 3}, {"blank", " \t\r\n"}, {"empty", ""}};
  EXPECT_EQ(string_field(j, "query", 100), "a red circle");
  EXPECT_EQ(string_field(j, "query", 12), "a red circle");  // exactly at the limit

  auto [kind, message] = error_of([&] { string_field(j, "text", 100); });
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(message, "missing field \"text\""));

  std::tie(kind, message) = error_of([&] { string_field(j, "k", 100); });
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(message, "\"k\" must be a string"));

  for (const char* name : {"blank", "empty"}) {
    std::tie(kind, message) = error_of([&] { string_field(j, name, 100); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
    EXPECT_TRUE(contains(message, "is empty"));
  }

  std::tie(kind, message) = error_of([&] { string_field(j, "query", 11); });
  EXPECT_EQ(kind, ErrorKind::kTooLarge);
  EXPECT_TRUE(contains(message, "\"query\" is 12 bytes; the limit is 11"));
}

// --- multipart/form-data --------------------------------------------------------------------

constexpr char kType[] = "multipart/form-data; boundary=XyZ";

// One part as a browser sends it, starting with its delimiter line.
std::string part(const std::string& name, const std::string& data,
                 const std::string& extra_headers = "") {
  return "--XyZ\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n" + extra_headers +
         "\r\n" + data + "\r\n";
}
const std::string kClose = "--XyZ--\r\n";

TEST(ParseMultipart, ParsesOnePartWithItsHeaders) {
  const std::string body =
      "--XyZ\r\n"
      "Content-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
      "Content-Type: image/jpeg\r\n"
      "\r\n"
      "JPEG BYTES\r\n"
      "--XyZ--\r\n";
  const std::vector<MultipartPart> parts = parse_multipart(kType, body);
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0].name, "image");
  EXPECT_EQ(parts[0].filename, "a.jpg");
  EXPECT_EQ(parts[0].content_type, "image/jpeg");
  EXPECT_EQ(parts[0].data, "JPEG BYTES");
  // The data points into the body (no copy of an upload).
  EXPECT_GE(parts[0].data.data(), body.data());
  EXPECT_LE(parts[0].data.data() + parts[0].data.size(), body.data() + body.size());
}

TEST(ParseMultipart, ParsesSeveralPartsWithBinaryDataAndCaseInsensitiveHeaders) {
  const std::string binary("a\r\nb\0c\r\n--Xy", 13);  // CRLFs, a NUL, a near-delimiter
  const std::string body = part("first", "one") + part("image", binary) +
                           "--XyZ\r\ncontent-disposition: form-data; NAME=third\r\n"
                           "CONTENT-TYPE: text/plain\r\n\r\n\r\n" +
                           kClose;
  const std::vector<MultipartPart> parts =
      parse_multipart("Multipart/Form-Data; charset=utf-8; Boundary=\"XyZ\"", body);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].name, "first");
  EXPECT_EQ(parts[0].data, "one");
  EXPECT_EQ(parts[1].name, "image");
  EXPECT_EQ(parts[1].data, binary);
  EXPECT_EQ(parts[1].content_type, "");
  EXPECT_EQ(parts[2].name, "third");
  EXPECT_EQ(parts[2].content_type, "text/plain");
  EXPECT_EQ(parts[2].data, "");
}

TEST(ParseMultipart, SkipsAPreamble) {
  const std::string body =
      "This is a preamble a client may send.\r\n" + part("image", "X") + kClose;
  const std::vector<MultipartPart> parts = parse_multipart(kType, body);
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0].data, "X");
}

TEST(ParseMultipart, RefusesAMissingOrUnusableBoundary) {
  const std::string body = part("image", "X") + kClose;
  for (const std::string& type : std::vector<std::string>{
           "multipart/form-data",
           "multipart/form-data; boundary=", "multipart/form-data; boundary=\"",
           "multipart/form-data; boundary=" + std::string(201, 'b')}) {
    SCOPED_TRACE(type);
    const auto [kind, message] = error_of([&] { parse_multipart(type, body); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
    EXPECT_TRUE(contains(message, "boundary"));
  }
  // A body that never shows the boundary.
  const auto [kind, message] =
      error_of([&] { parse_multipart("multipart/form-data; boundary=Other", body); });
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(message, "no boundary line"));
}

TEST(ParseMultipart, RefusesAMissingClosingBoundary) {
  for (const std::string body :
       {"--XyZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nDATA",
        "--XyZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nDATA\r\n--Xy"}) {
    const auto [kind, message] = error_of([&] { parse_multipart(kType, body); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
    EXPECT_TRUE(contains(message, "closing boundary is missing"));
  }
  // A delimiter followed by neither "--" nor CRLF.
  EXPECT_TRUE(
      contains(error_of([&] { parse_multipart(kType, part("image", "X") + "--XyZ"); }).second,
               "does not end in CRLF"));
  // A part whose header block never ends.
  EXPECT_TRUE(contains(error_of([&] {
                         parse_multipart(kType,
                                         "--XyZ\r\nContent-Disposition: form-data; name=a\r\n");
                       }).second,
                       "header is missing"));
}

TEST(ParseMultipart, RefusesAPartHeaderOver8KiB) {
  const std::string big = "X-Pad: " + std::string(8 << 10, 'p') + "\r\n";
  const auto [kind, message] =
      error_of([&] { parse_multipart(kType, part("image", "X", big) + kClose); });
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(message, "over 8 KiB"));
  // A header line without a colon is malformed too.
  EXPECT_TRUE(contains(error_of([&] {
                         parse_multipart(kType, part("image", "X", "no colon here\r\n") + kClose);
                       }).second,
                       "no ':'"));
}

TEST(ParseMultipart, RefusesMoreThanMaxParts) {
  std::string sixteen;
  for (int i = 0; i < 16; ++i) sixteen += part("p" + std::to_string(i), "x");
  EXPECT_EQ(parse_multipart(kType, sixteen + kClose).size(), 16u);  // the default bound
  const auto [kind, message] =
      error_of([&] { parse_multipart(kType, sixteen + part("p16", "x") + kClose); });
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(message, "at most 16 parts"));

  const std::string three = part("a", "1") + part("b", "2") + part("c", "3") + kClose;
  EXPECT_EQ(parse_multipart(kType, three, 3).size(), 3u);
  EXPECT_TRUE(
      contains(error_of([&] { parse_multipart(kType, three, 2); }).second, "at most 2 parts"));
}

// Long part headers are scanned once each: ten parts with an 8 KB header line each, before a
// large last part, are all parsed; ten such lines in one part are over the part-header bound.
// (A parser that rescans headers would still pass; this checks the answers at that scale.)
TEST(ParseMultipart, TenLongPartHeaderLinesAreHandled) {
  const std::string line = "X-Pad: " + std::string(8000, 'p') + "\r\n";
  std::string body;
  for (int i = 0; i < 9; ++i) body += part("p" + std::to_string(i), std::to_string(i), line);
  const std::string large(4 << 20, 'd');
  body += part("image", large, line) + kClose;
  const std::vector<MultipartPart> parts = parse_multipart(kType, body);
  ASSERT_EQ(parts.size(), 10u);
  for (int i = 0; i < 9; ++i) {
    EXPECT_EQ(parts[i].name, "p" + std::to_string(i));
    EXPECT_EQ(parts[i].data, std::to_string(i));
  }
  EXPECT_EQ(parts[9].name, "image");
  EXPECT_EQ(parts[9].data.size(), large.size());

  std::string ten_lines;
  for (int i = 0; i < 10; ++i) ten_lines += line;
  EXPECT_TRUE(contains(
      error_of([&] { parse_multipart(kType, part("image", large, ten_lines) + kClose); }).second,
      "over 8 KiB"));
}

// --- Uploaded images ------------------------------------------------------------------------

HttpRequest upload(const std::string& content_type, std::string body) {
  HttpRequest r;
  r.method = "POST";
  r.path = "/v1/search/image";
  if (!content_type.empty()) r.headers = {{"content-type", content_type}};
  r.body = std::move(body);
  return r;
}

TEST(UploadedImage, TakesTheMultipartFieldImage) {
  const HttpRequest r =
      upload(kType, part("other", "no") +
                        part("image", "PNG BYTES", "Content-Type: image/png\r\n") + kClose);
  EXPECT_EQ(uploaded_image(r), "PNG BYTES");
  // An undeclared type, or application/octet-stream, is left to the decoder to probe.
  EXPECT_EQ(uploaded_image(upload(kType, part("image", "B") + kClose)), "B");
  EXPECT_EQ(uploaded_image(upload(
                kType, part("image", "B", "Content-Type: application/octet-stream\r\n") + kClose)),
            "B");
}

TEST(UploadedImage, TakesARawImageBody) {
  EXPECT_EQ(uploaded_image(upload("image/jpeg", "JPEG")), "JPEG");
  EXPECT_EQ(uploaded_image(upload("Image/PNG", "PNG")), "PNG");
}

TEST(UploadedImage, RefusesOtherContentTypesAsUnsupported) {
  auto [kind, message] = error_of([&] { uploaded_image(upload("text/plain", "plain words")); });
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  EXPECT_TRUE(contains(message, "'text/plain'"));

  std::tie(kind, message) = error_of([&] { uploaded_image(upload("", "bytes")); });
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  EXPECT_TRUE(contains(message, "Content-Type ''"));

  // A multipart field 'image' that says it is text.
  std::tie(kind, message) = error_of([&] {
    uploaded_image(upload(kType, part("image", "words", "Content-Type: text/plain\r\n") + kClose));
  });
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  EXPECT_TRUE(contains(message, "'text/plain'"));
}

TEST(UploadedImage, RefusesAMultipartBodyWithoutAnImageField) {
  const auto [kind, message] =
      error_of([&] { uploaded_image(upload(kType, part("picture", "X") + kClose)); });
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(message, "no field named 'image'"));
  // A malformed multipart body is invalid too.
  EXPECT_EQ(kind_of([&] { uploaded_image(upload(kType, "garbage")); }),
            ErrorKind::kInvalidArgument);
}

// --- Search options -------------------------------------------------------------------------

TEST(SearchRequestFromJson, DefaultsAndEveryOption) {
  const SearchRequest d = search_request(json::object(), 1000);
  EXPECT_EQ(d.k, 10);
  EXPECT_EQ(d.target, SearchTarget::kImages);
  EXPECT_FALSE(d.filters.min_score.has_value());
  EXPECT_EQ(d.filters.path_prefix, "");
  EXPECT_FALSE(d.filters.dedup);

  const SearchRequest r = search_request(json{{"k", 7},
                                              {"min_score", 0.25},
                                              {"path_prefix", "/photos"},
                                              {"dedup", true},
                                              {"dedup_threshold", 0.9}},
                                         1000);
  EXPECT_EQ(r.k, 7);
  ASSERT_TRUE(r.filters.min_score.has_value());
  EXPECT_FLOAT_EQ(*r.filters.min_score, 0.25f);
  EXPECT_EQ(r.filters.path_prefix, "/photos");
  EXPECT_TRUE(r.filters.dedup);
  EXPECT_FLOAT_EQ(r.filters.dedup_threshold, 0.9f);

  EXPECT_EQ(search_request(json{{"target", "texts"}}, 1000).target, SearchTarget::kTexts);
  EXPECT_FALSE(search_request(json{{"min_score", nullptr}}, 1000).filters.min_score.has_value());
  EXPECT_FLOAT_EQ(*search_request(json{{"min_score", -1}}, 1000).filters.min_score, -1.f);
  EXPECT_EQ(kind_of([] { search_request(json{{"min_score", 1e300}}, 1000); }),
            ErrorKind::kInvalidArgument);
}

TEST(SearchRequestFromJson, KMustBeAnIntegerWithinOneToMaxK) {
  EXPECT_EQ(search_request(json{{"k", 1}}, 50).k, 1);
  EXPECT_EQ(search_request(json{{"k", 50}}, 50).k, 50);
  for (const json& k : {json(0), json(51), json(-5), json(uint64_t{1} << 63), json(1e12)}) {
    SCOPED_TRACE(k.dump());
    const auto [kind, message] = error_of([&] { search_request(json{{"k", k}}, 50); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  }
  EXPECT_TRUE(contains(error_of([&] {
                         search_request(json{{"k", 51}}, 50);
                       }).second,
                       "k = 51 is outside 1..50"));
  for (const json& k : {json("5"), json(2.5), json(true), json::array({5})}) {
    SCOPED_TRACE(k.dump());
    EXPECT_TRUE(contains(error_of([&] {
                           search_request(json{{"k", k}}, 50);
                         }).second,
                         "\"k\" must be an integer"));
  }
}

TEST(SearchRequestFromJson, RefusesBadTargetsNumbersAndFilters) {
  const std::vector<std::pair<json, std::string>> bad = {
      {{{"target", "maps"}}, "'maps'"},
      {{{"target", 3}}, "\"target\" must be a string"},
      {{{"min_score", "high"}}, "\"min_score\" must be a number"},
      {{{"min_score", 3}}, "min_score"},
      {{{"dedup_threshold", 0}}, "dedup threshold"},
      {{{"dedup_threshold", "x"}}, "\"dedup_threshold\" must be a number"},
      {{{"dedup", "yes"}}, "\"dedup\" must be true or false"},
      {{{"path_prefix", 7}}, "\"path_prefix\" must be a string"},
      {{{"path_prefix", "/x"}, {"target", "texts"}}, "path_prefix applies to images only"},
  };
  for (const auto& [body, says] : bad) {
    SCOPED_TRACE(body.dump());
    const auto [kind, message] = error_of([&] { search_request(body, 1000); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
    EXPECT_TRUE(contains(message, says));
  }
}

TEST(SearchRequestFromParams, ParsesTheSameOptionsAsQueryParameters) {
  EXPECT_EQ(search_request(Fields{}, 1000).k, 10);
  const SearchRequest r = search_request(Fields{{"k", "5"},
                                                {"min_score", "0.5"},
                                                {"path_prefix", "/p"},
                                                {"dedup", "1"},
                                                {"dedup_threshold", "0.95"}},
                                         1000);
  EXPECT_EQ(r.k, 5);
  EXPECT_FLOAT_EQ(*r.filters.min_score, 0.5f);
  EXPECT_EQ(r.filters.path_prefix, "/p");
  EXPECT_TRUE(r.filters.dedup);
  EXPECT_FLOAT_EQ(r.filters.dedup_threshold, 0.95f);
  EXPECT_EQ(search_request(Fields{{"target", "texts"}}, 1000).target, SearchTarget::kTexts);
  for (const char* yes : {"true", "1"}) {
    EXPECT_TRUE(search_request(Fields{{"dedup", yes}}, 1000).filters.dedup);
  }
  for (const char* no : {"false", "0"}) {
    EXPECT_FALSE(search_request(Fields{{"dedup", no}}, 1000).filters.dedup);
  }
}

TEST(SearchRequestFromParams, RefusesMalformedValues) {
  const std::vector<std::pair<Fields, std::string>> bad = {
      {{{"k", "abc"}}, "k must be a positive integer"},
      {{{"k", "-1"}}, "k must be a positive integer"},
      {{{"k", ""}}, "k must be a positive integer"},
      {{{"k", "1e3"}}, "k must be a positive integer"},
      {{{"k", "1234567890"}}, "k must be a positive integer"},  // over 9 digits
      {{{"k", "0"}}, "k = 0 is outside 1..1000"},
      {{{"k", "1001"}}, "k = 1001 is outside 1..1000"},
      {{{"min_score", "high"}}, "min_score must be a number"},
      {{{"min_score", "0.5x"}}, "min_score must be a number"},
      {{{"min_score", ""}}, "min_score must be a number"},
      {{{"min_score", "2"}}, "outside -1..1"},
      {{{"dedup_threshold", "x"}}, "dedup_threshold must be a number"},
      {{{"dedup", "yes"}}, "dedup must be true or false"},
      {{{"target", "maps"}}, "'maps'"},
  };
  for (const auto& [params, says] : bad) {
    SCOPED_TRACE(params[0].first + "=" + params[0].second);
    const auto [kind, message] = error_of([&] { search_request(params, 1000); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
    EXPECT_TRUE(contains(message, says));
  }
}

TEST(IntParam, ReadsADecimalOrTheFallback) {
  HttpRequest r;
  EXPECT_EQ(int_param(r, "size", 256), 256);
  r.params = {{"size", "64"}};
  EXPECT_EQ(int_param(r, "size", 256), 64);
  r.params = {{"size", "999999999"}};
  EXPECT_EQ(int_param(r, "size", 256), 999999999);
  r.params = {{"size", "0"}};
  EXPECT_EQ(int_param(r, "size", 256), 0);
  for (const char* bad : {"abc", "-3", "1.5", "", " 4", "1234567890", "0x10"}) {
    SCOPED_TRACE(bad);
    r.params = {{"size", bad}};
    const auto [kind, message] = error_of([&] { int_param(r, "size", 256); });
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
    EXPECT_TRUE(contains(message, "size must be a positive integer"));
  }
}

// --- Host header ----------------------------------------------------------------------------

TEST(HostAllowed, AnEmptyListAllowsEveryHost) {
  for (const char* host : {"evil.example", "localhost:abc", "", "[::1"}) {
    EXPECT_TRUE(host_allowed(host, {})) << host;
  }
}

TEST(HostAllowed, MatchesNamesWithAnyPortWithoutCase) {
  const std::vector<std::string> loopback = {"localhost", "127.0.0.1", "::1"};
  for (const char* host : {"localhost", "localhost:8080", "LocalHost:80", "127.0.0.1",
                           "127.0.0.1:65535", "[::1]", "[::1]:8080", " localhost "}) {
    EXPECT_TRUE(host_allowed(host, loopback)) << host;
  }
  EXPECT_TRUE(host_allowed("evil.example", {"Evil.Example"}));
  EXPECT_TRUE(host_allowed("EVIL.example:443", {"evil.example"}));
  EXPECT_TRUE(host_allowed("[2001:DB8::1]:443", {"2001:db8::1"}));
}

TEST(HostAllowed, RefusesForeignHostsAndGarbage) {
  const std::vector<std::string> loopback = {"localhost", "127.0.0.1", "::1"};
  for (const char* host :
       {"evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.2", "localhost:abc",
        "localhost:80x", "localhost:8080:1", "localhost:-1", "[::1]x", "[::1]:x", "[::1", "[::2]",
        "[]", ":8080", "", "local host"}) {
    EXPECT_FALSE(host_allowed(host, loopback)) << "'" << host << "'";
  }
}

TEST(CheckTermCount, AllowsUpToTheBoundAndNamesItBeyond) {
  EXPECT_NO_THROW(check_term_count(0));
  EXPECT_NO_THROW(check_term_count(kMaxQueryTerms));
  EXPECT_EQ(kMaxQueryTerms, 16u);
  const auto [kind, message] = error_of([] { check_term_count(10800); });
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(message, "at most 16 terms"));
  EXPECT_TRUE(contains(message, "got 10800"));
  EXPECT_EQ(kind_of([] { check_term_count(17); }), ErrorKind::kInvalidArgument);
}

}  // namespace
}  // namespace mms
