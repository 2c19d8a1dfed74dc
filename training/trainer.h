// `mmsearch train`: contrastive training of the dual encoder on manifests, with AdamW,
// warmup + cosine, accumulation, clipping, atomic checkpoints, exact resume, a JSONL metrics
// log, validation recall each epoch, and the best model exported as a MODEL_DIR.
//
// A run directory holds: train_config.json (the resolved config), metrics.jsonl,
// checkpoint.json + ckpt-STEP.{model,optim}.pt (the last checkpoint; checkpoint.json is
// renamed into place last, so a kill at any moment leaves the previous checkpoint whole),
// and model/ (the best MODEL_DIR so far).
//
// Distributed (options.distributed.world_size > 1, see training/distributed.h): train.batch_size
// is the global batch, each rank encodes its batch_size / world_size rows of it and the loss is
// over the whole global batch, so N ranks take the steps one process would (up to float
// rounding, and BatchNorm statistics, which stay per rank). Rank 0 alone writes the run
// directory, logs and validates; a resumed run may use another number of ranks.
#pragma once

#include <cstdint>
#include <string>

#include "training/distributed.h"
#include "training/train_config.h"

namespace mms {

struct TrainOptions {
  std::string out_dir;
  bool resume = false;         // continue from out_dir's last checkpoint
  std::string device = "cpu";  // "cpu" or "cuda" (bf16 autocast)
  int32_t threads = 0;         // decoder threads for the image store (0: all cores)
  // For tests and experiments: return (as if killed) once this many optimizer steps are done
  // and checkpointed; 0 runs to the end.
  int64_t stop_after_steps = 0;
  bool quiet = false;  // no progress bar or per-epoch lines
  DistributedSettings distributed;  // world_size 1: one process, nothing opened
};

struct TrainResult {
  int64_t steps = 0;      // optimizer steps done in total
  double best_score = 0;  // best validation score (mean of t2i and i2t R@10 over data sets)
  std::string model_dir;  // where the best model was exported ("" if never evaluated)
  bool finished = false;  // false when stopped by stop_after_steps
};

TrainResult train_model(const TrainConfig& config, const TrainOptions& options);

}  // namespace mms
