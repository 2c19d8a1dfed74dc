// safetensors, the public weights format, written and read by our own code: an 8-byte
// little-endian header length N, N bytes of compact JSON {"__metadata__": {...}, "name":
// {"dtype", "shape", "data_offsets": [begin, end]}, ...} padded with spaces to a multiple of
// 8, then the raw little-endian tensor data, contiguous, without gaps, in header order.
// Writing follows the reference implementation byte for byte (tensors by descending dtype
// size, then by name, so each tensor's data is aligned to its element size): Python's
// `safetensors` and `torch` read what we write. Parsing trusts nothing in the file.
// Plain types only (no LibTorch); every function is safe to call concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace mms {

enum class DType { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

const char* dtype_name(DType dtype);  // the format's name: "F32", "F16", "BF16", ..., "BOOL"
size_t dtype_size(DType dtype);       // bytes per element

struct TensorData {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // empty for a 0-d scalar (one element)
  std::vector<uint8_t> bytes;  // row-major, little-endian; product(shape) * dtype_size bytes
};

struct SafeTensors {
  std::map<std::string, TensorData> tensors;    // names are UTF-8, never "__metadata__"
  std::map<std::string, std::string> metadata;  // the "__metadata__" object; omitted if empty
};

// The file's bytes; equal inputs give equal bytes. Throws Error::invalid_argument when a
// tensor's bytes do not match its shape and dtype, or a name is not valid UTF-8.
std::vector<uint8_t> serialize_safetensors(const SafeTensors& st);

// Parses the whole file held in data[0, size); the result owns copies of the tensor bytes.
// Throws Error::corrupt naming `name_for_errors` (and the tensor, where there is one) for a
// short file, a header length beyond the file, a header that is not a JSON object, duplicate
// keys, missing or mistyped fields, unknown dtypes, negative or overflowing shapes, offsets
// out of range or not matching shape x dtype size, overlaps, gaps and trailing bytes;
// Error::unsupported for a dtype of the format that DType lacks (U16, U32, U64, F8_*).
SafeTensors parse_safetensors(const uint8_t* data, size_t size, std::string_view name_for_errors);

// Writes atomically: a temporary file in the same folder, fsynced, renamed over `path`, and
// the folder fsynced, so a crash leaves either the old file or the new one. Throws
// Error::invalid_argument as serialize_safetensors, Error::io naming the file otherwise.
void write_safetensors(const std::string& path, const SafeTensors& st);

// Throws Error::not_found for a missing file, Error::io for an unreadable one, then as
// parse_safetensors with the path as the name.
SafeTensors read_safetensors(const std::string& path);

// For model loading. Throws Error::mismatch naming `file` when `name` is missing or has
// another dtype or shape, e.g. "weights 'm.safetensors': tensor 'text.embed.weight' has
// shape [8000, 256], expected [4000, 256]".
void check_tensor(const SafeTensors& st, const std::string& name, DType dtype,
                  const std::vector<int64_t>& shape, std::string_view file);

// Throws Error::mismatch naming `file` and the first few tensors of `st` whose names are not
// in `expected` (weights of a different model configuration).
void check_no_extra_tensors(const SafeTensors& st, const std::set<std::string>& expected,
                            std::string_view file);

}  // namespace mms
