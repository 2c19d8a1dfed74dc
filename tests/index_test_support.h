// Test support for the index tests: a tiny randomly initialized MODEL_DIR (so tests do not
// depend on the shipped model) and small generated images.
#pragma once

#include <sys/wait.h>
#include <torch/torch.h>

#include <cstdio>

#include <filesystem>
#include <fstream>
#include <string>

#include "encoders/image_io.h"
#include "encoders/model_config.h"
#include "encoders/nn/dual_encoder.h"
#include "encoders/nn/weights.h"
#include "tokenizer/tokenizer.h"

namespace mms::testing {

// Writes config.json, model.safetensors and tokenizer.model of a small random model into
// `dir`. Different seeds give different fingerprints.
inline void make_tiny_model(const std::filesystem::path& dir, uint64_t seed = 1) {
  std::filesystem::create_directories(dir);
  {
    std::ofstream corpus(dir / "corpus.txt");
    for (int i = 0; i < 50; ++i) corpus << "a red circle\na blue square on white\nthe green star " << i << "\n";
  }
  TokenizerTrainOptions tok;
  tok.corpus_path = (dir / "corpus.txt").string();
  tok.vocab_size = 36;  // the corpus has 32 characters and room for a few pieces
  tok.out_path = (dir / "tokenizer.model").string();
  train_tokenizer(tok);
  ModelConfig c;
  c.image.image_size = 32;
  c.image.stem_channels = {8, 16};
  c.image.width = 32;
  c.image.depth = 1;
  c.image.heads = 2;
  c.text.vocab_size = Tokenizer::load(tok.out_path).vocab_size();
  c.text.width = 32;
  c.text.depth = 1;
  c.text.heads = 2;
  c.text.window = 8;
  c.embed_dim = 16;
  std::ofstream(dir / "config.json") << model_config_to_json(c);
  torch::manual_seed(seed);
  nn::DualEncoder model(c);
  write_safetensors((dir / "model.safetensors").string(), nn::model_to_safetensors(model));
}

// A w x h JPEG of two colours split at a position that depends on `variant`.
inline void write_test_jpeg(const std::filesystem::path& path, int variant, int w = 40, int h = 30) {
  DecodedImage img;
  img.width = w;
  img.height = h;
  img.rgb.resize(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const bool left = x < (variant * 7) % w;
      uint8_t* p = &img.rgb[(size_t(y) * w + x) * 3];
      p[0] = left ? 200 : uint8_t(variant * 37);
      p[1] = left ? uint8_t(variant * 11) : 90;
      p[2] = uint8_t((variant * 53 + y) % 256);
    }
  }
  const auto jpeg = encode_jpeg_thumbnail(img, std::max(w, h), 90);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(jpeg.data()), jpeg.size());
}

// The built program, for tests named *_cli_test.cc (which depend on it).
inline const std::string kProgram = std::string(MMS_BINARY_DIR) + "/mmsearch";

// Runs `mmsearch ARGS` (stderr discarded); returns {exit code, stdout}.
inline std::pair<int, std::string> run_program(const std::string& args) {
  FILE* pipe = popen((kProgram + " " + args + " 2>/dev/null").c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace mms::testing
