// Moves a DualEncoder's parameters and buffers to and from safetensors, checking every name,
// shape and dtype on the way in. Internal to encoders/ and training/ (LibTorch types).
#pragma once

#include <string>

#include "encoders/nn/dual_encoder.h"
#include "encoders/safetensors.h"

namespace mms::nn {

// Every parameter and buffer of `model`, by its module path (e.g. "text.blocks.0.qkv.weight").
SafeTensors model_to_safetensors(DualEncoder& model);

// Copies `weights` into `model`. Throws Error::mismatch naming `file` and the first tensor
// that is missing, unexpected, or of the wrong shape or dtype; `model` is unchanged then.
void load_model_weights(DualEncoder& model, const SafeTensors& weights, const std::string& file);

}  // namespace mms::nn
