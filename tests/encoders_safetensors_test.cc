// safetensors I/O: round trips of every dtype, bytes checked against a hand-built golden
// file, every kind of corruption rejected as Error::corrupt naming the file and tensor, the
// model-loading checks, and files read and written by an independent Python reader/writer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "encoders/safetensors.h"

namespace mms {
namespace {

namespace fs = std::filesystem;

// Raw little-endian bytes of host values; the project only targets little-endian hosts.
template <typename T>
std::vector<uint8_t> le_bytes(std::initializer_list<T> values) {
  std::vector<uint8_t> out(values.size() * sizeof(T));
  std::memcpy(out.data(), values.begin(), out.size());
  return out;
}

TensorData tensor(DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
  return TensorData{dtype, std::move(shape), std::move(bytes)};
}

void expect_equal(const SafeTensors& a, const SafeTensors& b) {
  EXPECT_EQ(a.metadata, b.metadata);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, t] : a.tensors) {
    ASSERT_EQ(b.tensors.count(name), 1u) << name;
    const TensorData& u = b.tensors.at(name);
    EXPECT_EQ(t.dtype, u.dtype) << name;
    EXPECT_EQ(t.shape, u.shape) << name;
    EXPECT_EQ(t.bytes, u.bytes) << name;
  }
}

// One tensor of every dtype, plus a 0-d scalar and empty tensors.
SafeTensors sample() {
  SafeTensors st;
  st.tensors["f32"] = tensor(DType::kF32, {2, 3}, le_bytes<float>({1, -2, 3.5f, 0, 1e-3f, 7}));
  st.tensors["f64"] = tensor(DType::kF64, {2}, le_bytes<double>({-1.25, 1e300}));
  st.tensors["f16"] = tensor(DType::kF16, {3}, le_bytes<uint16_t>({0x3c00, 0xc000, 0x3800}));
  st.tensors["bf16"] = tensor(DType::kBF16, {1, 2}, le_bytes<uint16_t>({0x3f80, 0xc040}));
  st.tensors["i64"] = tensor(DType::kI64, {3}, le_bytes<int64_t>({-1, INT64_MAX, 5}));
  st.tensors["i32"] = tensor(DType::kI32, {1}, le_bytes<int32_t>({-7}));
  st.tensors["i16"] = tensor(DType::kI16, {2}, le_bytes<int16_t>({-300, 300}));
  st.tensors["i8"] = tensor(DType::kI8, {3}, le_bytes<int8_t>({-128, 0, 127}));
  st.tensors["u8"] = tensor(DType::kU8, {5}, {0, 1, 2, 254, 255});
  st.tensors["bool"] = tensor(DType::kBool, {2, 2}, {1, 0, 0, 1});
  st.tensors["scalar"] = tensor(DType::kF32, {}, le_bytes<float>({42}));
  st.tensors["empty"] = tensor(DType::kF32, {0, 3}, {});
  st.tensors["empty.i64"] = tensor(DType::kI64, {4, 0}, {});
  return st;
}

template <typename F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no mms::Error was thrown";
  return Error::internal("(none)");
}

