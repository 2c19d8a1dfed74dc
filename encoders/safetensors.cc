#include "encoders/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>

#include "common/error.h"

namespace mms {
namespace {

using nlohmann::json;

// Descending element size, in the order the reference writer sorts tensors (its Dtype enum,
// reversed); writing the same order makes our files byte-identical to Python's.
constexpr DType kWriteOrder[] = {DType::kI64, DType::kF64, DType::kF32, DType::kI32, DType::kBF16,
                                 DType::kF16, DType::kI16, DType::kI8,  DType::kU8,  DType::kBool};
// Dtypes the format defines that DType lacks: such a file is well-formed, just not loadable.
constexpr const char* kUnsupportedNames[] = {"U16",     "U32",     "U64",     "F8_E5M2", "F8_E4M3",
                                             "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"};
// Header sizes beyond this are not weights files (the reference implementation's limit).
constexpr uint64_t kMaxHeader = 100'000'000;
// A valid header nests containers at most root object > tensor entry > shape array, so any
// deeper nesting is hostile; rejecting it early bounds the parser's work and memory.
constexpr int kMaxDepth = 2;
constexpr const char* kMetadataKey = "__metadata__";

std::string errno_text() {
  return std::strerror(errno);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Element count of `shape`, or -1 when a dimension is negative or the product overflows.
int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && n > INT64_MAX / d)) return -1;
    n *= d;
  }
  return n;
}

// ---- writing ---------------------------------------------------------------------------

// The 8-byte length and padded header, and the tensors in the order their data follows.
struct FilePlan {
  std::string prefix;
  std::vector<const TensorData*> order;
  uint64_t data_size = 0;
};

FilePlan plan_file(const SafeTensors& st, const std::string& where) {
  std::vector<std::pair<const std::string*, const TensorData*>> order;
  for (const auto& [name, t] : st.tensors) {
    if (name == kMetadataKey) {
      throw Error::invalid_argument(where + ": a tensor may not be named '" + name + "'");
    }
    const int64_t n = element_count(t.shape);
    const uint64_t size = dtype_size(t.dtype);
    if (n < 0 || static_cast<uint64_t>(n) > UINT64_MAX / size ||
        t.bytes.size() != static_cast<uint64_t>(n) * size) {
      throw Error::invalid_argument(where + ": tensor '" + name + "' holds " +
                                    std::to_string(t.bytes.size()) + " bytes, which do not fit " +
                                    dtype_name(t.dtype) + " " + shape_text(t.shape));
    }
    order.emplace_back(&name, &t);
  }
  // The map already orders by name (bytewise, as the reference does); a stable sort by
  // element size keeps that order within one size.
  const auto rank = [](DType d) {
    return std::find(std::begin(kWriteOrder), std::end(kWriteOrder), d) - std::begin(kWriteOrder);
  };
  std::stable_sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
    return rank(a.second->dtype) < rank(b.second->dtype);
  });

  FilePlan plan;
  std::string header = "{";
  try {
    if (!st.metadata.empty()) {
      header += std::string("\"") + kMetadataKey + "\":" + json(st.metadata).dump();
    }
    for (const auto& [name, t] : order) {
      const uint64_t begin = plan.data_size, end = begin + t->bytes.size();
      if (header.size() > 1) header += ',';
      header += json(*name).dump() + ":{\"dtype\":\"" + dtype_name(t->dtype) +
                "\",\"shape\":" + json(t->shape).dump() + ",\"data_offsets\":[" +
                std::to_string(begin) + "," + std::to_string(end) + "]}";
      plan.data_size = end;
      plan.order.push_back(t);
    }
  } catch (const json::exception&) {
    throw Error::invalid_argument(where + ": a tensor name or metadata entry is not valid UTF-8");
  }
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');
  plan.prefix.resize(8);
  for (int i = 0; i < 8; ++i) {
    plan.prefix[i] = static_cast<char>(uint64_t{header.size()} >> (8 * i));
  }
  plan.prefix += header;
  return plan;
}

