// Split names, the JSONL manifest reader, the evaluation galleries, and the helpers that
// every reader shares (manifest_internal.h).
#include "training/manifest.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"
#include "training/manifest_internal.h"

namespace mms {

namespace manifest_internal {

namespace fs = std::filesystem;

std::ifstream open_input(const std::string& path, const char* label) {
  const std::string what = std::string(label) + " '" + path + "'";
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (status.type() == fs::file_type::not_found) throw Error::not_found(what + " does not exist");
  if (status.type() == fs::file_type::directory) {
    throw Error::invalid_argument(what + " is a directory, not a file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error::io(what + " cannot be opened: " + std::strerror(errno));
  return in;
}

fs::path image_base(const std::string& file, const std::string& image_root) {
  fs::path base = image_root.empty() ? fs::path(file).parent_path() : fs::path(image_root);
  base = base.empty() ? fs::current_path() : fs::absolute(base);
  return base.lexically_normal();
}

std::string resolve_image(const fs::path& base, const fs::path& image) {
  return (image.is_absolute() ? image : base / image).lexically_normal().string();
}

std::string trim(std::string_view text) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return "";
  const size_t end = text.find_last_not_of(kSpace);
  return std::string(text.substr(begin, end - begin + 1));
}

std::optional<Split> split_from_data(std::string_view name) {
  if (name == "train" || name == "restval") return Split::kTrain;
  if (name == "val") return Split::kVal;
  if (name == "test") return Split::kTest;
  return std::nullopt;
}

std::string parse_error_text(const nlohmann::json::exception& error) {
  const std::string text = error.what();
  const size_t end_of_tag = text.find("] ");
  // The "last read: '...'" excerpt can hold the very bytes that were not UTF-8; escape
  // them so the message stays printable and embeddable in a JSON error body.
  std::string clean;
  for (size_t i = end_of_tag == std::string::npos ? 0 : end_of_tag + 2; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {
      clean += text[i];
    } else {
      constexpr char kHex[] = "0123456789ABCDEF";
      clean += {'\\', 'x', kHex[byte >> 4], kHex[byte & 0xF]};
    }
  }
  return clean;
}

std::string type_with_article(const nlohmann::json& value) {
  const std::string name = value.type_name();
  const bool vowel = !name.empty() && std::strchr("aeiou", name[0]) != nullptr;
  return (vowel ? "an " : "a ") + name;
}

const nlohmann::json* find_value(const nlohmann::json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

const nlohmann::json& require_value(const nlohmann::json& object, const char* key,
                                    const std::string& where) {
  const auto it = object.find(key);
  if (it == object.end()) throw Error::corrupt(where + ": missing \"" + key + "\"");
  return *it;
}

const std::string& require_string(const nlohmann::json& object, const char* key,
                                  const std::string& where) {
  const nlohmann::json& value = require_value(object, key, where);
  if (!value.is_string()) {
    throw Error::corrupt(where + ": \"" + key + "\" must be a string, not " +
                         type_with_article(value));
  }
  return value.get_ref<const std::string&>();
}

std::string id_text(const nlohmann::json& value, const char* key, const std::string& where) {
  if (value.is_number_unsigned()) return std::to_string(value.get<uint64_t>());
  if (value.is_number_integer()) return std::to_string(value.get<int64_t>());
  if (value.is_string()) return value.get<std::string>();
  throw Error::corrupt(where + ": \"" + key + "\" must be an integer or a string, not " +
                       type_with_article(value));
}

}  // namespace manifest_internal

namespace mi = manifest_internal;

const char* split_name(Split split) {
  switch (split) {
    case Split::kTrain: return "train";
    case Split::kVal: return "val";
    case Split::kTest: return "test";
  }
  return "train";
}

Split parse_split(std::string_view name) {
  if (name == "train") return Split::kTrain;
  if (name == "val") return Split::kVal;
  if (name == "test") return Split::kTest;
  throw Error::invalid_argument("unknown split '" + std::string(name) +
                                "' (expected train, val or test)");
}

namespace {

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos;
}

// object[key] as a list of trimmed, non-empty strings (absent or null: empty); throws
// Error::corrupt when it is not an array of strings.
std::vector<std::string> string_list(const nlohmann::json& object, const char* key,
                                     const std::string& where) {
  std::vector<std::string> out;
  const nlohmann::json* value = mi::find_value(object, key);
  if (value == nullptr) return out;
  if (!value->is_array()) {
    throw Error::corrupt(where + ": \"" + key + "\" must be an array of strings, not " +
                         mi::type_with_article(*value));
  }
  for (const nlohmann::json& item : *value) {
    if (!item.is_string()) {
      throw Error::corrupt(where + ": \"" + key + "\" must hold only strings, not " +
                           mi::type_with_article(item));
    }
    std::string text = mi::trim(item.get_ref<const std::string&>());
    if (!text.empty()) out.push_back(std::move(text));
  }
  return out;
}

// One manifest line into a pair; `where` is "manifest 'PATH' line N".
Pair parse_manifest_line(const std::string& line, const std::filesystem::path& base,
                         const std::string& where) {
  nlohmann::json object;
  try {
    object = nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann counts lines within the parsed text, which is this one line; keep only the
    // column and the reason.
    std::string reason = mi::parse_error_text(e);
    const size_t column_end = reason.find(": ");
    if (reason.rfind("parse error", 0) == 0 && column_end != std::string::npos) {
      reason = reason.substr(column_end + 2);
    }
    throw Error::corrupt(where + ", column " + std::to_string(e.byte) +
                         ": invalid JSON: " + reason);
  } catch (const nlohmann::json::exception& e) {  // a number too large for a double, ...
    throw Error::corrupt(where + ": unreadable JSON: " + e.what());
  }
  if (!object.is_object()) {
    throw Error::corrupt(where + ": expected a JSON object, found " +
                         mi::type_with_article(object));
  }
  Pair pair;
  const std::string& image = mi::require_string(object, "image", where);
  if (mi::trim(image).empty()) throw Error::corrupt(where + ": empty image path");
  pair.image = mi::resolve_image(base, image);
  pair.caption = mi::trim(mi::require_string(object, "caption", where));
  if (pair.caption.empty()) throw Error::corrupt(where + ": empty caption");
  if (mi::find_value(object, "split") != nullptr) {
    const std::string& name = mi::require_string(object, "split", where);
    const std::optional<Split> split = mi::split_from_data(name);
    if (!split) {
      throw Error::corrupt(where + ": unknown split '" + name + "' (expected train, val or test)");
    }
    pair.split = *split;
  }
  if (mi::find_value(object, "group") != nullptr) {
    pair.group = mi::require_string(object, "group", where);
  }
  if (pair.group.empty()) pair.group = pair.image;
  if (mi::find_value(object, "label") != nullptr) {
    pair.label = mi::require_string(object, "label", where);
  }
  if (mi::find_value(object, "title") != nullptr) {
    pair.title = mi::trim(mi::require_string(object, "title", where));
  }
  pair.keywords = string_list(object, "keywords", where);
  pair.names = string_list(object, "names", where);
  return pair;
}

}  // namespace

std::vector<Pair> read_manifest(const std::string& path, const std::string& image_root) {
  std::ifstream in = mi::open_input(path, "manifest");
  const std::filesystem::path base = mi::image_base(path, image_root);
  const std::string head = "manifest '" + path + "' line ";
  std::vector<Pair> pairs;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (number == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // UTF-8 BOM
    if (is_blank(line)) continue;
    pairs.push_back(parse_manifest_line(line, base, head + std::to_string(number)));
  }
  if (in.bad()) throw Error::io("manifest '" + path + "' could not be read to the end");
  return pairs;
}

Gallery make_gallery(const std::vector<Pair>& pairs, Split split) {
  Gallery gallery;
  // Keys view the strings inside `pairs`, which outlive this function.
  std::unordered_map<std::string_view, int32_t> image_index, text_index;
  std::unordered_set<uint64_t> linked;
  for (const Pair& pair : pairs) {
    if (pair.split != split) continue;
    const auto [image_it, new_image] =
        image_index.emplace(pair.image, static_cast<int32_t>(gallery.images.size()));
    if (new_image) {
      gallery.images.push_back(pair.image);
      gallery.image_to_texts.emplace_back();
      gallery.image_labels.push_back(pair.label);
    }
    const auto [text_it, new_text] =
        text_index.emplace(pair.caption, static_cast<int32_t>(gallery.texts.size()));
    if (new_text) {
      gallery.texts.push_back(pair.caption);
      gallery.text_to_images.emplace_back();
    }
    const int32_t image = image_it->second, text = text_it->second;
    const uint64_t link = static_cast<uint64_t>(image) << 32 | static_cast<uint32_t>(text);
    if (!linked.insert(link).second) continue;  // the same pair listed twice
    gallery.image_to_texts[image].push_back(text);
    gallery.text_to_images[text].push_back(image);
  }
  for (auto& texts : gallery.image_to_texts) std::sort(texts.begin(), texts.end());
  for (auto& images : gallery.text_to_images) std::sort(images.begin(), images.end());
  const bool all_labelled = std::none_of(gallery.image_labels.begin(), gallery.image_labels.end(),
                                         [](const std::string& label) { return label.empty(); });
  if (!all_labelled) gallery.image_labels.clear();
  return gallery;
}

}  // namespace mms
