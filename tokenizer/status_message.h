// Internal to tokenizer/: turns SentencePiece status messages into text fit for our errors.
#pragma once

#include <string>

namespace mms {

// SentencePiece prefixes failed checks with "src/file.cc(123) [condition] "; returns the
// sentence after that prefix (possibly empty), or `message` unchanged when it has none.
std::string strip_check_prefix(const std::string& message);

}  // namespace mms
