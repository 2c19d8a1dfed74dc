// Benchmark: encoder throughput of a MODEL_DIR on this machine. Prints images/s (embedding
// only, from preprocessed pixels, in batches of 64) and texts/s for short (caption-length)
// and long texts, each the median of several runs.
//   build/encode_bench [MODEL_DIR=data/models/default] [--threads N]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench_timing.h"
#include "common/error.h"
#include "encoders/embedder.h"

namespace {

std::vector<std::string> make_texts(int n, int words, std::mt19937& rng) {
  static const char* kWords[] = {"a",    "red",     "cat",     "sitting", "on",   "the",
                                 "blue", "chair",   "smiling", "face",    "with", "heart",
                                 "eyes", "flag",    "of",      "green",   "tree", "house",
                                 "car",  "drawing", "icon",    "star"};
  std::uniform_int_distribution<int> pick(0, 21);
  std::vector<std::string> out(n);
  for (auto& s : out) {
    for (int w = 0; w < words; ++w) s += std::string(w ? " " : "") + kWords[pick(rng)];
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = "data/models/default";
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else
      model = a;
  }
  try {
    if (threads > 0) mms::set_compute_threads(threads);
    const auto embedder = mms::Embedder::load(model);
    const int64_t s = embedder->image_size();
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> unit(0, 1);
    const int64_t n_images = 256;
    std::vector<float> pixels(n_images * 3 * s * s);
    for (float& p : pixels) p = unit(rng);
    const double t_img = mms::bench::median_seconds(
        3, [&] { embedder->embed_pixels(pixels.data(), n_images); }, /*warmup=*/1);
    std::printf("model %s (%dx%d input, %d-d)\n", model.c_str(), (int)s, (int)s, embedder->dim());
    std::printf("images/s (embed only, batches of 64): %.1f\n", n_images / t_img);
    for (int words : {12, 60, 1000}) {
      const int n = words >= 1000 ? 8 : 256;
      const auto texts = make_texts(n, words, rng);
      const double t = mms::bench::median_seconds(3, [&] { embedder->embed_texts(texts); });
      std::printf("texts/s at %d words (tokenize + embed): %.1f\n", words, n / t);
    }
  } catch (const mms::Error& e) {
    std::fprintf(stderr, "encode_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
