// Training-time image augmentation on stored RGB8 squares: random resized crop, colour
// jitter and (optionally) horizontal flip, written straight into the model's float input.
// Pure functions of their inputs and the generator: the same seed gives the same pixels.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "training/data_plan.h"
#include "training/train_config.h"

namespace mms {

// src: side x side x 3 uint8 (HWC). Writes [3, out_size, out_size] float32 0..1 (CHW) to out.
// The same as draw_image_augment followed by apply_image_augment.
void augment_image(const uint8_t* src, int32_t side, int32_t out_size, const AugmentConfig& config,
                   std::mt19937_64& rng, float* out);

// One row's random crop, flip and jitter factors. Drawing them never looks at the pixels, so
// a distributed rank can advance a row's generator exactly as the rank that owns the row
// does (and then draw its caption view) without resampling the image.
struct ImageAugment {
  double x0 = 0, y0 = 0, w = 0, h = 0;  // the crop, in stored pixels
  bool flip = false;
  bool jitter = false;  // false: no colour factors were drawn
  float brightness = 1, contrast = 1, saturation = 1;
};
ImageAugment draw_image_augment(int32_t side, const AugmentConfig& config, std::mt19937_64& rng);
void apply_image_augment(const uint8_t* src, int32_t side, int32_t out_size,
                         const ImageAugment& augment, float* out);

// A caption written as "<text> Keywords: a, b, c." (the emoji and Open Clip Art form): its
// text and its keywords, trimmed, empty ones dropped; no keywords when it has no such list.
struct KeywordCaption {
  std::string text;
  std::vector<std::string> keywords;
};
KeywordCaption split_keyword_caption(const std::string& caption);

// Training-time caption augmentation. Captions of the form "<text> Keywords: a, b, c." (how
// the emoji and Open Clip Art manifests are written) keep their text; each keyword is left
// out with probability config.keyword_drop, and the kept ones are shuffled when
// config.keyword_shuffle is set. When every keyword is dropped the caption is "<text>" alone
// (or keeps one keyword if there is no text), so it is never empty. Captions without a
// keyword list come back unchanged.
std::string augment_caption(const std::string& caption, const AugmentConfig& config,
                            std::mt19937_64& rng);

// The text a training row uses this epoch, drawn from the sample's views with the weights of
// config.view_*: the whole caption (then augment_caption applies), the title, one keyword or
// two ("cat", "cat and dog"), or one of its other names. Title and keyword views are put into
// a template of config.view_templates ("a drawing of a {}"; "a" turns "an" before a vowel).
// A view the sample lacks gets no weight; with none but the caption this is
// {augment_caption(caption), {}} and draws from the generator exactly as augment_caption does.
// A keyword view reports the keywords it names in `concepts` (for true_pairs).
CaptionView draw_caption(const TrainSample& sample, const AugmentConfig& config,
                         std::mt19937_64& rng);

// `tmpl` with "{}" replaced by `words`; "a {}" becomes "an {}" when `words` starts with a
// vowel letter.
std::string fill_template(const std::string& tmpl, const std::string& words);

// The evaluation view: the whole stored square, resampled to out_size (a copy when equal).
void plain_image(const uint8_t* src, int32_t side, int32_t out_size, float* out);

}  // namespace mms
