#include "training/augment.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <iterator>
#include <string_view>
#include <vector>

#include "training/manifest_internal.h"  // trim

namespace mms {
namespace {

// Bilinear resampling of the crop [x0, x0 + w) x [y0, y0 + h) of src into out (CHW, 0..1).
void resample(const uint8_t* src, int32_t side, double x0, double y0, double w, double h,
              int32_t out_size, bool flip, float* out) {
  const size_t plane = size_t(out_size) * out_size;
  for (int32_t oy = 0; oy < out_size; ++oy) {
    const double sy = std::clamp(y0 + (oy + 0.5) * h / out_size - 0.5, 0.0, side - 1.0);
    const int32_t y_lo = static_cast<int32_t>(sy);
    const int32_t y_hi = std::min(y_lo + 1, side - 1);
    const float fy = static_cast<float>(sy - y_lo);
    for (int32_t ox = 0; ox < out_size; ++ox) {
      const int32_t tx = flip ? out_size - 1 - ox : ox;
      const double sx = std::clamp(x0 + (tx + 0.5) * w / out_size - 0.5, 0.0, side - 1.0);
      const int32_t x_lo = static_cast<int32_t>(sx);
      const int32_t x_hi = std::min(x_lo + 1, side - 1);
      const float fx = static_cast<float>(sx - x_lo);
      for (int c = 0; c < 3; ++c) {
        auto at = [&](int32_t y, int32_t x) { return float(src[(size_t(y) * side + x) * 3 + c]); };
        const float top = at(y_lo, x_lo) * (1 - fx) + at(y_lo, x_hi) * fx;
        const float bottom = at(y_hi, x_lo) * (1 - fx) + at(y_hi, x_hi) * fx;
        out[c * plane + size_t(oy) * out_size + ox] = (top * (1 - fy) + bottom * fy) / 255.0f;
      }
    }
  }
}

constexpr std::string_view kMarker = "Keywords:";  // the keyword list's marker in captions

}  // namespace

KeywordCaption split_keyword_caption(const std::string& caption) {
  using manifest_internal::trim;
  KeywordCaption out;
  const size_t at = caption.rfind(kMarker);
  if (at == std::string::npos) return out;
  out.text = trim(std::string_view(caption).substr(0, at));
  const std::string tail = trim(std::string_view(caption).substr(at + kMarker.size()));
  std::string_view list = tail;
  if (!list.empty() && list.back() == '.') list.remove_suffix(1);
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string k = trim(list.substr(0, comma));
    if (!k.empty()) out.keywords.push_back(std::move(k));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
  }
  return out;
}

std::string augment_caption(const std::string& caption, const AugmentConfig& config,
                            std::mt19937_64& rng) {
  if (config.keyword_drop <= 0 && !config.keyword_shuffle) return caption;
  const auto [text, keywords] = split_keyword_caption(caption);
  if (keywords.empty()) return caption;

  std::vector<std::string_view> kept;
  std::bernoulli_distribution drop(std::clamp(config.keyword_drop, 0.0f, 1.0f));
  for (std::string_view k : keywords) {
    if (!drop(rng)) kept.push_back(k);
  }
  if (kept.empty() && text.empty()) {
    kept.push_back(keywords[std::uniform_int_distribution<size_t>(0, keywords.size() - 1)(rng)]);
  }
  if (config.keyword_shuffle) std::shuffle(kept.begin(), kept.end(), rng);

  std::string out(text);
  if (kept.empty()) return out;
  if (!out.empty()) out += ' ';
  out += kMarker;
  for (size_t i = 0; i < kept.size(); ++i) {
    out += i == 0 ? " " : ", ";
    out += kept[i];
  }
  out += '.';
  return out;
}

std::string fill_template(const std::string& tmpl, const std::string& words) {
  const size_t at = tmpl.find("{}");
  if (at == std::string::npos) return tmpl;
  std::string head = tmpl.substr(0, at);
  const bool vowel = !words.empty() && std::string_view("aeiouAEIOU").find(words[0]) !=
                                           std::string_view::npos;
  const bool article = head == "a " || (head.size() > 2 && head.compare(head.size() - 3, 3, " a ") == 0);
  if (vowel && article) head.insert(head.size() - 1, "n");
  return head + words + tmpl.substr(at + 2);
}