void write_all(int fd, const void* data, size_t size, const std::string& file) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t w = ::write(fd, p, size);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw Error::io("cannot write '" + file + "': " + errno_text());
    p += w;
    size -= static_cast<size_t>(w);
  }
}

// Makes a rename inside `dir` durable.
void sync_directory(const std::string& dir, const std::string& file) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error::io("cannot open the folder of '" + file + "': " + errno_text());
  // Some file systems cannot sync folders (EINVAL); they order metadata on their own.
  const bool ok = ::fsync(fd) == 0 || errno == EINVAL;
  const std::string why = ok ? "" : errno_text();
  ::close(fd);
  if (!ok) throw Error::io("cannot sync the folder of '" + file + "': " + why);
}

// ---- reading ---------------------------------------------------------------------------

// Parses the header, rejecting what nlohmann would silently accept: duplicate keys (it keeps
// the last) and deep nesting.
json parse_header(const uint8_t* begin, const uint8_t* end, const std::string& where) {
  std::set<std::string> root_keys, entry_keys;
  std::string entry;  // the root key whose value is being read
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) {
      if (depth > kMaxDepth) throw Error::corrupt(where + ": header nests too deeply");
      if (depth == 1) entry_keys.clear();
    } else if (event == json::parse_event_t::key) {
      const std::string key = parsed.get<std::string>();
      if (depth == 1) entry = key;
      if (!(depth == 1 ? root_keys : entry_keys).insert(key).second) {
        throw Error::corrupt(where + ": header repeats the key '" + key + "'" +
                             (depth == 1 ? "" : " in '" + entry + "'"));
      }
    }
    return true;
  };
  try {
    return json::parse(begin, end, check);
  } catch (const json::exception& e) {
    // nlohmann quotes the token it choked on, which a hostile header can make huge.
    constexpr size_t kMaxDetail = 200;
    std::string detail = e.what();
    if (detail.size() > kMaxDetail) detail = detail.substr(0, kMaxDetail) + "...";
    throw Error::corrupt(where + ": header is not valid JSON (" + detail + ")");
  }
}

DType parse_dtype(const json& dt, const std::string& what) {
  if (dt.is_string()) {
    const std::string s = dt.get<std::string>();
    for (DType d : kWriteOrder) {
      if (s == dtype_name(d)) return d;
    }
    for (const char* u : kUnsupportedNames) {
      if (s == u) {
        throw Error::unsupported(what + " has dtype " + s + ", which mmsearch does not load");
      }
    }
  }
  throw Error::corrupt(what + " has an unknown dtype " + dt.dump());
}

uint64_t parse_uint(const json& v, const std::string& what, const char* field, uint64_t max) {
  if (!v.is_number_unsigned() || v.get<uint64_t>() > max) {
    throw Error::corrupt(what + " has " + field + " with a value " + v.dump() +
                         " that is not an integer in range");
  }
  return v.get<uint64_t>();
}

struct Range {
  uint64_t begin, end;
  const std::string* name;
};

