// The whole-file JSON formats (COCO captions, Karpathy split), the format sniffer, and the
// read_pairs dispatcher. COCO and Karpathy files are parsed into one DOM; keys no reader
// uses (tokens, URLs, licenses) are dropped while parsing, which roughly halves the memory
// a Karpathy COCO file (about 140 MB) takes.
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"
#include "training/manifest.h"
#include "training/manifest_internal.h"

namespace mms {
namespace {

namespace mi = manifest_internal;
using nlohmann::json;

bool unused_key(const std::string& key) {
  static const std::unordered_set<std::string> kUnused = {
      "tokens", "sentids", "licenses", "info", "coco_url", "flickr_url", "date_captured"};
  return kUnused.count(key) != 0;
}

// Parses the whole file at `path`; `head` is "<label> 'PATH'" for messages.
json parse_json_file(const std::string& path, const char* label, const std::string& head) {
  std::ifstream in = mi::open_input(path, label);
  const json::parser_callback_t drop_unused = [](int, json::parse_event_t event, json& parsed) {
    return event != json::parse_event_t::key || !unused_key(parsed.get_ref<std::string&>());
  };
  json root;
  try {
    root = json::parse(in, drop_unused);
  } catch (const json::parse_error& e) {
    throw Error::corrupt(head + ": invalid JSON: " + mi::parse_error_text(e));
  } catch (const json::exception& e) {  // a number too large for a double, among others
    throw Error::corrupt(head + ": unreadable JSON: " + e.what());
  }
  if (in.bad()) throw Error::io(head + " could not be read to the end");
  if (!root.is_object()) {
    throw Error::corrupt(head + ": expected a JSON object at the top, found " +
                         mi::type_with_article(root));
  }
  return root;
}

// root[key], which must be an array.
const json& require_array(const json& root, const char* key, const std::string& head) {
  const json& value = mi::require_value(root, key, head);
  if (!value.is_array()) {
    throw Error::corrupt(head + ": \"" + key + "\" must be an array, not " +
                         mi::type_with_article(value));
  }
  return value;
}

// "<parent><separator><array>[<index>]", e.g. "Karpathy split 'x.json': images[3]" or
// "...: images[3].sentences[1]"; throws Error::corrupt unless that element is an object.
std::string element(const json& value, const std::string& parent, const char* separator,
                    const char* array, size_t index) {
  std::string where = parent + separator + array + "[" + std::to_string(index) + "]";
  if (!value.is_object()) {
    throw Error::corrupt(where + " must be an object, not " + mi::type_with_article(value));
  }
  return where;
}

std::string nonempty_caption(const std::string& raw, const std::string& where) {
  std::string caption = mi::trim(raw);
  if (caption.empty()) throw Error::corrupt(where + ": empty caption");
  return caption;
}

// Decides the format from the first JSON value in the file, stopping as soon as a key
// gives it away (the SAX interface of nlohmann::json; returning false stops the parse).
class FormatSniffer {
 public:
  std::optional<PairFormat> format;

  bool null() { return scalar(); }
  bool boolean(bool) { return scalar(); }
  bool number_integer(json::number_integer_t) { return scalar(); }
  bool number_unsigned(json::number_unsigned_t) { return scalar(); }
  bool number_float(json::number_float_t, const std::string&) { return scalar(); }
  bool string(std::string&) { return scalar(); }
  bool binary(json::binary_t&) { return scalar(); }
  bool start_object(size_t) { return open(); }
  bool start_array(size_t) { return depth_ == 0 ? decide(PairFormat::kManifest) : open(); }
  bool end_array() { return close(); }
  bool end_object() { return close(); }
  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception&) {
    return decide(PairFormat::kManifest);
  }

  bool key(std::string& name) {
    if (depth_ == 1) {
      if (name == "annotations") return decide(PairFormat::kCoco);
      if (name == "dataset") return decide(PairFormat::kKarpathy);
      if (name == "image" || name == "caption") return decide(PairFormat::kManifest);
      top_key_ = name;
      saw_images_ = saw_images_ || name == "images";
    } else if (depth_ == 3 && top_key_ == "images") {
      if (name == "file_name") return decide(PairFormat::kCoco);
      if (name == "filename" || name == "filepath" || name == "sentences") {
        return decide(PairFormat::kKarpathy);
      }
    }
    return true;
  }

 private:
  bool decide(PairFormat decided) {
    format = decided;
    return false;
  }
  bool scalar() { return depth_ == 0 ? decide(PairFormat::kManifest) : true; }
  bool open() {
    ++depth_;
    return true;
  }
  bool close() {
    if (--depth_ > 0) return true;
    // A whole object without a telling key: an "images" list can only be Karpathy's (whose
    // reader then names what is missing); anything else is a one-line manifest.
    return decide(saw_images_ ? PairFormat::kKarpathy : PairFormat::kManifest);
  }

  int depth_ = 0;
  std::string top_key_;
  bool saw_images_ = false;
};

}  // namespace

