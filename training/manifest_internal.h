// Helpers shared by the pair readers (manifest.cc, json_datasets.cc); not a public header.
// They keep one wording for every message: "<where>: <problem>", where <where> names the
// file and the line or JSON element.
#pragma once

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "training/manifest.h"

namespace mms::manifest_internal {

// Opens `path` for reading; `label` names the format in messages ("manifest",
// "COCO captions"). Throws Error::not_found, Error::invalid_argument (a directory) or
// Error::io (unreadable).
std::ifstream open_input(const std::string& path, const char* label);

// The absolute, normalized folder that relative image paths of `file` resolve against:
// `image_root` if given, else the folder holding `file`.
std::filesystem::path image_base(const std::string& file, const std::string& image_root);

// `image` resolved against `base` (absolute paths are kept) and lexically normalized.
std::string resolve_image(const std::filesystem::path& base, const std::filesystem::path& image);

// `text` without leading and trailing ASCII whitespace.
std::string trim(std::string_view text);

// A split as written in a data file: train, val, test, or Karpathy's restval (= train).
std::optional<Split> split_from_data(std::string_view name);

// nlohmann's parse-error text without its "[json.exception.parse_error.101] " prefix and
// with non-ASCII bytes escaped as \xNN.
std::string parse_error_text(const nlohmann::json::exception& error);

// "a string", "an array", ... for "must be X, not Y" messages.
std::string type_with_article(const nlohmann::json& value);

// object[key] when present and not null, else nullptr.
const nlohmann::json* find_value(const nlohmann::json& object, const char* key);

// object[key], which must be present; throws Error::corrupt "<where>: missing "key"".
const nlohmann::json& require_value(const nlohmann::json& object, const char* key,
                                    const std::string& where);

// object[key] as a string; throws Error::corrupt when it is missing or not a string.
const std::string& require_string(const nlohmann::json& object, const char* key,
                                  const std::string& where);

// An id written as an integer or a string, in decimal text; throws Error::corrupt else.
std::string id_text(const nlohmann::json& value, const char* key, const std::string& where);

}  // namespace mms::manifest_internal