// Checks one header entry against the data section of `data_size` bytes.
TensorData parse_entry(const json& entry, const std::string& what, uint64_t data_size,
                       Range* range) {
  if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
      !entry.contains("data_offsets")) {
    throw Error::corrupt(what + " lacks dtype, shape or data_offsets");
  }
  TensorData t;
  t.dtype = parse_dtype(entry.at("dtype"), what);
  const json& shape = entry.at("shape");
  const json& offsets = entry.at("data_offsets");
  if (!shape.is_array()) throw Error::corrupt(what + " has a shape that is not a list");
  for (const json& d : shape) t.shape.push_back(parse_uint(d, what, "a shape", INT64_MAX));
  if (!offsets.is_array() || offsets.size() != 2) {
    throw Error::corrupt(what + " has data_offsets that are not a [begin, end] pair");
  }
  range->begin = parse_uint(offsets[0], what, "data_offsets", UINT64_MAX);
  range->end = parse_uint(offsets[1], what, "data_offsets", UINT64_MAX);

  const int64_t count = element_count(t.shape);
  const uint64_t size = dtype_size(t.dtype);
  if (count < 0 || static_cast<uint64_t>(count) > UINT64_MAX / size) {
    throw Error::corrupt(what + " has shape " + shape_text(t.shape) + " whose size overflows");
  }
  if (range->begin > range->end) {
    throw Error::corrupt(what + " has data_offsets [" + std::to_string(range->begin) + ", " +
                         std::to_string(range->end) + "] that end before they begin");
  }
  if (range->end > data_size) {
    throw Error::corrupt(what + " has data_offsets [" + std::to_string(range->begin) + ", " +
                         std::to_string(range->end) + "] outside the data section of " +
                         std::to_string(data_size) + " bytes");
  }
  if (range->end - range->begin != static_cast<uint64_t>(count) * size) {
    throw Error::corrupt(what + " has " + std::to_string(range->end - range->begin) +
                         " bytes of data but " + dtype_name(t.dtype) + " " + shape_text(t.shape) +
                         " needs " + std::to_string(static_cast<uint64_t>(count) * size));
  }
  return t;
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kF64: return "F64";
    case DType::kI64: return "I64";
    case DType::kI32: return "I32";
    case DType::kI16: return "I16";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kBool: return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF64:
    case DType::kI64: return 8;
    case DType::kF32:
    case DType::kI32: return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16: return 2;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool: return 1;
  }
  return 1;
}

std::vector<uint8_t> serialize_safetensors(const SafeTensors& st) {
  const FilePlan plan = plan_file(st, "safetensors");
  std::vector<uint8_t> out;
  out.reserve(plan.prefix.size() + plan.data_size);
  out.insert(out.end(), plan.prefix.begin(), plan.prefix.end());
  for (const TensorData* t : plan.order) out.insert(out.end(), t->bytes.begin(), t->bytes.end());
  return out;
}

SafeTensors parse_safetensors(const uint8_t* data, size_t size, std::string_view name_for_errors) {
  const std::string where = "weights '" + std::string(name_for_errors) + "'";
  if (size < 8) throw Error::corrupt(where + " is too short to be a safetensors file");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(data[i]) << (8 * i);
  if (n > kMaxHeader || n > size - 8) {
    throw Error::corrupt(where + ": header length " + std::to_string(n) +
                         " does not fit the file of " + std::to_string(size) + " bytes");
  }
  const json header = parse_header(data + 8, data + 8 + n, where);
  if (!header.is_object()) throw Error::corrupt(where + ": header is not a JSON object");

  SafeTensors st;
  const uint8_t* data_section = data + 8 + n;
  const uint64_t data_size = size - 8 - n;
  std::vector<Range> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      if (!entry.is_object()) throw Error::corrupt(where + ": __metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) {
          throw Error::corrupt(where + ": __metadata__ entry '" + k + "' is not a string");
        }
        st.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    Range range{};
    auto it = st.tensors.emplace(name, TensorData{}).first;
    range.name = &it->first;
    it->second = parse_entry(entry, where + ": tensor '" + name + "'", data_size, &range);
    ranges.push_back(range);
  }
  // The data section must be covered exactly once: no overlaps, gaps or trailing bytes. This
  // also bounds the copies below by the file's size, whatever the header claims.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return std::tie(a.begin, a.end, *a.name) < std::tie(b.begin, b.end, *b.name);
  });
  uint64_t covered = 0;
  for (const Range& r : ranges) {
    if (r.begin != covered) {
      throw Error::corrupt(
          where + ": tensor '" + *r.name + "' " +
          (r.begin < covered ? "overlaps the tensor before it" : "leaves a gap before it") +
          " at byte " + std::to_string(r.begin) + " of the data");
    }
    covered = r.end;
  }
  if (covered != data_size) {
    throw Error::corrupt(where + ": " + std::to_string(data_size - covered) +
                         " bytes of trailing data after the last tensor");
  }
  for (const Range& r : ranges) {
    TensorData& t = st.tensors.at(*r.name);
    t.bytes.assign(data_section + r.begin, data_section + r.end);
    if (t.dtype == DType::kBool &&
        std::any_of(t.bytes.begin(), t.bytes.end(), [](uint8_t b) { return b > 1; })) {
      throw Error::corrupt(where + ": tensor '" + *r.name + "' holds a BOOL other than 0 or 1");
    }
  }
  return st;
}

