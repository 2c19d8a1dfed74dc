// SentencePiece tokenizer: trains a model from a text corpus and turns text into the token
// ids the text encoder reads. Every sequence is [BOS, pieces..., EOS] with no length limit
// (the text encoder's sliding-window attention takes any length); batches are padded with
// PAD. Models trained here have fixed ids pad=0, unk=1, bos=2, eos=3 and normalize text with
// NFKC + case folding (SentencePiece's `nmt_nfkc_cf`), so decode returns lower-case text with
// whitespace collapsed, and ids match the stock `spm_encode --output_format=id` tool.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace mms {

// Token ids of several texts padded to a rectangle.
struct TokenBatch {
  // [batch, max_len] row-major; row i holds lengths[i] ids (BOS ... EOS), then PAD.
  std::vector<int32_t> ids;
  // [batch] number of real ids per row, BOS and EOS included (so always >= 2).
  std::vector<int32_t> lengths;
  // Longest row; 0 for an empty batch.
  int32_t max_len = 0;

  int32_t batch_size() const { return static_cast<int32_t>(lengths.size()); }
};

// A loaded SentencePiece model. Immutable after load: encode, encode_batch, decode and the
// id accessors are const and safe to call concurrently from any number of threads.
// Movable, not copyable; a moved-from Tokenizer may only be destroyed or assigned to.
class Tokenizer {
 public:
  // Loads a `.model` file. Throws Error: not_found if `model_path` does not exist,
  // invalid_argument if it is not a regular file, io if it cannot be read, corrupt if it is
  // not a SentencePiece model, unsupported if the model lacks a <pad>, <unk>, <s> or </s>
  // piece (stock `spm_train` leaves <pad> out unless asked; train with train_tokenizer).
  static Tokenizer load(const std::string& model_path);

  // Same as load, from the bytes of a `.model` file (a serialized ModelProto).
  static Tokenizer load_from_bytes(std::string_view model_bytes);

  Tokenizer(Tokenizer&& other) noexcept;
  Tokenizer& operator=(Tokenizer&& other) noexcept;
  ~Tokenizer();

  // Ids of `text` (UTF-8, any length, never truncated) as [BOS, pieces..., EOS]. Empty or
  // all-whitespace text gives [BOS, EOS]. Malformed UTF-8 does not throw: each bad byte is
  // read as U+FFFD and becomes UNK; characters the model never saw also become UNK.
  std::vector<int32_t> encode(std::string_view text) const;

  // Up to n segmentations of `text`, the most likely first (that one is encode(text)), each
  // framed as encode's. Every one decodes to the same text: they differ only in how the
  // words are cut into pieces ("apple" as one piece, or "app" + "le"). Training draws from
  // them (augment.subword_nbest) so the text tower learns words from their pieces too, which
  // is all it has for a word no training caption holds. A model other than unigram (bpe,
  // word, char) cuts a text one way only: {encode(text)}. Throws Error::invalid_argument for
  // n < 1.
  std::vector<std::vector<int32_t>> encode_nbest(std::string_view text, int32_t n) const;
  // Whether encode_nbest can give more than one segmentation (a unigram model).
  bool has_nbest() const;

  // encode() of each text, padded with PAD to the longest; see TokenBatch for the layout.
  TokenBatch encode_batch(const std::vector<std::string>& texts) const;

  // Text of `ids`, skipping BOS, EOS and PAD anywhere in the sequence (so a padded row of a
  // TokenBatch decodes as is). UNK decodes as " ⁇ ". Throws Error::invalid_argument naming
  // the first id outside [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids) const;

  int32_t vocab_size() const;
  int32_t pad_id() const;
  int32_t unk_id() const;
  int32_t bos_id() const;
  int32_t eos_id() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

struct TokenizerTrainOptions {
  // UTF-8 text, one sentence (caption, title, ...) per line.
  std::string corpus_path;
  // Pieces in the model, including the 4 reserved ids (pad, unk, bos, eos).
  int32_t vocab_size = 8000;
  // The `.model` file to write; its folder is created if missing. Written atomically: a
  // reader sees either the old file or the complete new one. No `.vocab` side file is
  // written (`spm_export_vocab --model=FILE.model` prints the vocabulary when wanted).
  std::string out_path;
  // "unigram", "bpe", "word" or "char".
  std::string model_type = "unigram";
  // Fraction of the corpus' characters the model covers; rarer characters become UNK
  // (unless byte_fallback). Use 1.0 for small alphabets, ~0.9995 for CJK-rich corpora.
  double character_coverage = 0.9995;
  // Lines sampled from the corpus for training (0: all lines).
  int64_t input_sentence_size = 2'000'000;
  // Lines longer than this many bytes are left out of training (they still encode fine).
  int32_t max_sentence_length = 4192;
  // Spell characters outside the vocabulary as UTF-8 byte pieces instead of UNK. Takes 256
  // pieces of the vocabulary, so needs vocab_size well above 256.
  bool byte_fallback = false;
  // Trainer threads; 0 means all cores.
  int32_t num_threads = 0;
  // Print SentencePiece's training log to stderr (silent otherwise; failures throw either way).
  bool verbose = false;
};

// Trains a SentencePiece model on `options.corpus_path` and writes it to `options.out_path`.
// Throws Error: not_found if the corpus does not exist; invalid_argument if it is empty, has
// no usable line, or an option is out of range, including a vocab_size the corpus cannot
// fill or that cannot hold its characters (the message names the value and the corpus); io
// if the output cannot be written. Takes minutes on millions of lines; not meant to run
// concurrently with another train_tokenizer call (SentencePiece's log level is global).
void train_tokenizer(const TokenizerTrainOptions& options);

}  // namespace mms