std::vector<Pair> read_coco_captions(const std::string& path, const std::string& image_root,
                                     Split split) {
  const std::string head = "COCO captions '" + path + "'";
  const json root = parse_json_file(path, "COCO captions", head);
  const std::filesystem::path base = mi::image_base(path, image_root);

  std::unordered_map<std::string, std::string> image_by_id;  // id text -> resolved path
  const json& images = require_array(root, "images", head);
  for (size_t i = 0; i < images.size(); ++i) {
    const std::string where = element(images[i], head, ": ", "images", i);
    std::string id = mi::id_text(mi::require_value(images[i], "id", where), "id", where);
    const std::string& file_name = mi::require_string(images[i], "file_name", where);
    if (file_name.empty()) throw Error::corrupt(where + ": empty \"file_name\"");
    const auto [it, added] = image_by_id.emplace(std::move(id), mi::resolve_image(base, file_name));
    if (!added) throw Error::corrupt(where + ": image id " + it->first + " appears twice");
  }

  const json& annotations = require_array(root, "annotations", head);
  std::vector<Pair> pairs;
  pairs.reserve(annotations.size());
  for (size_t i = 0; i < annotations.size(); ++i) {
    const json& annotation = annotations[i];
    std::string where = element(annotation, head, ": ", "annotations", i);
    if (const json* id = mi::find_value(annotation, "id")) {
      where += " (id " + mi::id_text(*id, "id", where) + ")";
    }
    std::string image_id =
        mi::id_text(mi::require_value(annotation, "image_id", where), "image_id", where);
    const auto image = image_by_id.find(image_id);
    if (image == image_by_id.end()) {
      throw Error::corrupt(where + ": unknown image_id " + image_id + " (not in \"images\")");
    }
    Pair pair;
    pair.image = image->second;
    pair.caption = nonempty_caption(mi::require_string(annotation, "caption", where), where);
    pair.split = split;
    pair.group = std::move(image_id);
    pairs.push_back(std::move(pair));
  }
  return pairs;
}

std::vector<Pair> read_karpathy_split(const std::string& path, const std::string& image_root) {
  const std::string head = "Karpathy split '" + path + "'";
  const json root = parse_json_file(path, "Karpathy split", head);
  const std::filesystem::path base = mi::image_base(path, image_root);

  const json& images = require_array(root, "images", head);
  std::vector<Pair> pairs;
  pairs.reserve(images.size() * 5);  // both data sets have five captions per image
  for (size_t i = 0; i < images.size(); ++i) {
    const json& image = images[i];
    const std::string where = element(image, head, ": ", "images", i);
    std::filesystem::path file = mi::require_string(image, "filename", where);
    if (file.empty()) throw Error::corrupt(where + ": empty \"filename\"");
    if (mi::find_value(image, "filepath") != nullptr) {
      file = std::filesystem::path(mi::require_string(image, "filepath", where)) / file;
    }
    const std::string image_path = mi::resolve_image(base, file);

    const std::string& split_text = mi::require_string(image, "split", where);
    const std::optional<Split> split = mi::split_from_data(split_text);
    if (!split) {
      throw Error::corrupt(where + ": unknown split '" + split_text +
                           "' (expected train, val, test or restval)");
    }
    std::string group = image_path;
    if (const json* id = mi::find_value(image, "cocoid")) {
      group = mi::id_text(*id, "cocoid", where);
    } else if (const json* id = mi::find_value(image, "imgid")) {
      group = mi::id_text(*id, "imgid", where);
    }

    const json& sentences = require_array(image, "sentences", where);
    for (size_t s = 0; s < sentences.size(); ++s) {
      const std::string sentence_where = element(sentences[s], where, ".", "sentences", s);
      Pair pair;
      pair.image = image_path;
      pair.caption =
          nonempty_caption(mi::require_string(sentences[s], "raw", sentence_where), sentence_where);
      pair.split = *split;
      pair.group = group;
      pairs.push_back(std::move(pair));
    }
  }
  return pairs;
}

PairFormat detect_pair_format(const std::string& path) {
  std::ifstream in = mi::open_input(path, "manifest");
  FormatSniffer sniffer;
  json::sax_parse(in, &sniffer, json::input_format_t::json, /*strict=*/false);
  if (in.bad()) throw Error::io("manifest '" + path + "' could not be read");
  // An empty file ends the parse without any event; it is an empty manifest.
  return sniffer.format.value_or(PairFormat::kManifest);
}

std::vector<Pair> read_pairs(const std::string& path, const std::string& image_root,
                             Split coco_split) {
  switch (detect_pair_format(path)) {
    case PairFormat::kManifest: return read_manifest(path, image_root);
    case PairFormat::kCoco: return read_coco_captions(path, image_root, coco_split);
    case PairFormat::kKarpathy: return read_karpathy_split(path, image_root);
  }
  return read_manifest(path, image_root);
}

}  // namespace mms
