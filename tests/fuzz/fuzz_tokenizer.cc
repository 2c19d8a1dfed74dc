// Fuzzes Tokenizer::encode (tokenizer/tokenizer.h) on arbitrary bytes, with the shipped
// model's tokenizer (data/models/default/tokenizer.model), as a text query reaches it.
// encode promises not to throw on any input (malformed UTF-8 becomes UNK), so here any
// exception is a finding, as are a crash, a sanitizer report, ids that are not
// [BOS, ..., EOS] within the vocabulary, and decode refusing what encode produced.
#include <string>

#include "tests/fuzz/fuzz_support.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  static const Tokenizer tokenizer =
      Tokenizer::load(MMS_SOURCE_DIR "/data/models/default/tokenizer.model");
  const std::vector<int32_t> ids = tokenizer.encode(fuzz::as_text(data, size));
  check(ids.size() >= 2 && ids.front() == tokenizer.bos_id() && ids.back() == tokenizer.eos_id(),
        "ids are not [BOS, ..., EOS]");
  for (int32_t id : ids)
    check(id >= 0 && id < tokenizer.vocab_size(), "an id outside the vocabulary");
  tokenizer.decode(ids);
  return 0;
}
