#include "tokenizer/tokenizer.h"

#include "tokenizer/spm_bridge.h"

#include <algorithm>
#include <cassert>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>

#include "common/error.h"
#include "tokenizer/status_message.h"

namespace mms {

std::string strip_check_prefix(const std::string& message) {
  const size_t open = message.find(") [");
  if (open == std::string::npos) return message;
  const size_t close = message.find("] ", open);
  if (close == std::string::npos) return message;
  return message.substr(close + 2);
}

// Owns a SentencePieceProcessor that lives inside the plugin (see spm_bridge.h).
class Processor {
 public:
  Processor() : handle_(spm::bridge().create()) {}
  ~Processor() { spm::bridge().destroy(handle_); }
  Processor(const Processor&) = delete;
  Processor& operator=(const Processor&) = delete;
  spm::Status load(std::string_view bytes) { return spm::bridge().load(handle_, std::string(bytes)); }
  int piece_size() const { return spm::bridge().piece_size(handle_); }
  int special_id(int which) const { return spm::bridge().special_id(handle_, which); }
  spm::Status encode(std::string_view text, std::vector<int>* ids) const {
    return spm::bridge().encode(handle_, text, ids);
  }
  spm::Status decode(const std::vector<int>& ids, std::string* text) const {
    return spm::bridge().decode(handle_, ids, text);
  }
  spm::Status nbest_encode(std::string_view text, int nbest,
                           std::vector<std::vector<int>>* ids) const {
    return spm::bridge().nbest_encode(handle_, text, nbest, ids);
  }

 private:
  void* handle_;
};

struct Tokenizer::Impl {
  Processor processor;
  int32_t vocab_size = 0;
  int32_t pad_id = -1;
  int32_t unk_id = -1;
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  bool has_nbest = false;  // a unigram model: others have one segmentation of a text

  // `what` names the model's origin in messages, e.g. "tokenizer model 'a/b.model'".
  static std::unique_ptr<Impl> parse(std::string_view bytes, const std::string& what);
};

std::unique_ptr<Tokenizer::Impl> Tokenizer::Impl::parse(std::string_view bytes,
                                                        const std::string& what) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->processor.load(bytes);
  if (!status.ok()) {
    const std::string reason = strip_check_prefix(status.message);
    throw Error::corrupt(what + " is not a SentencePiece model" +
                         (reason.empty() ? "" : " (" + reason + ")"));
  }
  impl->vocab_size = impl->processor.piece_size();
  impl->pad_id = impl->processor.special_id(0);
  impl->unk_id = impl->processor.special_id(1);
  impl->bos_id = impl->processor.special_id(2);
  impl->eos_id = impl->processor.special_id(3);
  std::vector<std::vector<int>> probe;  // SentencePiece refuses n-best to non-unigram models
  impl->has_nbest = impl->processor.nbest_encode("a", 2, &probe).ok();
  // Batching and the encoders' attention masks need all four special pieces.
  const std::pair<const char*, int32_t> specials[] = {{"<pad>", impl->pad_id},
                                                      {"<unk>", impl->unk_id},
                                                      {"<s>", impl->bos_id},
                                                      {"</s>", impl->eos_id}};
  for (const auto& [name, id] : specials) {
    if (id < 0 || id >= impl->vocab_size) {
      throw Error::unsupported(what + " has no " + name +
                               " piece; train one with `mmsearch tokenizer-train`, which reserves "
                               "pad=0, unk=1, bos=2, eos=3");
    }
  }
  return impl;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&& other) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&& other) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& model_path) {
  namespace fs = std::filesystem;
  const std::string what = "tokenizer model '" + model_path + "'";
  std::error_code ec;
  const auto status = fs::status(model_path, ec);
  if (!fs::exists(status)) throw Error::not_found(what + " does not exist");
  if (!fs::is_regular_file(status)) throw Error::invalid_argument(what + " is not a regular file");

  std::ifstream in(model_path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) throw Error::io("cannot read " + what);
  return Tokenizer(Impl::parse(bytes, what));
}

