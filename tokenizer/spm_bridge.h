// The narrow door to SentencePiece. Debian's libsentencepiece carries (and exports) its own
// protobuf 3.14, while LibTorch loads the system protobuf 3.21: in one symbol namespace the
// two crash at start-up. So SentencePiece lives in a plugin, libmms_spm.so, that the
// tokenizer loads with dlopen(RTLD_LOCAL | RTLD_DEEPBIND): the plugin and SentencePiece bind
// to their own protobuf and nobody else sees it. Both sides are built together by this
// project with one compiler and libstdc++, so plain C++ types cross the door; exceptions do
// not (every call returns a Status).
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mms::spm {

struct Status {
  int code = 0;  // sentencepiece::util::StatusCode: 0 ok, 5 not found, ...
  std::string message;
  bool ok() const { return code == 0; }
};
constexpr int kStatusNotFound = 5;

struct Bridge {
  int abi_version;
  void* (*create)();            // a new, empty SentencePieceProcessor
  void (*destroy)(void* processor);
  Status (*load)(void* processor, const std::string& model_bytes);
  int (*piece_size)(const void* processor);
  // which: 0 pad, 1 unk, 2 bos, 3 eos
  int (*special_id)(const void* processor, int which);
  Status (*encode)(const void* processor, std::string_view text, std::vector<int>* ids);
  Status (*decode)(const void* processor, const std::vector<int>& ids, std::string* text);
  Status (*train)(const std::unordered_map<std::string, std::string>& args,
                  std::string* model_bytes);
  // The nbest most likely segmentations, the best first (SentencePiece's NBestEncode).
  Status (*nbest_encode)(const void* processor, std::string_view text, int nbest,
                         std::vector<std::vector<int>>* ids);
};

constexpr int kAbiVersion = 2;

// Loads the plugin once (thread-safe) and returns its table. Throws Error::internal naming
// the plugin path when it cannot be loaded.
const Bridge& bridge();

}  // namespace mms::spm

extern "C" const mms::spm::Bridge* mms_spm_bridge();
