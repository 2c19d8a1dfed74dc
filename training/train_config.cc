#include "training/train_config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/json_read.h"

namespace mms {
namespace {

using nlohmann::json;

void apply_override(json& root, const std::string& assignment, const std::string& name) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw Error::invalid_argument("--set '" + assignment + "' is not of the form key=value");
  }
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;
  json* node = &root;
  std::stringstream path(key);
  std::string part;
  std::vector<std::string> parts;
  while (std::getline(path, part, '.')) parts.push_back(part);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (!node->is_object()) {
      throw Error::invalid_argument("--set '" + key + "': '" + parts[i] + "' is not an object in " +
                                    name);
    }
    node = &(*node)[parts[i]];
  }
  (*node)[parts.back()] = value;
}

void reject_unknown(const json& j, const std::set<std::string>& known, const std::string& where,
                    const std::string& name) {
  if (!j.is_object()) {
    throw Error::invalid_argument("train config '" + name + "': '" + where + "' must be an object");
  }
  for (const auto& [key, value] : j.items()) {
    if (!known.count(key)) {
      throw Error::invalid_argument("train config '" + name + "': unknown key '" + where + key +
                                    "'");
    }
  }
}

// A probability-like setting: [0, 1), so that 1 (drop every keyword, never move the
// average) is refused along with negatives and NaN.
void require_unit_interval(double value, const char* key, const std::string& name) {
  if (!(value >= 0 && value < 1)) {
    throw Error::invalid_argument("train config '" + name + "': " + key + " must be in [0, 1)");
  }
}

template <typename T>
void read(const json& j, const char* key, T& out) {
  if (j.contains(key)) out = json_get<T>(j.at(key), key);
}

}  // namespace

TrainConfig parse_train_config(const std::string& json_text, const std::string& name,
                               const std::vector<std::string>& overrides) {
  TrainConfig c;
  try {
    json j = json::parse(json_text);
    if (!j.is_object()) throw Error::corrupt("train config '" + name + "' is not a JSON object");
    for (const std::string& o : overrides) apply_override(j, o, name);
    reject_unknown(j, {"model", "tokenizer", "data", "cache_dir", "train", "augment"}, "", name);
    if (j.contains("model")) c.model = parse_model_config(j.at("model").dump(), name + ": model");
    read(j, "tokenizer", c.tokenizer);
    read(j, "cache_dir", c.cache_dir);
    if (j.contains("data")) {
      for (const json& d : j.at("data")) {
        reject_unknown(d, {"name", "path", "max_per_epoch", "repeats"}, "data[].", name);
        TrainDataSource s;
        s.name = d.at("name").get<std::string>();
        s.path = d.at("path").get<std::string>();
        read(d, "max_per_epoch", s.max_per_epoch);
        read(d, "repeats", s.repeats);
        if (s.repeats < 1 || s.repeats > 100) {
          throw Error::invalid_argument("train config '" + name + "': data '" + s.name +
                                        "' repeats must be 1..100");
        }
        c.data.push_back(s);
      }
    }
    if (j.contains("train")) {
      const json& t = j.at("train");
      reject_unknown(t,
                     {"epochs", "batch_size", "accum_steps", "lr", "min_lr_ratio", "weight_decay",
                      "warmup_steps", "grad_clip", "seed", "checkpoint_every", "max_train_tokens",
                      "loader_threads", "eval_max_images", "label_positives", "batch_by_source",
                      "ema_decay", "keyword_positives", "caption_and_view", "init_from",
                      "precision", "bfloat16_until"},
                     "train.", name);
      read(t, "epochs", c.epochs);
      read(t, "batch_size", c.batch_size);
      read(t, "accum_steps", c.accum_steps);
      read(t, "lr", c.lr);
      read(t, "min_lr_ratio", c.min_lr_ratio);
      read(t, "weight_decay", c.weight_decay);
      read(t, "warmup_steps", c.warmup_steps);
      read(t, "grad_clip", c.grad_clip);
      read(t, "seed", c.seed);
      read(t, "checkpoint_every", c.checkpoint_every);
      read(t, "max_train_tokens", c.max_train_tokens);
      read(t, "loader_threads", c.loader_threads);
      read(t, "eval_max_images", c.eval_max_images);
      read(t, "label_positives", c.label_positives);
      read(t, "batch_by_source", c.batch_by_source);
      read(t, "ema_decay", c.ema_decay);
      read(t, "keyword_positives", c.keyword_positives);
      read(t, "caption_and_view", c.caption_and_view);
      read(t, "init_from", c.init_from);
      read(t, "precision", c.precision);
      read(t, "bfloat16_until", c.bfloat16_until);
    }
    if (j.contains("augment")) {
      const json& a = j.at("augment");
      reject_unknown(
          a,
          {"crop_scale_min", "crop_ratio", "jitter", "hflip", "keyword_drop", "keyword_shuffle",
           "views", "view_two_keywords", "view_templates", "subword_nbest", "subword_prob"},
          "augment.", name);
      read(a, "crop_scale_min", c.augment.crop_scale_min);
      read(a, "crop_ratio", c.augment.crop_ratio);
      read(a, "jitter", c.augment.jitter);
      read(a, "hflip", c.augment.hflip);
      read(a, "keyword_drop", c.augment.keyword_drop);
      read(a, "keyword_shuffle", c.augment.keyword_shuffle);
      read(a, "view_two_keywords", c.augment.view_two_keywords);
      read(a, "view_templates", c.augment.view_templates);
      read(a, "subword_nbest", c.augment.subword_nbest);
      read(a, "subword_prob", c.augment.subword_prob);
      if (a.contains("views")) {
        const json& v = a.at("views");
        reject_unknown(v, {"caption", "title", "keywords", "names"}, "augment.views.", name);
        read(v, "caption", c.augment.view_caption);
        read(v, "title", c.augment.view_title);
        read(v, "keywords", c.augment.view_keywords);
        read(v, "names", c.augment.view_names);
      }
    }
  } catch (const json::exception& e) {
    throw Error::invalid_argument("train config '" + name + "' is not valid: " + e.what());
  }
  if (c.tokenizer.empty())
    throw Error::invalid_argument("train config '" + name + "': 'tokenizer' is required");
  if (c.data.empty())
    throw Error::invalid_argument("train config '" + name + "': 'data' lists no manifest");
  if (c.epochs < 1 || c.batch_size < 2 || c.accum_steps < 1 || c.lr <= 0 ||
      c.checkpoint_every < 1 || c.loader_threads < 1) {
    throw Error::invalid_argument("train config '" + name +
                                  "': epochs, accum_steps, checkpoint_every and loader_threads "
                                  "must be >= 1, batch_size >= 2 and lr > 0");
  }
  if (c.precision != "auto" && c.precision != "float32" && c.precision != "bfloat16") {
    throw Error::invalid_argument("train config '" + name + "': train.precision '" + c.precision +
                                  "' is not one of auto, float32, bfloat16");
  }
  if (!(c.bfloat16_until > 0 && c.bfloat16_until <= 1)) {
    throw Error::invalid_argument("train config '" + name +
                                  "': train.bfloat16_until must be in (0, 1]");
  }
  require_unit_interval(c.augment.keyword_drop, "augment.keyword_drop", name);
  require_unit_interval(c.ema_decay, "train.ema_decay", name);
  require_unit_interval(c.augment.view_two_keywords, "augment.view_two_keywords", name);
  require_unit_interval(c.augment.subword_prob, "augment.subword_prob", name);
  if (c.augment.subword_nbest < 1 || c.augment.subword_nbest > 64) {
    throw Error::invalid_argument("train config '" + name +
                                  "': augment.subword_nbest must be in [1, 64]");
  }
  const AugmentConfig& a = c.augment;
  if (!(a.view_caption >= 0 && a.view_title >= 0 && a.view_keywords >= 0 && a.view_names >= 0) ||
      !(a.view_caption + a.view_title + a.view_keywords + a.view_names > 0)) {
    throw Error::invalid_argument("train config '" + name +
                                  "': augment.views weights must be >= 0 with a positive sum");
  }
  if (a.view_templates.empty()) {
    throw Error::invalid_argument("train config '" + name + "': augment.view_templates is empty");
  }
  for (const std::string& t : a.view_templates) {
    if (t.find("{}") == std::string::npos) {
      throw Error::invalid_argument("train config '" + name + "': augment.view_templates entry '" +
                                    t + "' has no {}");
    }
  }
  return c;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) throw Error::not_found("train config '" + path + "' does not exist or is unreadable");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return parse_train_config(buffer.str(), path, overrides);
}

