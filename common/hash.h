// Content fingerprints: a fast 64-bit FNV-1a hash, used to tell model weights and image files
// apart. Not cryptographic; collisions are only as unlikely as 64 random bits make them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mms {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;

// Continues a hash over `size` bytes at `data`; start from kFnvOffset.
uint64_t fnv1a64(const void* data, size_t size, uint64_t hash = kFnvOffset);

// 16 lower-case hex digits.
std::string hex64(uint64_t value);

}  // namespace mms
