// Benchmark: training throughput of a train config's model on this machine, and where a
// step's time goes. On synthetic batches (uniform pixels; random token ids, lengths uniform
// in 3..N with one text of N, padded to N as the trainer pads to a batch's longest caption)
// it times, each the median of several steps after a warm-up:
//   image tower forward + backward, text tower forward + backward, and a whole optimizer
//   step (both towers, the contrastive loss, backward, AdamW),
// and prints samples/s for each. Data loading is not included: the trainer builds batches on
// its own thread, ahead of the step.
//   build/train_bench [CONFIG=training/configs/default.json] [--threads N] [--tokens N]
//                     [--steps N] [--set key=value ...]
// With --set train.precision=bfloat16 the passes run under bfloat16 autocast, as the trainer
// runs them.
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "bench_timing.h"
#include "common/error.h"
#include "encoders/embedder.h"
#include "encoders/nn/dual_encoder.h"
#include "training/train_config.h"

int main(int argc, char** argv) {
  std::string config_path = "training/configs/default.json";
  std::vector<std::string> overrides;
  int threads = static_cast<int>(std::thread::hardware_concurrency()), tokens = 48, steps = 7;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else if (a == "--tokens" && i + 1 < argc)
      tokens = std::atoi(argv[++i]);
    else if (a == "--steps" && i + 1 < argc)
      steps = std::atoi(argv[++i]);
    else if (a == "--set" && i + 1 < argc)
      overrides.push_back(argv[++i]);
    else
      config_path = a;
  }
  try {
    if (threads > 0) mms::set_compute_threads(threads);
    const mms::TrainConfig config = mms::load_train_config(config_path, overrides);
    torch::manual_seed(1);
    // train.precision: the trainer's forward passes under bfloat16 autocast (CPU here).
    const bool bf16 = config.bfloat16(/*cuda=*/false);
    at::autocast::set_cpu_enabled(bf16);
    if (bf16) at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    mms::nn::DualEncoder model(config.model);
    model->train();
    const int64_t b = config.batch_size, s = config.model.image.image_size;
    const int64_t n = std::max(tokens, 3);
    const torch::Tensor pixels = torch::rand({b, 3, s, s});
    const torch::Tensor ids = torch::randint(4, config.model.text.vocab_size, {b, n}, torch::kLong);
    torch::Tensor lengths = torch::randint(3, n + 1, {b}, torch::kLong);
    lengths[0] = n;
    const torch::Tensor positives = torch::eye(b, torch::kBool);
    const torch::Tensor fixed_img =
        torch::nn::functional::normalize(torch::randn({b, config.model.embed_dim}),
                                         torch::nn::functional::NormalizeFuncOptions().dim(1));
    const torch::Tensor fixed_txt = fixed_img.flip(0);
    torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(config.lr));

    auto image_only = [&] {
      model->zero_grad();
      mms::nn::contrastive_loss(model->encode_images(pixels), fixed_txt, model->scale(), positives)
          .backward();
    };
    auto text_padded = [&] {
      model->zero_grad();
      mms::nn::contrastive_loss(fixed_img, model->encode_texts(ids, lengths), model->scale(),
                                positives)
          .backward();
    };
    auto whole_step = [&] {
      optimizer.zero_grad();
      mms::nn::contrastive_loss(model->encode_images(pixels), model->encode_texts(ids, lengths),
                                model->scale(), positives)
          .backward();
      optimizer.step();
    };
    const double t_image = mms::bench::median_seconds(steps, image_only, /*warmup=*/1);
    const double t_text = mms::bench::median_seconds(steps, text_padded, /*warmup=*/1);
    const double t_step = mms::bench::median_seconds(steps, whole_step, /*warmup=*/1);

    int64_t params = 0;
    for (const torch::Tensor& p : model->parameters()) params += p.numel();
    std::printf(
        "config %s: %lldx%lld images, texts of 3..%lld tokens, batch %lld, %.2f M parameters, "
        "%d threads, %s\n",
        config_path.c_str(), static_cast<long long>(s), static_cast<long long>(s),
        static_cast<long long>(n), static_cast<long long>(b), params / 1e6,
        torch::get_num_threads(), bf16 ? "bfloat16 autocast" : "float32");
    std::printf("%-36s %9s %10s\n", "", "ms/batch", "samples/s");
    auto row = [&](const char* what, double t) {
      std::printf("%-36s %9.1f %10.1f\n", what, t * 1e3, b / t);
    };
    row("image tower forward + backward", t_image);
    row("text tower forward + backward", t_text);
    row("whole step (both, loss, AdamW)", t_step);
    std::printf("image tower share of a step: %.0f%%\n", 100.0 * t_image / t_step);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