// A file with `header` verbatim (no padding: readers must not require it) and `data`.
std::vector<uint8_t> raw_file(const std::string& header, std::vector<uint8_t> data) {
  std::vector<uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

Error parse_error(const std::vector<uint8_t>& bytes) {
  return error_of([&] { parse_safetensors(bytes.data(), bytes.size(), "bad.safetensors"); });
}

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("mms_st_test_" + std::to_string(::getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

TEST(SafeTensors, DTypeNamesAndSizes) {
  EXPECT_STREQ(dtype_name(DType::kF32), "F32");
  EXPECT_STREQ(dtype_name(DType::kBF16), "BF16");
  EXPECT_STREQ(dtype_name(DType::kBool), "BOOL");
  EXPECT_EQ(dtype_size(DType::kF64), 8u);
  EXPECT_EQ(dtype_size(DType::kI32), 4u);
  EXPECT_EQ(dtype_size(DType::kF16), 2u);
  EXPECT_EQ(dtype_size(DType::kBool), 1u);
}

TEST(SafeTensors, RoundTripsEveryDTypeScalarAndEmptyTensors) {
  const SafeTensors st = sample();
  const std::vector<uint8_t> bytes = serialize_safetensors(st);
  expect_equal(st, parse_safetensors(bytes.data(), bytes.size(), "x"));
}

TEST(SafeTensors, RoundTripsMetadataAndUnicodeNames) {
  SafeTensors st;
  st.metadata = {{"format", "mmsearch"}, {"quote\"s", "back\\slash\nnew line \xc3\xa9"}, {"", ""}};
  st.tensors["text.\xc3\xa9mbed"] = tensor(DType::kU8, {1}, {9});
  const std::vector<uint8_t> bytes = serialize_safetensors(st);
  expect_equal(st, parse_safetensors(bytes.data(), bytes.size(), "x"));

  const SafeTensors empty;
  const std::vector<uint8_t> none = serialize_safetensors(empty);
  expect_equal(empty, parse_safetensors(none.data(), none.size(), "x"));
}

TEST(SafeTensors, BytesAreDeterministic) {
  SafeTensors a = sample(), b;
  // Same content built in another order.
  for (auto it = a.tensors.rbegin(); it != a.tensors.rend(); ++it) b.tensors.insert(*it);
  a.metadata = b.metadata = {{"k", "v"}, {"a", "b"}};
  EXPECT_EQ(serialize_safetensors(a), serialize_safetensors(a));
  EXPECT_EQ(serialize_safetensors(a), serialize_safetensors(b));
}

TEST(SafeTensors, GoldenBytesOfOneTensor) {
  SafeTensors st;
  st.tensors["w"] = tensor(DType::kF32, {2}, le_bytes<float>({1.0f, -2.0f}));
  // Compact JSON, keys in the reference writer's order: 54 bytes, padded to 56 with 2 spaces.
  const std::string json = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_EQ(json.size(), 54u);
  std::vector<uint8_t> expected = {56, 0, 0, 0, 0, 0, 0, 0};
  expected.insert(expected.end(), json.begin(), json.end());
  expected.insert(expected.end(), {' ', ' '});
  expected.insert(expected.end(), {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0});  // 1, -2
  EXPECT_EQ(serialize_safetensors(st), expected);
}

TEST(SafeTensors, GoldenBytesWithMetadataAndAlignedOrder) {
  SafeTensors st;
  st.metadata["format"] = "pt";
  st.tensors["a"] = tensor(DType::kU8, {1}, {7});
  st.tensors["b"] = tensor(DType::kF32, {}, le_bytes<float>({0.5f}));
  // Larger elements first (then names), so every tensor starts at a multiple of its size.
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
      R"("a":{"dtype":"U8","shape":[1],"data_offsets":[4,5]}})";
  ASSERT_EQ(json.size(), 136u);  // a multiple of 8 already: no padding
  std::vector<uint8_t> expected = {136, 0, 0, 0, 0, 0, 0, 0};
  expected.insert(expected.end(), json.begin(), json.end());
  expected.insert(expected.end(), {0x00, 0x00, 0x00, 0x3f, 7});
  EXPECT_EQ(serialize_safetensors(st), expected);

  const std::vector<uint8_t> empty = {8,   0,   0,   0,   0,   0,   0,   0,
                                      '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
  EXPECT_EQ(serialize_safetensors(SafeTensors{}), empty);
}

struct CorruptCase {
  const char* label;
  std::vector<uint8_t> bytes;
  const char* needle;  // a part of the message: the tensor's name or the problem
};

std::vector<CorruptCase> corrupt_cases() {
  const std::string ok = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::vector<uint8_t> eight(8), twelve(12);
  std::vector<uint8_t> long_header = raw_file("{" + ok + "}", eight);
  long_header[0] = 0xff;  // 255 bytes of header in a 72-byte file
  std::vector<uint8_t> huge_header = raw_file("{" + ok + "}", eight);
  huge_header[7] = 0x80;  // 2^63
  auto with = [&](const std::string& entry, std::vector<uint8_t> data) {
    return raw_file("{" + entry + "}", std::move(data));
  };
  auto entry = [](const std::string& dtype, const std::string& shape, const std::string& offsets) {
    return R"("t":{"dtype":)" + dtype + R"(,"shape":)" + shape + R"(,"data_offsets":)" + offsets +
           "}";
  };
  return {
      {"short file", {1, 0, 0}, "too short"},
      {"header past the end", long_header, "header length 255"},
      {"header length 2^63", huge_header, "header length"},
      {"not JSON", raw_file(R"({"a":)", {}), "not valid JSON"},
      {"not an object", raw_file("[1, 2]", {}), "not a JSON object"},
      {"unterminated long string", raw_file("{\"" + std::string(100000, 'x'), {}), "..."},
      {"invalid UTF-8", raw_file("{\"\xff\":1}", {}), "not valid JSON"},
      {"entry not an object", with(R"("t":3)", {}), "'t'"},
      {"missing dtype", with(R"("t":{"shape":[2],"data_offsets":[0,8]})", eight), "'t' lacks"},
      {"missing shape", with(R"("t":{"dtype":"F32","data_offsets":[0,8]})", eight), "'t' lacks"},
      {"missing offsets", with(R"("t":{"dtype":"F32","shape":[2]})", eight), "'t' lacks"},
      {"unknown dtype", with(entry(R"("F33")", "[2]", "[0,8]"), eight), "unknown dtype \"F33\""},
      {"dtype not a string", with(entry("4", "[2]", "[0,8]"), eight), "'t' has an unknown dtype"},
      {"negative dimension", with(entry(R"("F32")", "[-2]", "[0,8]"), eight), "-2"},
      {"fractional dimension", with(entry(R"("F32")", "[2.5]", "[0,8]"), eight), "2.5"},
      {"shape not a list", with(entry(R"("F32")", "2", "[0,8]"), eight), "'t' has a shape"},
      {"dimension past int64", with(entry(R"("U8")", "[9223372036854775808]", "[0,8]"), eight),
       "9223372036854775808"},
      {"shape product overflows", with(entry(R"("U8")", "[4294967296,4294967296]", "[0,8]"), eight),
       "overflows"},
      {"bytes overflow", with(entry(R"("I64")", "[4611686018427387904]", "[0,8]"), eight),
       "overflows"},
      {"offsets past the data", with(entry(R"("F32")", "[2]", "[0,80]"), eight), "outside"},
      {"offsets reversed", with(entry(R"("F32")", "[2]", "[8,0]"), eight), "end before"},
      {"offsets not a pair", with(entry(R"("F32")", "[2]", "[0,8,8]"), eight),
       "'t' has data_offsets"},
      {"negative offset", with(entry(R"("F32")", "[2]", "[-1,8]"), eight), "'t' has data_offsets"},
      {"offsets not matching the shape", with(entry(R"("F32")", "[2]", "[0,4]"), eight),
       "4 bytes of data but F32 [2] needs 8"},
      {"offsets not matching the dtype", with(entry(R"("F64")", "[2]", "[0,8]"), eight),
       "needs 16"},
      {"overlap", with(ok + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})", twelve),
       "'b' overlaps"},
      {"gap",
       with(R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]})",
            twelve),
       "'b' leaves a gap"},
      {"gap at the start", with(R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]})", eight),
       "'a' leaves a gap"},
      {"trailing garbage", with(ok, twelve), "4 bytes of trailing data"},
      {"duplicate tensor", with(ok + "," + ok, eight), "repeats the key 'a'"},
      {"duplicate field",
       with(R"("a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]})", eight),
       "key 'dtype' in 'a'"},
      {"deep nesting", with(R"("a":{"x":[[[[1]]]]})", {}), "nests too deeply"},
      {"metadata not an object", with(R"("__metadata__":[])", {}), "__metadata__"},
      {"metadata value not a string", with(R"("__metadata__":{"n":1})", {}), "'n'"},
      {"bool other than 0 or 1",
       with(R"("m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]})", {1, 2}),
       "'m' holds a BOOL"},
  };
}