Tokenizer Tokenizer::load_from_bytes(std::string_view model_bytes) {
  return Tokenizer(Impl::parse(
      model_bytes, "tokenizer model bytes (" + std::to_string(model_bytes.size()) + " bytes)"));
}

namespace {

void check_encoded(const spm::Status& status, std::string_view text) {
  if (!status.ok()) {
    throw Error::internal("SentencePiece failed to encode a text of " +
                          std::to_string(text.size()) + " bytes: " + status.message);
  }
}

std::vector<int32_t> framed(const std::vector<int>& pieces, int32_t bos, int32_t eos) {
  std::vector<int32_t> ids;
  ids.reserve(pieces.size() + 2);
  ids.push_back(bos);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  ids.push_back(eos);
  return ids;
}

}  // namespace

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  assert(impl_ && "use of a moved-from Tokenizer");
  std::vector<int> pieces;
  check_encoded(impl_->processor.encode(text, &pieces), text);
  return framed(pieces, impl_->bos_id, impl_->eos_id);
}

std::vector<std::vector<int32_t>> Tokenizer::encode_nbest(std::string_view text, int32_t n) const {
  assert(impl_ && "use of a moved-from Tokenizer");
  if (n < 1)
    throw Error::invalid_argument("encode_nbest: n must be >= 1, not " + std::to_string(n));
  if (!impl_->has_nbest) return {encode(text)};
  std::vector<std::vector<int>> segmentations;
  check_encoded(impl_->processor.nbest_encode(text, n, &segmentations), text);
  std::vector<std::vector<int32_t>> out;
  out.reserve(segmentations.size());
  for (const auto& pieces : segmentations)
    out.push_back(framed(pieces, impl_->bos_id, impl_->eos_id));
  if (out.empty()) out.push_back(encode(text));  // SentencePiece gives none for an empty text
  return out;
}

TokenBatch Tokenizer::encode_batch(const std::vector<std::string>& texts) const {
  std::vector<std::vector<int32_t>> rows;
  rows.reserve(texts.size());
  TokenBatch batch;
  batch.lengths.reserve(texts.size());
  for (const auto& text : texts) {
    rows.push_back(encode(text));
    batch.lengths.push_back(static_cast<int32_t>(rows.back().size()));
    batch.max_len = std::max(batch.max_len, batch.lengths.back());
  }
  batch.ids.assign(texts.size() * static_cast<size_t>(batch.max_len), impl_->pad_id);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::copy(rows[i].begin(), rows[i].end(), batch.ids.begin() + i * batch.max_len);
  }
  return batch;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  assert(impl_ && "use of a moved-from Tokenizer");
  std::vector<int> pieces;
  pieces.reserve(ids.size());
  for (const int32_t id : ids) {
    if (id < 0 || id >= impl_->vocab_size) {
      throw Error::invalid_argument("token id " + std::to_string(id) +
                                    " is outside the tokenizer's vocabulary [0, " +
                                    std::to_string(impl_->vocab_size) + ")");
    }
    if (id == impl_->bos_id || id == impl_->eos_id || id == impl_->pad_id) continue;
    pieces.push_back(id);
  }
  std::string text;
  const auto status = impl_->processor.decode(pieces, &text);
  if (!status.ok()) {
    throw Error::internal("SentencePiece failed to decode " + std::to_string(ids.size()) +
                          " ids: " + status.message);
  }
  return text;
}

bool Tokenizer::has_nbest() const { return impl_->has_nbest; }

int32_t Tokenizer::vocab_size() const {
  return impl_->vocab_size;
}
int32_t Tokenizer::pad_id() const {
  return impl_->pad_id;
}
int32_t Tokenizer::unk_id() const {
  return impl_->unk_id;
}
int32_t Tokenizer::bos_id() const {
  return impl_->bos_id;
}
int32_t Tokenizer::eos_id() const {
  return impl_->eos_id;
}

}  // namespace mms
