// Base64 (RFC 4648, standard alphabet) for images sent inside JSON requests.
#pragma once

#include <string>
#include <string_view>

namespace mms {

// Decodes `text`; ASCII whitespace is skipped (line-wrapped input), padding is optional.
// Throws Error::invalid_argument naming `what` and the first bad character's position.
std::string base64_decode(std::string_view text, const std::string& what);

// The standard alphabet with '=' padding, no line breaks.
std::string base64_encode(std::string_view bytes);

}  // namespace mms