CaptionView draw_caption(const TrainSample& sample, const AugmentConfig& config,
                         std::mt19937_64& rng) {
  const double weights[] = {
      config.view_caption,
      sample.title.empty() ? 0.0 : config.view_title,
      sample.keywords.empty() ? 0.0 : config.view_keywords,
      sample.names.empty() ? 0.0 : config.view_names,
  };
  if (weights[1] + weights[2] + weights[3] <= 0) {
    return {augment_caption(sample.caption, config, rng), {}};
  }
  std::discrete_distribution<int> pick(std::begin(weights), std::end(weights));
  auto any = [&](const std::vector<std::string>& list) -> const std::string& {
    return list[std::uniform_int_distribution<size_t>(0, list.size() - 1)(rng)];
  };
  auto templated = [&](const std::string& words) {
    return fill_template(any(config.view_templates), words);
  };
  switch (pick(rng)) {
    case 1: {
      // Titles are written as names ("Red apple"); in a template they read lower-case.
      std::string title = sample.title;
      const std::string& tmpl = any(config.view_templates);
      if (tmpl != "{}" && title.size() > 1 && std::isupper(static_cast<unsigned char>(title[0])) &&
          !std::isupper(static_cast<unsigned char>(title[1]))) {
        title[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(title[0])));
      }
      return {fill_template(tmpl, title), {}};
    }
    case 2: {
      std::vector<std::string> concepts = {any(sample.keywords)};
      std::bernoulli_distribution two(std::clamp(config.view_two_keywords, 0.0f, 1.0f));
      if (sample.keywords.size() > 1 && two(rng)) {
        const std::string& second = any(sample.keywords);
        if (second != concepts[0]) concepts.push_back(second);
      }
      const std::string words =
          concepts.size() == 1 ? concepts[0] : concepts[0] + " and " + concepts[1];
      return {templated(words), std::move(concepts)};
    }
    case 3:
      return {any(sample.names), {}};
    default:
      return {augment_caption(sample.caption, config, rng), {}};
  }
}

ImageAugment draw_image_augment(int32_t side, const AugmentConfig& config, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const double area = side * double(side);
  ImageAugment a;
  a.w = side;
  a.h = side;
  // Random resized crop: area fraction in [crop_scale_min, 1], log-uniform aspect ratio.
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double scale = config.crop_scale_min + (1.0 - config.crop_scale_min) * unit(rng);
    const double log_r = std::log(std::max(config.crop_ratio, 1.0f));
    const double ratio = std::exp((2 * unit(rng) - 1) * log_r);
    const double cw = std::sqrt(area * scale * ratio), ch = std::sqrt(area * scale / ratio);
    if (cw <= side && ch <= side) {
      a.w = cw;
      a.h = ch;
      break;
    }
  }
  a.x0 = (side - a.w) * unit(rng);
  a.y0 = (side - a.h) * unit(rng);
  a.flip = config.hflip && unit(rng) < 0.5;
  if (config.jitter <= 0) return a;
  auto factor = [&] { return static_cast<float>(1.0 + config.jitter * (2 * unit(rng) - 1)); };
  a.jitter = true;
  a.brightness = factor();
  a.contrast = factor();
  a.saturation = factor();
  return a;
}

void apply_image_augment(const uint8_t* src, int32_t side, int32_t out_size,
                         const ImageAugment& a, float* out) {
  resample(src, side, a.x0, a.y0, a.w, a.h, out_size, a.flip, out);
  if (!a.jitter) return;
  const float brightness = a.brightness, contrast = a.contrast, saturation = a.saturation;
  const size_t plane = size_t(out_size) * out_size;
  double mean = 0;
  for (size_t i = 0; i < 3 * plane; ++i) mean += out[i];
  const float gray_mean = static_cast<float>(mean / (3.0 * plane));
  for (size_t p = 0; p < plane; ++p) {
    float r = out[p] * brightness, g = out[plane + p] * brightness,
          b = out[2 * plane + p] * brightness;
    r = (r - gray_mean) * contrast + gray_mean;
    g = (g - gray_mean) * contrast + gray_mean;
    b = (b - gray_mean) * contrast + gray_mean;
    const float luma = 0.299f * r + 0.587f * g + 0.114f * b;
    out[p] = std::clamp(luma + (r - luma) * saturation, 0.0f, 1.0f);
    out[plane + p] = std::clamp(luma + (g - luma) * saturation, 0.0f, 1.0f);
    out[2 * plane + p] = std::clamp(luma + (b - luma) * saturation, 0.0f, 1.0f);
  }
}

void augment_image(const uint8_t* src, int32_t side, int32_t out_size, const AugmentConfig& config,
                   std::mt19937_64& rng, float* out) {
  apply_image_augment(src, side, out_size, draw_image_augment(side, config, rng), out);
}

void plain_image(const uint8_t* src, int32_t side, int32_t out_size, float* out) {
  resample(src, side, 0, 0, side, side, out_size, false, out);
}

}  // namespace mms
