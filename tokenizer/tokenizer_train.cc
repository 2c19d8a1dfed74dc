// train_tokenizer: SentencePiece training with the ids and normalization the rest of mmsearch
// relies on, SentencePiece's status codes translated to mms::Error, and an atomic write.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "common/error.h"
#include "common/file_io.h"
#include "tokenizer/spm_bridge.h"
#include "tokenizer/status_message.h"
#include "tokenizer/tokenizer.h"

namespace mms {
namespace {

namespace fs = std::filesystem;

std::string quoted(const std::string& path) {
  return "'" + path + "'";
}

// Enough digits for SentencePiece's float fields, and 0.9995 still prints as "0.9995".
std::string to_text(double value) {
  std::ostringstream out;
  out.precision(9);
  out << value;
  return out.str();
}

// Whether `line` holds a character that survives nmt_nfkc_cf normalization. Conservative
// about invisibles: controls, Unicode spaces, zero-width and format characters, variation
// selectors and BOMs vanish. Malformed UTF-8 counts as visible (it becomes U+FFFD).
bool has_visible_character(std::string_view line) {
  size_t i = 0;
  while (i < line.size()) {
    const auto byte = static_cast<unsigned char>(line[i]);
    if (byte < 0x80) {
      if (byte > 0x20 && byte < 0x7F) return true;
      ++i;
      continue;
    }
    const int extra = byte >= 0xF8   ? -1
                      : byte >= 0xF0 ? 3
                      : byte >= 0xE0 ? 2
                      : byte >= 0xC0 ? 1
                                     : -1;
    if (extra < 0 || i + extra >= line.size()) return true;
    uint32_t code = byte & (0x3F >> extra);
    for (int k = 1; k <= extra; ++k) {
      const auto next = static_cast<unsigned char>(line[i + k]);
      if ((next & 0xC0) != 0x80) return true;
      code = (code << 6) | (next & 0x3F);
    }
    const bool invisible =
        code <= 0xA0 || code == 0xAD || code == 0x1680 || (code >= 0x2000 && code <= 0x200F) ||
        (code >= 0x2028 && code <= 0x202F) || (code >= 0x205F && code <= 0x206F) ||
        code == 0x3000 || (code >= 0xFE00 && code <= 0xFE0F) || code == 0xFEFF;
    if (!invisible) return true;
    i += extra + 1;
  }
  return false;
}

// SentencePiece's unigram trainer aborts the whole process (CHECK, not a status) when no
// training line survives normalization, so make sure one does before calling it. Stops at
// the first usable line, which on a real corpus is the first line.
bool has_usable_line(const std::string& corpus_path, int32_t max_sentence_length) {
  std::ifstream in(corpus_path, std::ios::binary);
  if (!in) throw Error::io("cannot read corpus " + quoted(corpus_path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() <= static_cast<size_t>(max_sentence_length) && has_visible_character(line)) {
      return true;
    }
  }
  if (in.bad()) throw Error::io("cannot read corpus " + quoted(corpus_path));
  return false;
}

void check_options(const TokenizerTrainOptions& o) {
  const std::string corpus = "corpus " + quoted(o.corpus_path);
  std::error_code ec;
  const auto status = fs::status(o.corpus_path, ec);
  if (!fs::exists(status)) throw Error::not_found(corpus + " does not exist");
  if (!fs::is_regular_file(status))
    throw Error::invalid_argument(corpus + " is not a regular file");
  if (fs::file_size(o.corpus_path, ec) == 0 && !ec)
    throw Error::invalid_argument(corpus + " is empty");

  if (o.out_path.empty()) throw Error::invalid_argument("tokenizer output path is empty");
  if (o.vocab_size <= 4) {
    throw Error::invalid_argument("vocab_size " + std::to_string(o.vocab_size) +
                                  " is too small: 4 ids are reserved for pad, unk, bos and eos");
  }
  if (o.model_type != "unigram" && o.model_type != "bpe" && o.model_type != "word" &&
      o.model_type != "char") {
    throw Error::invalid_argument("model_type '" + o.model_type +
                                  "' is not one of unigram, bpe, word, char");
  }
  if (!(o.character_coverage > 0.0 && o.character_coverage <= 1.0)) {
    throw Error::invalid_argument("character_coverage " + to_text(o.character_coverage) +
                                  " is outside (0, 1]");
  }
  if (o.input_sentence_size < 0) {
    throw Error::invalid_argument("input_sentence_size " + std::to_string(o.input_sentence_size) +
                                  " is negative");
  }
  if (o.max_sentence_length <= 0) {
    throw Error::invalid_argument("max_sentence_length " + std::to_string(o.max_sentence_length) +
                                  " must be positive");
  }
  if (o.num_threads < 0) {
    throw Error::invalid_argument("num_threads " + std::to_string(o.num_threads) + " is negative");
  }
  if (!has_usable_line(o.corpus_path, o.max_sentence_length)) {
    throw Error::invalid_argument(corpus + " has no usable line: every line is blank or longer " +
                                  "than max_sentence_length " +
                                  std::to_string(o.max_sentence_length) + " bytes");
  }
}

[[noreturn]] void throw_training_error(const spm::Status& status,
                                       const TokenizerTrainOptions& o) {
  const std::string raw = status.message;
  const std::string reason = strip_check_prefix(raw);
  const std::string corpus = "corpus " + quoted(o.corpus_path);
  const std::string vocab = "vocab_size " + std::to_string(o.vocab_size);
  if (raw.find("Vocabulary size too high") != std::string::npos) {
    throw Error::invalid_argument(vocab + " is too large for " + corpus + ": " + reason);
  }
  if (raw.find("Vocabulary size is smaller than required_chars") != std::string::npos) {
    throw Error::invalid_argument(vocab + " is too small for the characters of " + corpus + ": " +
                                  reason);
  }
  if (status.code == spm::kStatusNotFound) {
    throw Error::not_found(corpus + " could not be opened: " + reason);
  }
  throw Error::internal("SentencePiece failed to train on " + corpus + ": " + reason);
}


}  // namespace

void train_tokenizer(const TokenizerTrainOptions& o) {
  check_options(o);
  const int32_t threads =
      o.num_threads > 0 ? o.num_threads
                        : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  const std::unordered_map<std::string, std::string> args = {
      {"input", o.corpus_path},
      {"model_type", o.model_type},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"character_coverage", to_text(o.character_coverage)},
      {"input_sentence_size", std::to_string(o.input_sentence_size)},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", std::to_string(o.max_sentence_length)},
      {"byte_fallback", o.byte_fallback ? "true" : "false"},
      {"num_threads", std::to_string(threads)},
      {"normalization_rule_name", "nmt_nfkc_cf"},
      {"pad_id", "0"},
      {"unk_id", "1"},
      {"bos_id", "2"},
      {"eos_id", "3"},
      // Sets SentencePiece's process-wide level and leaves it there; 2 keeps only errors,
      // which come back to us as a status anyway.
      {"minloglevel", o.verbose ? "0" : "2"},
  };
  // With no model_prefix SentencePiece hands the model back instead of writing files, so we
  // control where and how it lands.
  std::string model_bytes;
  const auto status = spm::bridge().train(args, &model_bytes);
  if (!status.ok()) throw_training_error(status, o);
  write_file_atomically(o.out_path, model_bytes);
}

}  // namespace mms