TEST(SafeTensors, EveryCorruptionIsACorruptErrorNamingFileAndTensor) {
  for (const CorruptCase& c : corrupt_cases()) {
    const Error e = parse_error(c.bytes);
    EXPECT_EQ(e.kind(), ErrorKind::kCorrupt) << c.label << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find("weights 'bad.safetensors'"), std::string::npos)
        << c.label << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find(c.needle), std::string::npos)
        << c.label << ": " << e.what();
  }
}

TEST(SafeTensors, DTypesWeDoNotLoadAreUnsupported) {
  const Error e = parse_error(raw_file(R"({"t":{"dtype":"U64","shape":[1],"data_offsets":[0,8]}})",
                                       std::vector<uint8_t>(8)));
  EXPECT_EQ(e.kind(), ErrorKind::kUnsupported) << e.what();
  EXPECT_NE(std::string(e.what()).find("tensor 't' has dtype U64"), std::string::npos) << e.what();
}

TEST(SafeTensors, EveryPrefixAndByteFlipFailsCleanly) {
  const std::vector<uint8_t> good = serialize_safetensors(sample());
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_EQ(parse_error({good.begin(), good.begin() + n}).kind(), ErrorKind::kCorrupt) << n;
  }
  // Any change to the header either still parses or throws an mms::Error, never anything else.
  const size_t header_end = 8 + good[0] + 256 * good[1];
  for (size_t i = 0; i < header_end; ++i) {
    for (uint8_t flip : {0x01, 0x20, 0x80}) {
      std::vector<uint8_t> bad = good;
      bad[i] ^= flip;
      try {
        parse_safetensors(bad.data(), bad.size(), "bad");
      } catch (const Error&) {
      }
    }
  }
}

