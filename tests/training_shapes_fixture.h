// A tiny synthetic training set for trainer tests: 4 colours x 3 shapes, 6 JPEGs each (5 train,
// 1 val), captions "a red square", the colour as class label, title and keywords for caption
// views; a word tokenizer over the 10 words; and a model small enough to train in seconds.
#pragma once

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "encoders/image_io.h"
#include "tokenizer/tokenizer.h"
#include "training/train_config.h"

namespace shapes_fixture {

inline const char* kColors[] = {"red", "green", "blue", "yellow"};
inline const uint8_t kRgb[][3] = {{220, 30, 30}, {30, 200, 40}, {30, 60, 220}, {230, 210, 20}};
inline const char* kShapes[] = {"square", "circle", "stripe"};

inline mms::DecodedImage draw(int color, int shape, std::mt19937& rng) {
  mms::DecodedImage img;
  img.width = img.height = 48;
  img.rgb.assign(48 * 48 * 3, 255);
  std::uniform_int_distribution<int> jitter(-4, 4);
  const int cx = 24 + jitter(rng), cy = 24 + jitter(rng), r = 12 + jitter(rng) / 2;
  for (int y = 0; y < 48; ++y) {
    for (int x = 0; x < 48; ++x) {
      bool in = false;
      if (shape == 0) in = std::abs(x - cx) <= r && std::abs(y - cy) <= r;
      if (shape == 1) in = (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r;
      if (shape == 2) in = std::abs(y - cy) <= 4;
      if (in) std::copy(kRgb[color], kRgb[color] + 3, &img.rgb[(y * 48 + x) * 3]);
    }
  }
  return img;
}

// Writes dir/img/*.jpg, dir/pairs.jsonl and dir/tok.model; returns a config training on them
// (60 train pairs: 5 steps an epoch at batch 12).
inline mms::TrainConfig write_shapes_data(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir / "img");
  std::mt19937 rng(7);
  std::ofstream manifest(dir / "pairs.jsonl"), corpus(dir / "corpus.txt");
  int n = 0;
  for (int c = 0; c < 4; ++c) {
    for (int s = 0; s < 3; ++s) {
      const std::string caption = std::string("a ") + kColors[c] + " " + kShapes[s];
      for (int k = 0; k < 6; ++k) {
        const std::string name = "img/" + std::to_string(n++) + ".jpg";
        const auto jpeg = mms::encode_jpeg_thumbnail(draw(c, s, rng), 48, 95);
        std::ofstream(dir / name, std::ios::binary)
            .write(reinterpret_cast<const char*>(jpeg.data()), jpeg.size());
        manifest << nlohmann::json{{"image", name},
                                   {"caption", caption},
                                   {"split", k < 5 ? "train" : "val"},
                                   {"label", kColors[c]},
                                   {"title", std::string(kColors[c]) + " " + kShapes[s]},
                                   {"keywords", {kColors[c], kShapes[s]}}}
                        .dump()
                 << "\n";
      }
      for (int k = 0; k < 20; ++k)
        corpus << caption << "\nthe " << kShapes[s] << " is " << kColors[c] << "\n";
    }
  }
  manifest.close();
  corpus.close();
  mms::TokenizerTrainOptions tok;
  tok.corpus_path = (dir / "corpus.txt").string();
  tok.vocab_size = 14;  // 4 reserved + the 10 words of the corpus
  tok.out_path = (dir / "tok.model").string();
  tok.model_type = "word";
  mms::train_tokenizer(tok);

  mms::TrainConfig config;
  config.tokenizer = tok.out_path;
  config.data = {{"shapes", (dir / "pairs.jsonl").string(), 0}};
  config.cache_dir = "";
  config.model.image.image_size = 32;
  config.model.image.stem_channels = {16, 32};
  config.model.image.width = 32;
  config.model.image.depth = 1;
  config.model.image.heads = 2;
  config.model.text.vocab_size = mms::Tokenizer::load(tok.out_path).vocab_size();
  config.model.text.width = 32;
  config.model.text.depth = 1;
  config.model.text.heads = 2;
  config.model.text.window = 4;
  config.model.embed_dim = 32;
  config.batch_size = 12;
  config.lr = 3e-3;
  config.warmup_steps = 5;
  config.checkpoint_every = 4;
  config.augment.jitter = 0.05f;
  return config;
}

}  // namespace shapes_fixture