std::string train_config_to_json(const TrainConfig& c) {
  json data = json::array();
  for (const TrainDataSource& s : c.data) {
    data.push_back({{"name", s.name},
                    {"path", s.path},
                    {"max_per_epoch", s.max_per_epoch},
                    {"repeats", s.repeats}});
  }
  json j = {
      {"model", json::parse(model_config_to_json(c.model))},
      {"tokenizer", c.tokenizer},
      {"data", data},
      {"cache_dir", c.cache_dir},
      {"train",
       {{"epochs", c.epochs},
        {"batch_size", c.batch_size},
        {"accum_steps", c.accum_steps},
        {"lr", c.lr},
        {"min_lr_ratio", c.min_lr_ratio},
        {"weight_decay", c.weight_decay},
        {"warmup_steps", c.warmup_steps},
        {"grad_clip", c.grad_clip},
        {"seed", c.seed},
        {"checkpoint_every", c.checkpoint_every},
        {"max_train_tokens", c.max_train_tokens},
        {"loader_threads", c.loader_threads},
        {"eval_max_images", c.eval_max_images},
        {"label_positives", c.label_positives},
        {"batch_by_source", c.batch_by_source},
        {"ema_decay", c.ema_decay},
        {"keyword_positives", c.keyword_positives},
        {"caption_and_view", c.caption_and_view},
        {"init_from", c.init_from},
        {"precision", c.precision},
        {"bfloat16_until", c.bfloat16_until}}},
      {"augment",
       {{"crop_scale_min", c.augment.crop_scale_min},
        {"crop_ratio", c.augment.crop_ratio},
        {"jitter", c.augment.jitter},
        {"hflip", c.augment.hflip},
        {"keyword_drop", c.augment.keyword_drop},
        {"keyword_shuffle", c.augment.keyword_shuffle},
        {"views",
         {{"caption", c.augment.view_caption},
          {"title", c.augment.view_title},
          {"keywords", c.augment.view_keywords},
          {"names", c.augment.view_names}}},
        {"view_two_keywords", c.augment.view_two_keywords},
        {"view_templates", c.augment.view_templates},
        {"subword_nbest", c.augment.subword_nbest},
        {"subword_prob", c.augment.subword_prob}}},
  };
  return j.dump(2) + "\n";
}

}  // namespace mms
