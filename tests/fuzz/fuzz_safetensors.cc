// Fuzzes parse_safetensors (encoders/safetensors.h), which reads model.safetensors and the
// memory file and "trusts nothing in the file". Findings: a crash, a sanitizer report, a
// non-Error exception (nlohmann's, std::length_error, std::bad_alloc from a claimed size),
// or a parsed file that breaks the reader's promises: each tensor holding exactly
// product(shape) * dtype_size bytes, and serialize -> parse giving the same tensors back.
#include "encoders/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  SafeTensors st;
  if (!fuzz::parses([&] { st = parse_safetensors(data, size, "fuzz"); })) return 0;
  for (const auto& [name, t] : st.tensors) {
    size_t n = 1;
    for (int64_t d : t.shape) n *= static_cast<size_t>(d);
    check(t.bytes.size() == n * dtype_size(t.dtype), "tensor bytes differ from shape x dtype");
  }
  // What was read must write back and read again unchanged (names may be any UTF-8).
  std::vector<uint8_t> again;
  if (!fuzz::parses([&] { again = serialize_safetensors(st); })) return 0;
  const SafeTensors back = parse_safetensors(again.data(), again.size(), "fuzz: rewritten");
  check(back.metadata == st.metadata, "metadata changed in a round trip");
  check(back.tensors.size() == st.tensors.size(), "tensor count changed in a round trip");
  for (const auto& [name, t] : st.tensors) {
    const auto it = back.tensors.find(name);
    check(it != back.tensors.end() && it->second.dtype == t.dtype && it->second.shape == t.shape &&
              it->second.bytes == t.bytes,
          "a tensor changed in a round trip");
  }
  return 0;
}
