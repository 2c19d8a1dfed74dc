// The model commands of the CLI: `train`, `eval` and `memory`. Each returns normally or
// throws Error.
#pragma once

#include <string>
#include <vector>

#include "encoders/memory.h"
#include "training/distributed.h"
#include "training/evaluate.h"

namespace mms {

struct TrainCommand {
  std::string config, out_dir, device = "cpu";
  std::vector<std::string> overrides;
  bool resume = false;
  int threads = 0;
  LaunchFlags launch;  // unset fields come from torchrun's environment (training/distributed.h)
};
void run_train(const TrainCommand& command);

struct EvalCommand {
  std::string model_dir, manifest, json_out, split = "test";
  // Class prompts for zero-shot accuracy; several form an ensemble (each one's own figure
  // is reported too).
  std::vector<std::string> zero_shot_templates = {mms::kDefaultZeroShotTemplate};
  int threads = 0;
  // Also write each query's rank here, a JSON line per query (for error analysis).
  std::string ranks_out;
  bool use_memory = true;  // false: the encoders' own embeddings, without memory.safetensors
  MemoryOverrides memory_overrides;  // instead of the memory's stored settings, where given
  // Also score natural queries (training/query_eval.h) in these templates.
  bool queries = false;
  std::vector<std::string> query_templates;
};
void run_eval(const EvalCommand& command);

struct MemoryCommand {
  std::string model_dir, config;
  std::vector<std::string> overrides;
  MemoryOverrides settings;  // what differs from MemorySettings' defaults
  int threads = 0;
  std::string texts = "captions";  // parse_memory_texts: captions, titles, keywords
};
void run_memory(const MemoryCommand& command);

// `mmsearch embed`: the embedding of each text and image, one JSON line each
// {"kind", "input", "embedding"} in the order given (texts first). What the HTTP service's
// /v1/embed routes and the Python reference (scripts/python/) give for the same inputs.
struct EmbedCommand {
  std::string model_dir;
  std::vector<std::string> texts, images;
  bool use_memory = true;
  int threads = 0;
};
void run_embed(const EmbedCommand& command);

}  // namespace mms
