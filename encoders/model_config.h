// The shape of a dual-encoder model: everything needed to build its layers before loading
// weights. Stored as config.json in a MODEL_DIR; unknown keys are rejected so that a typo in
// a config is an error, not a silently ignored setting.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mms {

struct ImageTowerConfig {
  int32_t image_size = 64;                          // input is [3, image_size, image_size]
  std::vector<int32_t> stem_channels{32, 64, 128};  // one stride-2 conv stage per entry
  int32_t stem_blocks = 1;  // residual 3x3 convs after each stage's stride-2 conv
  int32_t width = 192;      // transformer width
  int32_t depth = 4;
  int32_t heads = 3;
  // The stem's normalization: "batch" (BatchNorm, the shipped model's) or "group" (GroupNorm,
  // 8 groups: an image's features never depend on which other images share its batch).
  std::string stem_norm = "batch";
  std::vector<float> mean{0.5f, 0.5f, 0.5f};  // per-channel input normalization (0..1 input)
  std::vector<float> std{0.25f, 0.25f, 0.25f};
  // How an image is embedded at inference (training sees random crops, and its validation
  // score the whole input): the normalized mean of the embeddings of `views` views of the
  // input, the whole of it first, then squares of view_crop of its side cut from its corners
  // (3 views: top-left and bottom-right; 5: all four) and resized back to image_size
  // (bilinear). 1 is the whole input alone. More views cost as many encoder passes.
  int32_t views = 1;
  float view_crop = 0.85f;
};

struct TextTowerConfig {
  int32_t vocab_size = 8000;
  int32_t width = 192;
  int32_t depth = 4;
  int32_t heads = 3;
  int32_t window = 32;         // each token attends to tokens within this distance, plus token 0
  int32_t max_tokens = 16384;  // a serving bound, not a model limit (rotary positions)
};

struct ModelConfig {
  ImageTowerConfig image;
  TextTowerConfig text;
  int32_t embed_dim = 256;
  int32_t mlp_ratio = 4;
  float logit_scale_init = 2.6593f;  // ln(1 / 0.07)
  float logit_scale_max = 4.6052f;   // ln(100): the temperature never drops below 0.01

  // Number of image tokens the stem produces (side x side).
  int32_t image_grid() const;
};

// Parses config.json text; `name` appears in errors. Throws Error::corrupt / invalid_argument.
ModelConfig parse_model_config(const std::string& json_text, const std::string& name);
ModelConfig load_model_config(const std::string& path);
std::string model_config_to_json(const ModelConfig& config);

}  // namespace mms
