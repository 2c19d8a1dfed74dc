#include "encoders/model_config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/json_read.h"

namespace mms {
namespace {

using nlohmann::json;

void reject_unknown(const json& j, const std::set<std::string>& known, const std::string& where,
                    const std::string& name) {
  for (const auto& [key, value] : j.items()) {
    if (!known.count(key)) {
      throw Error::invalid_argument("model config '" + name + "': unknown key '" + where + key +
                                    "'");
    }
  }
}

template <typename T>
void read(const json& j, const char* key, T& out) {
  if (j.contains(key)) out = json_get<T>(j.at(key), key);
}

void require_positive(int64_t value, const std::string& key, const std::string& name) {
  if (value <= 0) {
    throw Error::invalid_argument("model config '" + name + "': '" + key +
                                  "' must be positive, got " + std::to_string(value));
  }
}

}  // namespace

int32_t ModelConfig::image_grid() const {
  int32_t side = image.image_size;
  for (size_t i = 0; i < image.stem_channels.size(); ++i) side = (side + 1) / 2;
  return side;
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& name) {
  ModelConfig c;
  try {
    const json j = json::parse(json_text);
    if (!j.is_object()) throw Error::corrupt("model config '" + name + "' is not a JSON object");
    reject_unknown(j,
                   {"image", "text", "embed_dim", "mlp_ratio", "logit_scale_init",
                    "logit_scale_max", "format"},
                   "", name);
    if (j.contains("image")) {
      const json& im = j.at("image");
      reject_unknown(im,
                     {"image_size", "stem_channels", "stem_blocks", "stem_norm", "width", "depth",
                      "heads", "mean", "std", "views", "view_crop"},
                     "image.", name);
      read(im, "image_size", c.image.image_size);
      read(im, "stem_channels", c.image.stem_channels);
      read(im, "stem_blocks", c.image.stem_blocks);
      read(im, "stem_norm", c.image.stem_norm);
      read(im, "width", c.image.width);
      read(im, "depth", c.image.depth);
      read(im, "heads", c.image.heads);
      read(im, "mean", c.image.mean);
      read(im, "std", c.image.std);
      read(im, "views", c.image.views);
      read(im, "view_crop", c.image.view_crop);
    }
    if (j.contains("text")) {
      const json& tx = j.at("text");
      reject_unknown(tx, {"vocab_size", "width", "depth", "heads", "window", "max_tokens"}, "text.",
                     name);
      read(tx, "vocab_size", c.text.vocab_size);
      read(tx, "width", c.text.width);
      read(tx, "depth", c.text.depth);
      read(tx, "heads", c.text.heads);
      read(tx, "window", c.text.window);
      read(tx, "max_tokens", c.text.max_tokens);
    }
    read(j, "embed_dim", c.embed_dim);
    read(j, "mlp_ratio", c.mlp_ratio);
    read(j, "logit_scale_init", c.logit_scale_init);
    read(j, "logit_scale_max", c.logit_scale_max);
  } catch (const json::exception& e) {
    throw Error::corrupt("model config '" + name + "' is not valid: " + e.what());
  }
  for (auto [value, key] : {std::pair<int64_t, const char*>{c.image.image_size, "image.image_size"},
                            {c.image.stem_blocks, "image.stem_blocks"},
                            {c.image.width, "image.width"},
                            {c.image.depth, "image.depth"},
                            {c.image.heads, "image.heads"},
                            {c.text.vocab_size, "text.vocab_size"},
                            {c.text.width, "text.width"},
                            {c.text.depth, "text.depth"},
                            {c.text.heads, "text.heads"},
                            {c.text.window, "text.window"},
                            {c.text.max_tokens, "text.max_tokens"},
                            {c.embed_dim, "embed_dim"},
                            {c.mlp_ratio, "mlp_ratio"}}) {
    require_positive(value, key, name);
  }
  if (c.image.width % c.image.heads || c.text.width % c.text.heads) {
    throw Error::invalid_argument("model config '" + name +
                                  "': width must be a multiple of heads in both towers");
  }
  if (c.text.width / c.text.heads % 2) {
    throw Error::invalid_argument("model config '" + name +
                                  "': text head size (width / heads) must be even for rotary "
                                  "positions");
  }
  if (c.image.stem_channels.empty() || c.image.mean.size() != 3 || c.image.std.size() != 3) {
    throw Error::invalid_argument("model config '" + name +
                                  "': image.stem_channels must be non-empty and image.mean / "
                                  "image.std must have 3 values");
  }
  if (c.image.stem_norm != "batch" && c.image.stem_norm != "group") {
    throw Error::invalid_argument("model config '" + name + "': image.stem_norm is '" +
                                  c.image.stem_norm + "'; it must be \"batch\" or \"group\"");
  }
  if (c.image.views != 1 && c.image.views != 3 && c.image.views != 5) {
    throw Error::invalid_argument("model config '" + name + "': image.views is " +
                                  std::to_string(c.image.views) + "; it must be 1, 3 or 5");
  }
  if (!(c.image.view_crop >= 0.5f && c.image.view_crop < 1.0f)) {
    throw Error::invalid_argument("model config '" + name + "': image.view_crop is " +
                                  std::to_string(c.image.view_crop) +
                                  "; it must be at least 0.5 and below 1");
  }
  const auto& channels = c.image.stem_channels;
  if (c.image.stem_norm == "group" &&
      std::any_of(channels.begin(), channels.end(), [](int32_t ch) { return ch % 8 != 0; })) {
    throw Error::invalid_argument("model config '" + name +
                                  "': image.stem_norm \"group\" needs stem_channels that are "
                                  "multiples of 8 (its 8 groups)");
  }
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error::not_found("model config '" + path + "' does not exist or is unreadable");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return parse_model_config(buffer.str(), path);
}

std::string model_config_to_json(const ModelConfig& c) {
  json j = {
      {"format", "mmsearch-dual-encoder-1"},
      {"image",
       {{"image_size", c.image.image_size},
        {"stem_channels", c.image.stem_channels},
        {"stem_blocks", c.image.stem_blocks},
        {"stem_norm", c.image.stem_norm},
        {"width", c.image.width},
        {"depth", c.image.depth},
        {"heads", c.image.heads},
        {"mean", c.image.mean},
        {"std", c.image.std}}},
      {"text",
       {{"vocab_size", c.text.vocab_size},
        {"width", c.text.width},
        {"depth", c.text.depth},
        {"heads", c.text.heads},
        {"window", c.text.window},
        {"max_tokens", c.text.max_tokens}}},
      {"embed_dim", c.embed_dim},
      {"mlp_ratio", c.mlp_ratio},
      {"logit_scale_init", c.logit_scale_init},
      {"logit_scale_max", c.logit_scale_max},
  };
  // Written only for a model embedded from several views, so that the configs of single-view
  // models (every model before views existed) stay byte for byte what they were.
  if (c.image.views != 1) {
    j["image"]["views"] = c.image.views;
    j["image"]["view_crop"] = c.image.view_crop;
  }
  return j.dump(2) + "\n";
}

}  // namespace mms
