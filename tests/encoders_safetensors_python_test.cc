// Cross-checks the safetensors format against an independent implementation: a reader and a
// writer in Python's standard library (json + struct, written from the format's description),
// so a mistake shared by our writer and our reader cannot hide. Skipped without python3.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "encoders/safetensors.h"

namespace mms {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPython = "/usr/bin/python3";

// `read FILE OUT`: checks layout (length, padding, contiguity, alignment, no trailing bytes)
// and prints each tensor's decoded values, one JSON line per tensor, sorted.
// `write FILE`: writes a file with another writer's habits (spaced JSON, escaped non-ASCII,
// metadata first, header order unlike data order, no padding).
constexpr const char* kScript = R"PY(
import json, math, struct, sys

SIZES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2, "I8": 1,
         "U8": 1, "BOOL": 1}
CODES = {"F64": "d", "I64": "q", "F32": "f", "I32": "i", "F16": "e", "I16": "h", "I8": "b",
         "U8": "B", "BOOL": "?"}

def values(dtype, raw):
    if dtype == "BF16":  # the upper half of an F32
        return [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
    return list(struct.unpack("<%d%s" % (len(raw) // SIZES[dtype], CODES[dtype]), raw))

def read(path, out):
    buf = open(path, "rb").read()
    (n,) = struct.unpack("<Q", buf[:8])
    text = buf[8:8 + n].decode("utf-8")
    assert n % 8 == 0 and text.rstrip(" ").endswith("}"), "header not padded with spaces"
    header = json.loads(text)
    data = buf[8 + n:]
    lines = [json.dumps(["__metadata__", header.pop("__metadata__", {})], ensure_ascii=False)]
    end = 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        begin, stop = e["data_offsets"]
        size = SIZES[e["dtype"]]
        assert begin == end, "gap or overlap at " + name
        assert begin % size == 0, "misaligned " + name
        assert stop - begin == math.prod(e["shape"]) * size, "wrong size of " + name
        row = [name, e["dtype"], e["shape"], values(e["dtype"], data[begin:stop])]
        lines.append(json.dumps(row, ensure_ascii=False))
        end = stop
    assert end == len(data), "trailing bytes"
    open(out, "w", encoding="utf-8").write("\n".join(sorted(lines)) + "\n")

def write(path):
    tensors = [("b.\u00e9", "F32", [2], struct.pack("<2f", 0.5, -3.0)),
               ("a", "I64", [], struct.pack("<q", -9)),
               ("c", "BOOL", [3], bytes([1, 0, 1]))]
    offsets, offset = {}, 0
    for name, _, _, raw in reversed(tensors):
        offsets[name] = [offset, offset + len(raw)]
        offset += len(raw)
    header = {"__metadata__": {"framework": "pt"}}
    for name, dtype, shape, _ in tensors:
        header[name] = {"data_offsets": offsets[name], "shape": shape, "dtype": dtype}
    text = json.dumps(header).encode()
    blob = b"".join(raw for _, _, _, raw in reversed(tensors))
    open(path, "wb").write(struct.pack("<Q", len(text)) + text + blob)

if sys.argv[1] == "read":
    read(sys.argv[2], sys.argv[3])
else:
    write(sys.argv[2])
)PY";

template <typename T>
std::vector<uint8_t> le_bytes(std::initializer_list<T> values) {
  std::vector<uint8_t> out(values.size() * sizeof(T));
  std::memcpy(out.data(), values.begin(), out.size());
  return out;
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class PythonCrossCheck : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kPython, X_OK) != 0) GTEST_SKIP() << kPython << " is not installed";
    dir_ = fs::temp_directory_path() / ("mms_st_py_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "check.py") << kScript;
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Runs the script with `args`; fails the test with its output when it fails.
  void python(const std::string& args) {
    const std::string log = (dir_ / "log.txt").string();
    const std::string command = std::string(kPython) + " -I " + (dir_ / "check.py").string() + " " +
                                args + " > " + log + " 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0) << command << "\n" << slurp(log);
  }

  fs::path dir_;
};

TEST_F(PythonCrossCheck, PythonReadsWhatWeWrite) {
  SafeTensors st;
  st.metadata = {{"format", "mmsearch"}, {"\xc3\xbc", "x"}};
  st.tensors["w"] = {DType::kF32, {2, 2}, le_bytes<float>({1, -2, 0.5f, 3})};
  st.tensors["n"] = {DType::kI64, {3}, le_bytes<int64_t>({-1, 0, int64_t{1} << 40})};
  st.tensors["h"] = {DType::kF16, {2}, le_bytes<uint16_t>({0x3c00, 0xc000})};
  st.tensors["bf"] = {DType::kBF16, {1}, le_bytes<uint16_t>({0x3fc0})};
  st.tensors["s"] = {DType::kF64, {}, le_bytes<double>({0.25})};
  st.tensors["e"] = {DType::kF32, {0}, {}};
  st.tensors["b"] = {DType::kBool, {2}, {1, 0}};
  st.tensors["i8"] = {DType::kI8, {1}, le_bytes<int8_t>({-5})};
  st.tensors["i16"] = {DType::kI16, {1}, le_bytes<int16_t>({-300})};
  st.tensors["i32"] = {DType::kI32, {1}, le_bytes<int32_t>({70000})};
  st.tensors["\xc3\xa9"] = {DType::kU8, {2}, {7, 255}};
  const fs::path file = dir_ / "ours.safetensors";
  write_safetensors(file.string(), st);
  python("read " + file.string() + " " + (dir_ / "out.txt").string());
  EXPECT_EQ(slurp(dir_ / "out.txt"),
            "[\"__metadata__\", {\"format\": \"mmsearch\", \"\xc3\xbc\": \"x\"}]\n"
            "[\"b\", \"BOOL\", [2], [true, false]]\n"
            "[\"bf\", \"BF16\", [1], [1.5]]\n"
            "[\"e\", \"F32\", [0], []]\n"
            "[\"h\", \"F16\", [2], [1.0, -2.0]]\n"
            "[\"i16\", \"I16\", [1], [-300]]\n"
            "[\"i32\", \"I32\", [1], [70000]]\n"
            "[\"i8\", \"I8\", [1], [-5]]\n"
            "[\"n\", \"I64\", [3], [-1, 0, 1099511627776]]\n"
            "[\"s\", \"F64\", [], [0.25]]\n"
            "[\"w\", \"F32\", [2, 2], [1.0, -2.0, 0.5, 3.0]]\n"
            "[\"\xc3\xa9\", \"U8\", [2], [7, 255]]\n");
}

TEST_F(PythonCrossCheck, WeReadWhatPythonWrites) {
  const fs::path file = dir_ / "theirs.safetensors";
  python("write " + file.string());
  const SafeTensors st = read_safetensors(file.string());
  EXPECT_EQ(st.metadata, (std::map<std::string, std::string>{{"framework", "pt"}}));
  ASSERT_EQ(st.tensors.size(), 3u);
  const TensorData& b = st.tensors.at("b.\xc3\xa9");
  EXPECT_EQ(b.dtype, DType::kF32);
  EXPECT_EQ(b.shape, std::vector<int64_t>{2});
  EXPECT_EQ(b.bytes, le_bytes<float>({0.5f, -3.0f}));
  const TensorData& a = st.tensors.at("a");
  EXPECT_EQ(a.dtype, DType::kI64);
  EXPECT_TRUE(a.shape.empty());
  EXPECT_EQ(a.bytes, le_bytes<int64_t>({-9}));
  const TensorData& c = st.tensors.at("c");
  EXPECT_EQ(c.dtype, DType::kBool);
  EXPECT_EQ(c.bytes, (std::vector<uint8_t>{1, 0, 1}));
}

}  // namespace
}  // namespace mms
