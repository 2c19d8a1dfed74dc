// What `mmsearch train` reads: the model shape, the data, and the optimization settings, from
// one JSON file plus `--set key=value` overrides (dotted keys, values parsed as JSON where
// they parse, as strings otherwise). Unknown keys are errors, so a typo never trains the
// wrong thing for an hour.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "encoders/model_config.h"

namespace mms {

struct TrainDataSource {
  std::string name;           // "emoji", "openclipart", ...: names its figures in eval.json
  std::string path;           // a JSONL manifest (or COCO / Karpathy JSON)
  int64_t max_per_epoch = 0;  // train pairs drawn per epoch (0: all), a fresh sample each epoch
  // Passes over the source per epoch (each a fresh shuffle, each capped by max_per_epoch):
  // 2 weighs a small source that matters most twice as heavily as the others.
  int64_t repeats = 1;
};

struct AugmentConfig {
  float crop_scale_min = 0.6f;  // random resized crop keeps this much of the area at least
  float crop_ratio = 1.33f;     // aspect ratio range [1/r, r]
  float jitter = 0.2f;          // brightness, contrast and saturation factors in 1 +- jitter
  bool hflip = false;           // off by default: flipping breaks "left"/"right" captions
  // Caption augmentation for "<text> Keywords: a, b, c." captions (see augment_caption).
  float keyword_drop = 0.0f;     // each keyword is left out with this probability
  bool keyword_shuffle = false;  // the kept keywords come in a random order
  // Caption views (draw_caption in augment.h): each training row draws its text from the
  // whole caption, the title, one or two keywords, or another name, with these relative
  // weights; a view the pair lacks is skipped. The defaults keep the whole caption only.
  float view_caption = 1.0f;
  float view_title = 0.0f;
  float view_keywords = 0.0f;
  float view_names = 0.0f;
  float view_two_keywords = 0.3f;  // a keyword view names two keywords with this probability
  // Prompt templates for title and keyword views, "{}" standing for the words; "a {}" becomes
  // "an {}" before a vowel.
  std::vector<std::string> view_templates = {"{}", "a {}", "a picture of a {}",
                                             "a drawing of a {}", "an image of a {}"};
  // Subword sampling: with probability subword_prob a training text (caption or view) is cut
  // into pieces by one of its 2nd to subword_nbest-th most likely segmentations instead of
  // the best (Tokenizer::encode_nbest). Off at subword_nbest 1 or subword_prob 0.
  int32_t subword_nbest = 1;
  float subword_prob = 0.0f;
  bool subword_sampling() const { return subword_nbest > 1 && subword_prob > 0; }
};

struct TrainConfig {
  ModelConfig model;
  std::string tokenizer;  // path of a SentencePiece .model
  std::vector<TrainDataSource> data;
  std::string cache_dir = "data/cache/decoded";  // decoded-image cache shared across runs
  int32_t epochs = 10;
  int32_t batch_size = 128;
  int32_t accum_steps = 1;  // optimizer step every accum_steps batches
  double lr = 1e-3;
  double min_lr_ratio = 0.02;  // cosine decays to lr * min_lr_ratio
  double weight_decay = 0.05;
  int64_t warmup_steps = 200;
  double grad_clip = 1.0;
  uint64_t seed = 1234;
  int64_t checkpoint_every = 200;  // optimizer steps between checkpoints (and each epoch)
  int32_t max_train_tokens = 0;    // cap on caption tokens while training (0: none)
  int32_t loader_threads = 1;      // threads that augment and tokenize batches
  int64_t eval_max_images = 2000;  // validation gallery size cap per data set
  // Pairs whose manifest "label" is the same class count as true pairs in the loss (as in
  // UniCL): two Fashion-MNIST coats are not pushed apart because their captions differ.
  bool label_positives = false;
  // Each batch draws from one data source (see DataPlan): in-domain negatives are the hard
  // ones, and short-caption batches are not padded to Open Clip Art's long captions.
  bool batch_by_source = false;
  // > 0: the trainer keeps an exponential moving average of the weights (this decay per
  // step, ramped up as min(decay, (1 + step) / (10 + step)) so early averages follow the
  // model) and validates and exports the average instead of the last step's weights.
  double ema_decay = 0.0;
  // A keyword view ("a cat", augment.views) also counts every image of the batch whose
  // keywords include its keyword(s) as a true pair, not only its own image.
  bool keyword_positives = false;
  // Each row trains with two texts: its whole caption (augment_caption) and a view drawn from
  // augment.views without the caption view, so short views add to the caption signal instead
  // of replacing it. The loss is then over the batch's images against 2 x batch texts.
  bool caption_and_view = false;
  // A MODEL_DIR (or run directory's model/) whose weights start the run instead of random
  // ones: a second, shorter stage of a recipe (e.g. more passes over one source at a lower
  // learning rate). Its tokenizer.model must be the config's tokenizer, byte for byte.
  std::string init_from;
  // Arithmetic of the forward pass: "float32"; "bfloat16" (autocast: matrix products and
  // convolutions in bfloat16, weights, gradients, the loss and the optimizer in float32); or
  // "auto", bfloat16 on CUDA and float32 on CPU. On a CPU with AVX512-BF16 bfloat16 halves a
  // step (build/train_bench); checkpoints are float32 either way.
  std::string precision = "auto";
  // With bfloat16: the share of the run's steps (0, 1] that runs in bfloat16; the steps after
  // it run in float32. The shipped first stage used 0.6; its float32 steps matched r39's
  // bfloat16 ones within tenths (docs/model-experiments.md, r41), so 1.0 is worth a try.
  double bfloat16_until = 1.0;
  AugmentConfig augment;

  // Whether the forward passes run under bfloat16 autocast on a CUDA device (cuda) or a CPU.
  bool bfloat16(bool cuda) const {
    return precision == "bfloat16" || (precision == "auto" && cuda);
  }
  // How many of a run's first steps (of `total_steps`) run under bfloat16 autocast.
  int64_t bfloat16_steps(bool cuda, int64_t total_steps) const {
    if (!bfloat16(cuda)) return 0;
    return static_cast<int64_t>(std::ceil(bfloat16_until * static_cast<double>(total_steps)));
  }
};

// Parses the JSON text (named `name` in errors) and applies `overrides` ("a.b=value").
TrainConfig parse_train_config(const std::string& json_text, const std::string& name,
                               const std::vector<std::string>& overrides);
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides);
std::string train_config_to_json(const TrainConfig& config);

}  // namespace mms
