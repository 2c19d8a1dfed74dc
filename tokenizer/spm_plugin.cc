// The SentencePiece side of spm_bridge.h, built as the plugin libmms_spm.so.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "tokenizer/spm_bridge.h"

namespace {

using mms::spm::Status;
using sentencepiece::SentencePieceProcessor;

Status from(const sentencepiece::util::Status& s) {
  return Status{static_cast<int>(s.code()), s.ok() ? std::string() : std::string(s.message())};
}

const SentencePieceProcessor& sp(const void* p) { return *static_cast<const SentencePieceProcessor*>(p); }

const mms::spm::Bridge kBridge = {
    mms::spm::kAbiVersion,
    [] { return static_cast<void*>(new SentencePieceProcessor()); },
    [](void* p) { delete static_cast<SentencePieceProcessor*>(p); },
    [](void* p, const std::string& bytes) {
      return from(static_cast<SentencePieceProcessor*>(p)->LoadFromSerializedProto(bytes));
    },
    [](const void* p) { return sp(p).GetPieceSize(); },
    [](const void* p, int which) {
      switch (which) {
        case 0: return sp(p).pad_id();
        case 1: return sp(p).unk_id();
        case 2: return sp(p).bos_id();
        default: return sp(p).eos_id();
      }
    },
    [](const void* p, std::string_view text, std::vector<int>* ids) {
      return from(sp(p).Encode(text, ids));
    },
    [](const void* p, const std::vector<int>& ids, std::string* text) {
      return from(sp(p).Decode(ids, text));
    },
    [](const std::unordered_map<std::string, std::string>& args, std::string* model_bytes) {
      return from(sentencepiece::SentencePieceTrainer::Train(args, nullptr, model_bytes));
    },
    [](const void* p, std::string_view text, int nbest, std::vector<std::vector<int>>* ids) {
      return from(sp(p).NBestEncode(text, nbest, ids));
    },
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const mms::spm::Bridge* mms_spm_bridge() {
  return &kBridge;
}