TEST(SafeTensors, SerializeRejectsInconsistentInput) {
  SafeTensors st;
  st.tensors["w"] = tensor(DType::kF32, {2, 2}, std::vector<uint8_t>(12));
  Error e = error_of([&] { serialize_safetensors(st); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
  EXPECT_STREQ(e.what(), "safetensors: tensor 'w' holds 12 bytes, which do not fit F32 [2, 2]");

  st.tensors.clear();
  st.tensors["__metadata__"] = tensor(DType::kU8, {0}, {});
  EXPECT_EQ(error_of([&] { serialize_safetensors(st); }).kind(), ErrorKind::kInvalidArgument);

  st.tensors.clear();
  st.tensors["bad\xff"] = tensor(DType::kU8, {0}, {});
  e = error_of([&] { serialize_safetensors(st); });
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("UTF-8"), std::string::npos) << e.what();
}

TEST(SafeTensors, FilesRoundTripAndReplaceAtomically) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  SafeTensors st = sample();
  write_safetensors(path, st);
  expect_equal(st, read_safetensors(path));

  st.tensors.erase("f32");
  st.metadata["step"] = "2";
  write_safetensors(path, st);
  expect_equal(st, read_safetensors(path));
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::others_read, fs::perms::others_read);
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir.path())) files += entry.is_regular_file();
  EXPECT_EQ(files, 1u) << "a temporary file was left behind";

  const std::vector<uint8_t> bytes = serialize_safetensors(st);
  std::ifstream in(path, std::ios::binary);
  EXPECT_EQ(std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {}), bytes);
}

TEST(SafeTensors, FileErrorsNameThePath) {
  TempDir dir;
  const std::string missing = dir.file("missing.safetensors");
  Error e = error_of([&] { read_safetensors(missing); });
  EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
  EXPECT_EQ(std::string(e.what()), "weights '" + missing + "' do not exist");

  e = error_of([&] { read_safetensors(dir.path().string()); });
  EXPECT_EQ(e.kind(), ErrorKind::kIo);
  EXPECT_NE(std::string(e.what()).find(dir.path().string()), std::string::npos) << e.what();

  const std::string nowhere = dir.file("no/such/dir/m.safetensors");
  e = error_of([&] { write_safetensors(nowhere, sample()); });
  EXPECT_EQ(e.kind(), ErrorKind::kIo);
  EXPECT_NE(std::string(e.what()).find(nowhere), std::string::npos) << e.what();

  const std::string truncated = dir.file("truncated.safetensors");
  write_safetensors(truncated, sample());
  fs::resize_file(truncated, fs::file_size(truncated) - 1);
  e = error_of([&] { read_safetensors(truncated); });
  EXPECT_EQ(e.kind(), ErrorKind::kCorrupt);
  EXPECT_NE(std::string(e.what()).find("weights '" + truncated + "'"), std::string::npos);
}

TEST(SafeTensors, CheckTensorExplainsMismatches) {
  SafeTensors st;
  st.tensors["text.embed.weight"] = tensor(DType::kF32, {8000, 256}, {});
  st.tensors["text.embed.weight"].bytes.resize(8000 * 256 * 4);
  const std::string f = "m.safetensors";
  check_tensor(st, "text.embed.weight", DType::kF32, {8000, 256}, f);  // no throw

  Error e = error_of([&] { check_tensor(st, "text.embed.weight", DType::kF32, {4000, 256}, f); });
  EXPECT_EQ(e.kind(), ErrorKind::kMismatch);
  EXPECT_STREQ(e.what(),
               "weights 'm.safetensors': tensor 'text.embed.weight' has shape [8000, 256], "
               "expected [4000, 256]");
  e = error_of([&] { check_tensor(st, "text.embed.weight", DType::kF16, {8000, 256}, f); });
  EXPECT_STREQ(e.what(),
               "weights 'm.safetensors': tensor 'text.embed.weight' is F32, expected F16");
  e = error_of([&] { check_tensor(st, "image.stem.weight", DType::kF32, {1}, f); });
  EXPECT_EQ(e.kind(), ErrorKind::kMismatch);
  EXPECT_STREQ(e.what(), "weights 'm.safetensors': tensor 'image.stem.weight' is missing");
}

TEST(SafeTensors, CheckNoExtraTensorsNamesTheExtras) {
  SafeTensors st;
  for (const char* name : {"a", "b", "c", "d", "e", "f"})
    st.tensors[name] = tensor(DType::kU8, {0}, {});
  check_no_extra_tensors(st, {"a", "b", "c", "d", "e", "f", "g"}, "m");  // no throw

  Error e = error_of([&] { check_no_extra_tensors(st, {"a", "b", "c", "d", "e"}, "m"); });
  EXPECT_EQ(e.kind(), ErrorKind::kMismatch);
  EXPECT_STREQ(e.what(),
               "weights 'm': unexpected tensor 'f' (the weights belong to a different model "
               "configuration)");
  e = error_of([&] { check_no_extra_tensors(st, {"b"}, "m"); });
  EXPECT_STREQ(e.what(),
               "weights 'm': unexpected tensors 'a', 'c', 'd' and 2 more (the weights belong to a "
               "different model configuration)");
}

}  // namespace
}  // namespace mms