void write_safetensors(const std::string& path, const SafeTensors& st) {
  const FilePlan plan = plan_file(st, "weights '" + path + "'");
  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0)
    throw Error::io("cannot create a temporary file beside '" + path + "': " + errno_text());
  try {
    if (::fchmod(fd, 0644) != 0) throw Error::io("cannot chmod '" + tmp + "': " + errno_text());
    write_all(fd, plan.prefix.data(), plan.prefix.size(), tmp);
    for (const TensorData* t : plan.order) write_all(fd, t->bytes.data(), t->bytes.size(), tmp);
    if (::fsync(fd) != 0) throw Error::io("cannot sync '" + tmp + "': " + errno_text());
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw Error::io("cannot write '" + path + "': " + why);
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  sync_directory(dir.empty() ? "." : dir, path);
}

SafeTensors read_safetensors(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      throw Error::not_found("weights '" + path + "' do not exist");
    }
    throw Error::io("cannot open weights '" + path + "': " + errno_text());
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0 || S_ISDIR(info.st_mode)) {
    const std::string why = S_ISDIR(info.st_mode) ? "it is a folder" : errno_text();
    ::close(fd);
    throw Error::io("cannot read weights '" + path + "': " + why);
  }
  // One byte more than the size, so the read that sees the end needs no reallocation.
  std::vector<uint8_t> bytes(static_cast<size_t>(std::max<off_t>(info.st_size, 0)) + 1);
  size_t used = 0;
  for (;;) {
    if (used == bytes.size()) bytes.resize(bytes.size() * 2);
    const ssize_t r = ::read(fd, bytes.data() + used, bytes.size() - used);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const std::string why = errno_text();
      ::close(fd);
      throw Error::io("cannot read weights '" + path + "': " + why);
    }
    if (r == 0) break;
    used += static_cast<size_t>(r);
  }
  ::close(fd);
  bytes.resize(used);
  return parse_safetensors(bytes.data(), bytes.size(), path);
}

void check_tensor(const SafeTensors& st, const std::string& name, DType dtype,
                  const std::vector<int64_t>& shape, std::string_view file) {
  const std::string where = "weights '" + std::string(file) + "': tensor '" + name + "'";
  const auto it = st.tensors.find(name);
  if (it == st.tensors.end()) throw Error::mismatch(where + " is missing");
  if (it->second.dtype != dtype) {
    throw Error::mismatch(where + " is " + dtype_name(it->second.dtype) + ", expected " +
                          dtype_name(dtype));
  }
  if (it->second.shape != shape) {
    throw Error::mismatch(where + " has shape " + shape_text(it->second.shape) + ", expected " +
                          shape_text(shape));
  }
}

void check_no_extra_tensors(const SafeTensors& st, const std::set<std::string>& expected,
                            std::string_view file) {
  constexpr size_t kNamed = 3;  // enough to recognise the other model, short enough to read
  std::vector<const std::string*> extra;
  for (const auto& [name, t] : st.tensors) {
    if (!expected.count(name)) extra.push_back(&name);
  }
  if (extra.empty()) return;
  std::string message =
      "weights '" + std::string(file) + "': unexpected tensor" + (extra.size() > 1 ? "s " : " ");
  for (size_t i = 0; i < std::min(extra.size(), kNamed); ++i) {
    message += (i ? ", '" : "'") + *extra[i] + "'";
  }
  if (extra.size() > kNamed) message += " and " + std::to_string(extra.size() - kNamed) + " more";
  throw Error::mismatch(message + " (the weights belong to a different model configuration)");
}

}  // namespace mms
