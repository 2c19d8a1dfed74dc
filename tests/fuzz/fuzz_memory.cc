// Fuzzes parse_memory (encoders/memory.h), the reader of a MODEL_DIR's memory.safetensors
// (safetensors, then the memory's own layout and settings), at dimension 4 so that small
// seeds are valid memories. Findings: a crash, a sanitizer report (UBSan: a setting cast out
// of range), a non-Error exception (std::out_of_range from a map lookup, a c10::Error), or
// a memory that parses yet breaks its invariants: keys of [n, dim], pairs inside them, and
// settings that check_memory_settings accepts.
#include "encoders/memory.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  constexpr int32_t kDim = 4;
  EmbeddingMemory m;
  if (!fuzz::parses([&] { m = parse_memory(data, size, "fuzz", kDim); })) return 0;
  check(m.dim == kDim, "parsed memory has another dimension");
  check(m.image_keys.size() % kDim == 0 && m.text_keys.size() % kDim == 0,
        "keys are not rows of dim");
  for (const auto& [image, text] : m.pairs) {
    check(image >= 0 && image < m.n_images() && text >= 0 && text < m.n_texts(),
          "a pair points outside the keys");
  }
  check(fuzz::parses([&] { check_memory_settings(m.settings); }),
        "parsed memory has settings check_memory_settings refuses");
  return 0;
}
