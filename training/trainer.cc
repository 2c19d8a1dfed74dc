#include "training/trainer.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "common/error.h"
#include "common/file_io.h"
#include "encoders/nn/dual_encoder.h"
#include "encoders/nn/weights.h"
#include "tokenizer/tokenizer.h"
#include "training/augment.h"
#include "training/data_plan.h"
#include "training/evaluate.h"
#include "training/image_store.h"
#include "training/manifest.h"

namespace mms {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Turns bfloat16 autocast on or off for the device's kind (train.precision). Weights stay
// float32; autocast casts the inputs of matrix products and convolutions and caches the casts
// of weights until it is turned off.
void set_bf16_autocast(const torch::Device& device, bool on) {
  if (device.is_cuda()) {
    at::autocast::set_enabled(on);
    if (on) at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
  } else {
    at::autocast::set_cpu_enabled(on);
    if (on) at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  }
  if (!on) at::autocast::clear_cache();
}

struct Batch {
  torch::Tensor pixels, ids, lengths, positives;
  // With train.caption_and_view: each row's second text (a drawn view), padded on its own so
  // short views do not pay for long captions; positives is then [n, 2n].
  torch::Tensor view_ids, view_lengths;
};

struct ValSet {
  std::string name;
  Gallery gallery;
  std::vector<int32_t> image_index;  // gallery image -> ImageStore index
};

struct Data {
  ImageStore store;
  std::vector<TrainSource> sources;
  std::vector<ValSet> val;
};

// `talk`: print what was loaded (rank 0 of a distributed run only).
Data load_data(const TrainConfig& config, int32_t threads, bool talk) {
  Data data;
  std::vector<std::string> paths;
  std::unordered_map<std::string, int32_t> index_of;
  auto image_index = [&](const std::string& path) {
    auto [it, added] = index_of.emplace(path, static_cast<int32_t>(paths.size()));
    if (added) paths.push_back(path);
    return it->second;
  };
  std::vector<std::vector<Pair>> val_pairs;
  for (const TrainDataSource& source : config.data) {
    TrainSource ts{source.name, {}, source.max_per_epoch, source.repeats};
    std::vector<Pair> val;
    for (Pair& p : read_pairs(source.path)) {
      if (p.split == Split::kTrain)
        ts.samples.push_back({image_index(p.image), std::move(p.caption), p.label,
                              std::move(p.title), std::move(p.keywords), std::move(p.names)});
      if (p.split == Split::kVal) val.push_back(std::move(p));
    }
    if (ts.samples.empty()) {
      throw Error::invalid_argument("training data '" + source.path + "' has no train pairs");
    }
    // A bounded validation gallery: the first eval_max_images images and their captions.
    std::unordered_map<std::string, bool> kept;
    std::vector<Pair> capped;
    for (Pair& p : val) {
      if (!kept.count(p.image)) {
        if (static_cast<int64_t>(kept.size()) >= config.eval_max_images) continue;
        kept[p.image] = true;
      }
      image_index(p.image);
      capped.push_back(std::move(p));
    }
    data.sources.push_back(std::move(ts));
    val_pairs.push_back(std::move(capped));
  }

  const auto t0 = Clock::now();
  data.store = build_image_store(paths, config.model.image.image_size, threads, config.cache_dir);
  size_t failed = 0;
  for (const std::string& e : data.store.errors) failed += !e.empty();
  if (talk) {
    std::cerr << "train: " << paths.size() << " images ready in "
              << std::chrono::duration<double>(Clock::now() - t0).count() << " s";
    if (failed) std::cerr << " (" << failed << " could not be loaded and are left out)";
    std::cerr << "\n";
    size_t shown = 0;
    for (const std::string& e : data.store.errors) {
      if (!e.empty() && shown++ < 3) std::cerr << "train: left out: " << e << "\n";
    }
  }

  // Pairs whose image failed to load are dropped from training and validation alike.
  for (TrainSource& s : data.sources) {
    auto failed_image = [&](const TrainSample& t) { return !data.store.errors[t.image].empty(); };
    s.samples.erase(std::remove_if(s.samples.begin(), s.samples.end(), failed_image),
                    s.samples.end());
  }
  for (size_t i = 0; i < config.data.size(); ++i) {
    auto failed_pair = [&](const Pair& p) {
      return !data.store.errors[index_of.at(p.image)].empty();
    };
    val_pairs[i].erase(std::remove_if(val_pairs[i].begin(), val_pairs[i].end(), failed_pair),
                       val_pairs[i].end());
    if (val_pairs[i].empty()) continue;
    ValSet v{config.data[i].name, make_gallery(val_pairs[i], Split::kVal), {}};
    for (const std::string& img : v.gallery.images) v.image_index.push_back(index_of.at(img));
    data.val.push_back(std::move(v));
  }
  return data;
}

// One of the 2nd and later segmentations of encode_nbest's list, uniformly; the only one where
// the text has a single segmentation.
std::vector<int32_t> draw_segmentation(std::vector<std::vector<int32_t>> segmentations,
                                       std::mt19937_64& rng) {
  if (segmentations.size() == 1) return std::move(segmentations.front());
  std::uniform_int_distribution<size_t> pick(1, segmentations.size() - 1);
  return std::move(segmentations[pick(rng)]);
}

// Builds batches on a background thread, a few ahead of the trainer, in order. Of global batch
// b, rank r of `world` builds rows [r * n, (r + 1) * n), n = batch_size / world: every row's
// generator is seeded by its global position, so a row's crop and caption view do not depend on
// how many ranks share the batch.
class Loader {
 public:
  Loader(const TrainConfig& config, const Data& data, const Tokenizer& tokenizer, int64_t first,
         int64_t last, int32_t rank = 0, int32_t world = 1)
      : config_(config),
        data_(data),
        tokenizer_(tokenizer),
        next_(first),
        last_(last),
        rank_(rank),
        world_(world) {
    thread_ = std::thread([this] { run(); });
  }
  ~Loader() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  Batch next() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return !queue_.empty() || error_; });
    if (error_) std::rethrow_exception(error_);
    Batch b = std::move(queue_.front());
    queue_.pop_front();
    cv_.notify_all();
    return b;
  }

 private:
  static constexpr size_t kAhead = 3;

  void run() {
    try {
      DataPlan plan(data_.sources, config_.batch_size, config_.seed, config_.batch_by_source);
      for (int64_t b = next_; b < last_; ++b) {
        Batch batch = build(plan, b);
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return queue_.size() < kAhead || stop_; });
        if (stop_) return;
        queue_.push_back(std::move(batch));
        cv_.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      cv_.notify_all();
    }
  }

  Batch build(DataPlan& plan, int64_t b) {
    const std::vector<const TrainSample*> samples = plan.batch(b);
    const int64_t n = static_cast<int64_t>(samples.size());  // the global batch
    const int64_t rows = n / world_, first = rank_ * rows;    // this rank's share
    const int32_t s = config_.model.image.image_size;
    Batch batch;
    batch.pixels = torch::empty({rows, 3, s, s}, torch::kFloat);
    std::vector<CaptionView> views(samples.size());
    const bool two_texts = config_.caption_and_view;
    std::vector<CaptionView> second(two_texts ? samples.size() : 0);
    AugmentConfig view_only = config_.augment;
    view_only.view_caption = 0;  // the second text is a short view where the pair has one
    // Every row's texts are drawn (cheap) because the true pairs span the global batch; only
    // this rank's images are resampled.
    for (int64_t i = 0; i < n; ++i) {
      std::mt19937_64 rng(config_.seed * 1000003ULL + static_cast<uint64_t>(b) * 4099ULL +
                          static_cast<uint64_t>(i));
      const ImageAugment crop = draw_image_augment(data_.store.side, config_.augment, rng);
      if (i >= first && i < first + rows) {
        apply_image_augment(data_.store.image(samples[i]->image), data_.store.side, s, crop,
                            batch.pixels[i - first].data_ptr<float>());
      }
      if (two_texts) {
        views[i] = {augment_caption(samples[i]->caption, config_.augment, rng), {}};
        second[i] = draw_caption(*samples[i], view_only, rng);
        if (!config_.keyword_positives) second[i].concepts.clear();
      } else {
        views[i] = draw_caption(*samples[i], config_.augment, rng);
        if (!config_.keyword_positives) views[i].concepts.clear();
      }
    }
    auto mine = [&](const std::vector<CaptionView>& all) {
      return std::vector<CaptionView>(all.begin() + first, all.begin() + first + rows);
    };
    std::tie(batch.ids, batch.lengths) = token_batch(mine(views), b, first, 0);
    if (two_texts) {
      // The loss's texts are the n captions, then the n views.
      std::tie(batch.view_ids, batch.view_lengths) = token_batch(mine(second), b, first, 1);
      views.insert(views.end(), second.begin(), second.end());
    }
    std::vector<uint8_t> pairs = true_pairs(samples, config_.label_positives, &views);
    const int64_t texts = static_cast<int64_t>(views.size());
    batch.positives = torch::from_blob(pairs.data(), {n, texts}, torch::kUInt8).to(torch::kBool);
    return batch;
  }

  // Token ids of the texts, padded to the longest (cut at train.max_train_tokens), and their
  // lengths. Row i is the batch's global row first + i; `which` tells captions (0) from views
  // (1), so that each text's subword draw has its own generator, seeded by its place alone.
  std::pair<torch::Tensor, torch::Tensor> token_batch(const std::vector<CaptionView>& texts,
                                                      int64_t b, int64_t first, uint64_t which) {
    const int64_t n = static_cast<int64_t>(texts.size());
    std::vector<std::vector<int32_t>> ids(texts.size());
    size_t width = 0;
    const AugmentConfig& a = config_.augment;
    for (int64_t i = 0; i < n; ++i) {
      if (a.subword_sampling()) {
        std::mt19937_64 rng((config_.seed ^ 0x9e3779b97f4a7c15ULL) * 1000003ULL +
                            static_cast<uint64_t>(b) * 8191ULL +
                            static_cast<uint64_t>(first + i) * 2ULL + which);
        ids[i] =
            std::bernoulli_distribution(a.subword_prob)(rng)
                ? draw_segmentation(tokenizer_.encode_nbest(texts[i].text, a.subword_nbest), rng)
                : tokenizer_.encode(texts[i].text);
      } else {
        ids[i] = tokenizer_.encode(texts[i].text);
      }
      if (config_.max_train_tokens > 2 && ids[i].size() > size_t(config_.max_train_tokens)) {
        ids[i].resize(config_.max_train_tokens);
        ids[i].back() = tokenizer_.eos_id();
      }
      width = std::max(width, ids[i].size());
    }
    torch::Tensor out = torch::full({n, static_cast<int64_t>(width)}, tokenizer_.pad_id(), torch::kLong);
    torch::Tensor lengths = torch::empty({n}, torch::kLong);
    auto id = out.accessor<int64_t, 2>();
    for (int64_t i = 0; i < n; ++i) {
      for (size_t c = 0; c < ids[i].size(); ++c) id[i][c] = ids[i][c];
      lengths[i] = static_cast<int64_t>(ids[i].size());
    }
    return {out, lengths};
  }

  const TrainConfig& config_;
  const Data& data_;
  const Tokenizer& tokenizer_;
  int64_t next_, last_;
  int64_t rank_, world_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  std::exception_ptr error_;
  bool stop_ = false;
};

double learning_rate(const TrainConfig& c, int64_t step, int64_t total_steps) {
  if (step < c.warmup_steps) return c.lr * static_cast<double>(step + 1) / c.warmup_steps;
  const double span = std::max<int64_t>(1, total_steps - c.warmup_steps);
  const double progress = std::min(1.0, (step - c.warmup_steps) / span);
  return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + std::cos(M_PI * progress)));
}

// Norms, biases, embeddings, positions and the temperature are not decayed.
torch::optim::AdamW make_optimizer(nn::DualEncoder& model, const TrainConfig& c) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& item : model->named_parameters(true)) {
    const std::string& name = item.key();
    const bool is_embedding = name.find("embed") != std::string::npos;
    (item.value().dim() < 2 || is_embedding || name == "image.pos" ? no_decay : decay)
        .push_back(item.value());
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(c.lr).weight_decay(0.0)));
  return torch::optim::AdamW(std::move(groups),
                             torch::optim::AdamWOptions(c.lr).betas({0.9, 0.98}).eps(1e-6));
}

json evaluate_val(nn::DualEncoder& model, const Data& data, const Tokenizer& tokenizer,
                  double& score) {
  torch::NoGradGuard no_grad;
  model->eval();
  json out = json::object();
  score = 0;
  const int32_t s = model->config().image.image_size;
  for (const ValSet& v : data.val) {
    torch::Tensor pixels = torch::empty({static_cast<int64_t>(v.image_index.size()), 3, s, s});
    for (size_t i = 0; i < v.image_index.size(); ++i) {
      plain_image(data.store.image(v.image_index[i]), data.store.side, s,
                  pixels[static_cast<int64_t>(i)].data_ptr<float>());
    }
    std::vector<std::vector<int32_t>> ids;
    for (const std::string& t : v.gallery.texts) ids.push_back(tokenizer.encode(t));
    const int32_t dim = model->config().embed_dim;
    const std::vector<float> image_emb = nn::to_vector(nn::encode_images_batched(model, pixels));
    const RetrievalMetrics m = retrieval_metrics(
        image_emb, nn::to_vector(nn::encode_texts_batched(model, ids, tokenizer.pad_id())), dim,
        v.gallery);
    out[v.name] = json::parse(retrieval_metrics_to_json(m));
    // Labelled sets also report zero-shot accuracy with the prompt `mmsearch eval` uses by
    // default; it is logged, not part of the score, so a config selects the same epoch as ever.
    const ZeroShotTask task = zero_shot_task(v.gallery);
    if (!task.classes.empty()) {
      std::vector<std::vector<int32_t>> prompt_ids;
      for (const std::string& cls : task.classes) {
        prompt_ids.push_back(tokenizer.encode(zero_shot_prompt(kDefaultZeroShotTemplate, cls)));
      }
      out[v.name]["zero_shot_acc"] = zero_shot_accuracy(
          image_emb, nn::to_vector(nn::encode_texts_batched(model, prompt_ids, tokenizer.pad_id())),
          dim, task.labels);
    }
    // Mean recall (R@1, R@5, R@10 of both directions): R@10 alone saturates on small sets.
    const double mean_recall =
        (m.t2i.r1 + m.t2i.r5 + m.t2i.r10 + m.i2t.r1 + m.i2t.r5 + m.i2t.r10) / 6;
    score += mean_recall / static_cast<double>(data.val.size());
  }
  model->train();
  return out;
}

void export_model(nn::DualEncoder& model, const TrainConfig& config, const json& val,
                  const fs::path& out_dir) {
  const fs::path tmp = out_dir / "model.tmp", dst = out_dir / "model", old = out_dir / "model.old";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  write_file_atomically((tmp / "config.json").string(), model_config_to_json(config.model));
  write_safetensors((tmp / "model.safetensors").string(), nn::model_to_safetensors(model));
  fs::copy_file(config.tokenizer, tmp / "tokenizer.model");
  write_file_atomically((tmp / "eval.json").string(), json{{"val", val}}.dump(2) + "\n");
  fs::remove_all(old);
  if (fs::exists(dst)) fs::rename(dst, old);
  fs::rename(tmp, dst);
  fs::remove_all(old);
}

// The average of the weights that validation and export use when train.ema_decay > 0.
// Parameters are averaged; buffers (BatchNorm's running statistics, already averages) are
// copied from the model as they are.
void update_ema(nn::DualEncoder& ema, nn::DualEncoder& model, double decay) {
  torch::NoGradGuard no_grad;
  const auto from = model->parameters(true);
  const auto to = ema->parameters(true);
  for (size_t i = 0; i < from.size(); ++i) to[i].mul_(decay).add_(from[i], 1 - decay);
  const auto from_buffers = model->buffers(true);
  const auto to_buffers = ema->buffers(true);
  for (size_t i = 0; i < from_buffers.size(); ++i) to_buffers[i].copy_(from_buffers[i]);
}

double ema_decay_at(const TrainConfig& c, int64_t step) {
  return std::min(c.ema_decay, (1.0 + step) / (10.0 + step));
}

struct Checkpoint {
  int64_t step = 0;
  double best_score = -1;
};

// `ema` is empty when the run keeps no average.
void save_checkpoint(nn::DualEncoder& model, torch::optim::AdamW& optimizer, nn::DualEncoder& ema,
                     const Checkpoint& ck, const fs::path& out_dir) {
  const std::string stem = "ckpt-" + std::to_string(ck.step);
  torch::save(model, (out_dir / (stem + ".model.pt")).string());
  torch::save(optimizer, (out_dir / (stem + ".optim.pt")).string());
  if (!ema.is_empty()) torch::save(ema, (out_dir / (stem + ".ema.pt")).string());
  // checkpoint.json names the files; renaming it into place is the commit point.
  write_file_atomically(
      (out_dir / "checkpoint.json").string(),
      json{{"step", ck.step}, {"best_score", ck.best_score}, {"stem", stem}}.dump(2));
  for (const auto& entry : fs::directory_iterator(out_dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("ckpt-", 0) == 0 && name.rfind(stem + ".", 0) != 0) fs::remove(entry.path());
  }
}

// train.init_from: starts `model` from a MODEL_DIR's weights. Its tokenizer must be the run's
// own, byte for byte: the text tower's embedding rows mean that tokenizer's pieces.
void init_from_model_dir(nn::DualEncoder& model, const TrainConfig& config) {
  const fs::path dir = config.init_from;
  const fs::path weights = dir / "model.safetensors";
  if (!fs::is_regular_file(weights)) {
    throw Error::not_found("train.init_from '" + dir.string() +
                           "' holds no model.safetensors (give a MODEL_DIR, e.g. runs/NAME/model)");
  }
  if (read_file_bytes((dir / "tokenizer.model").string(), "train.init_from's tokenizer") !=
      read_file_bytes(config.tokenizer, "tokenizer")) {
    throw Error::mismatch("train.init_from '" + dir.string() +
                          "' was trained with another tokenizer than '" + config.tokenizer +
                          "'; set tokenizer to its tokenizer.model");
  }
  nn::load_model_weights(model, read_safetensors(weights.string()), weights.string());
}

Checkpoint load_checkpoint(nn::DualEncoder& model, torch::optim::AdamW& optimizer,
                           nn::DualEncoder& ema, const fs::path& out_dir) {
  const fs::path file = out_dir / "checkpoint.json";
  std::ifstream in(file);
  if (!in) throw Error::not_found("--resume: no checkpoint in '" + out_dir.string() + "'");
  Checkpoint ck;
  try {
    const json j = json::parse(in);
    ck.step = j.at("step").get<int64_t>();
    ck.best_score = j.at("best_score").get<double>();
    const std::string stem = j.at("stem").get<std::string>();
    torch::load(model, (out_dir / (stem + ".model.pt")).string());
    torch::load(optimizer, (out_dir / (stem + ".optim.pt")).string());
    if (!ema.is_empty()) {
      const fs::path ema_file = out_dir / (stem + ".ema.pt");
      if (!fs::exists(ema_file)) {
        throw Error::mismatch("checkpoint '" + file.string() +
                              "' holds no weight average; it was written with "
                              "train.ema_decay=0, so resume it with the same setting");
      }
      torch::load(ema, ema_file.string());
    }
  } catch (const json::exception& e) {
    throw Error::corrupt("checkpoint '" + file.string() + "' is not valid: " + e.what());
  } catch (const c10::Error& e) {
    throw Error::corrupt("checkpoint files named by '" + file.string() +
                         "' cannot be read: " + e.what_without_backtrace());
  }
  return ck;
}

std::string format_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  return buf;
}

// The distributed pieces of a step. Each rank's loss is the whole global batch's, so the
// scale's gradient is already the global one on every rank, while each encoder gradient covers
// only the rank's own rows: summing those across ranks gives the one-process gradient, and the
// scale's is divided by the rank count first so that the same sum leaves it as it was.
void sync_gradients(Communicator& comm, nn::DualEncoder& model) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (torch::Tensor& p : model->parameters(true)) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  model->logit_scale().mutable_grad().div_(comm.world_size());
  comm.all_reduce_sum(grads, "the gradient all-reduce");
}

// BatchNorm normalizes with each rank's own rows (as DistributedDataParallel does without
// SyncBatchNorm); its running statistics are averaged after each step so that every rank,
// the weight average and the checkpoint hold the same ones.
void average_running_stats(Communicator& comm, nn::DualEncoder& model) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> stats;
  for (const auto& item : model->named_buffers(true)) {
    if (item.key().find("running_") != std::string::npos) stats.push_back(item.value());
  }
  comm.all_reduce_sum(stats, "the BatchNorm statistics all-reduce");
  for (torch::Tensor& t : stats) t.div_(comm.world_size());
}

// Rank 0's weights, optimizer state, weight average and checkpoint record on every rank,
// through the process group, so that no rank needs to see rank 0's files.
void share_state(Communicator& comm, nn::DualEncoder& model, torch::optim::AdamW& optimizer,
                 nn::DualEncoder& ema, Checkpoint& ck) {
  if (!comm.distributed()) return;
  auto share = [&](auto& value, const char* what) {
    std::string bytes;
    if (comm.is_main()) {
      std::ostringstream out;
      torch::save(value, out);
      bytes = out.str();
    }
    comm.broadcast_bytes(bytes, what);
    if (!comm.is_main()) {
      std::istringstream in(bytes);
      torch::load(value, in);
    }
  };
  share(model, "sharing rank 0's weights");
  share(optimizer, "sharing rank 0's optimizer state");
  if (!ema.is_empty()) share(ema, "sharing rank 0's weight average");
  std::string record = json{{"step", ck.step}, {"best_score", ck.best_score}}.dump();
  comm.broadcast_bytes(record, "sharing rank 0's checkpoint step");
  const json j = json::parse(record);
  ck.step = j.at("step").get<int64_t>();
  ck.best_score = j.at("best_score").get<double>();
}

// A fingerprint of the weights; equal on every rank while they step together.
double weights_checksum(nn::DualEncoder& model) {
  torch::NoGradGuard no_grad;
  double sum = 0;
  int64_t i = 0;
  for (const torch::Tensor& p : model->parameters(true)) {
    sum += (p.to(torch::kDouble) * static_cast<double>(++i % 7 + 1)).sum().item<double>();
  }
  return sum;
}

TrainResult train_ranked(const TrainConfig& config, const TrainOptions& options,
                         Communicator& comm) {
  const fs::path out_dir = options.out_dir;
  const bool main = comm.is_main();
  const int32_t world = comm.world_size();
  if (config.batch_size % world != 0) {
    throw Error::invalid_argument("train.batch_size " + std::to_string(config.batch_size) +
                                  " does not split evenly over " + std::to_string(world) +
                                  " ranks; use a multiple of the rank count");
  }
  if (main) {
    fs::create_directories(out_dir);
    if (!options.resume && fs::exists(out_dir / "checkpoint.json")) {
      throw Error::invalid_argument(
          "run directory '" + out_dir.string() +
          "' already holds a checkpoint; pass --resume or use another --out");
    }
    write_file_atomically((out_dir / "train_config.json").string(), train_config_to_json(config));
  }
  torch::Device device(torch::kCPU);
  if (options.device == "cuda") {
    device = torch::Device(torch::kCUDA, static_cast<int16_t>(options.distributed.local_rank));
  }

  const Tokenizer tokenizer = Tokenizer::load(config.tokenizer);
  if (config.augment.subword_sampling() && !tokenizer.has_nbest()) {
    throw Error::invalid_argument("augment.subword_nbest needs a unigram tokenizer; '" +
                                  config.tokenizer + "' cuts a text one way only");
  }
  if (tokenizer.vocab_size() != config.model.text.vocab_size) {
    throw Error::mismatch(
        "tokenizer '" + config.tokenizer + "' has " + std::to_string(tokenizer.vocab_size()) +
        " pieces but model.text.vocab_size is " + std::to_string(config.model.text.vocab_size));
  }
  const int32_t threads = options.threads > 0
                              ? options.threads
                              : static_cast<int32_t>(std::thread::hardware_concurrency());
  // With a decoded-image cache, rank 0 decodes once and the others read its cache.
  const bool cached = !config.cache_dir.empty() && comm.distributed();
  if (cached && !main) comm.wait_for_main("data", "rank 0's image decoding");
  const Data data = load_data(config, threads, main);
  if (cached && main) comm.mark_main_done("data");

  torch::manual_seed(config.seed);
  nn::DualEncoder model(config.model);
  if (!config.init_from.empty() && !options.resume) init_from_model_dir(model, config);
  model->to(device);
  torch::optim::AdamW optimizer = make_optimizer(model, config);
  nn::DualEncoder ema{nullptr};
  if (config.ema_decay > 0) {
    ema = nn::DualEncoder(config.model);
    ema->to(device);
    update_ema(ema, model, 0.0);
  }
  // What validation scores and export writes: the average when there is one.
  nn::DualEncoder& exported = ema.is_empty() ? model : ema;

  const int64_t batches_per_epoch =
      DataPlan(data.sources, config.batch_size, config.seed).batches_per_epoch();
  const int64_t steps_per_epoch = batches_per_epoch / config.accum_steps;
  if (steps_per_epoch < 1) {
    throw Error::invalid_argument("training data holds fewer than batch_size x accum_steps pairs");
  }
  const int64_t total_steps = steps_per_epoch * config.epochs;

  Checkpoint ck;
  if (options.resume && main) ck = load_checkpoint(model, optimizer, ema, out_dir);
  share_state(comm, model, optimizer, ema, ck);
  TrainResult result;
  result.best_score = ck.best_score;
  if (main && fs::exists(out_dir / "model")) result.model_dir = (out_dir / "model").string();

  std::ofstream log;
  if (main) log.open(out_dir / "metrics.jsonl", std::ios::app);
  const bool tty = main && !options.quiet && isatty(fileno(stderr));
  model->train();
  const int64_t first_step = ck.step;
  Loader loader(config, data, tokenizer, first_step * config.accum_steps,
                total_steps * config.accum_steps, comm.rank(), world);
  auto t_start = Clock::now(), t_window = Clock::now();
  int64_t window_samples = 0;
  double window_comm = comm.communication_seconds();
  double loss_sum = 0;
  int64_t loss_count = 0;

  // train.precision / bfloat16_until: the first bf16_steps steps run under bfloat16 autocast.
  const int64_t bf16_steps = config.bfloat16_steps(device.is_cuda(), total_steps);
  for (int64_t step = first_step; step < total_steps; ++step) {
    comm.set_step(step + 1);
    double step_loss = 0;
    const bool autocast = step < bf16_steps;
    if (main && !options.quiet && step == bf16_steps && bf16_steps > 0) {
      std::fprintf(stderr, "%strain: float32 from step %lld on (train.bfloat16_until %g)\n",
                   tty ? "\n" : "", static_cast<long long>(step + 1), config.bfloat16_until);
    }
    for (int32_t micro = 0; micro < config.accum_steps; ++micro) {
      const Batch b = loader.next();
      torch::Tensor loss;
      {
        if (autocast) set_bf16_autocast(device, true);
        const torch::Tensor img = model->encode_images(b.pixels.to(device));
        torch::Tensor txt = model->encode_texts(b.ids.to(device), b.lengths.to(device));
        if (b.view_ids.defined()) {
          txt = torch::cat({txt, model->encode_texts(b.view_ids.to(device), b.view_lengths.to(device))});
        }
        loss = global_contrastive_loss(comm, img.to(torch::kFloat), txt.to(torch::kFloat),
                                       model->scale(), b.positives.to(device));
        if (autocast) set_bf16_autocast(device, false);
      }
      (loss / config.accum_steps).backward();
      step_loss += loss.item<double>() / config.accum_steps;
      window_samples += b.pixels.size(0) * world;
    }
    if (!std::isfinite(step_loss)) {
      throw Error::internal("training diverged at step " + std::to_string(step) +
                            " (loss is not finite); lower train.lr");
    }
    if (comm.distributed()) sync_gradients(comm, model);  // once per accumulation boundary
    const double lr = learning_rate(config, step, total_steps);
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    torch::nn::utils::clip_grad_norm_(model->parameters(), config.grad_clip);
    optimizer.step();
    optimizer.zero_grad();
    if (comm.distributed()) average_running_stats(comm, model);
    if (!ema.is_empty()) update_ema(ema, model, ema_decay_at(config, step));
    loss_sum += step_loss;
    ++loss_count;
    const int64_t done = step + 1;
    const int64_t epoch = step / steps_per_epoch + 1;
    const bool epoch_end = done % steps_per_epoch == 0;

    if (main && (done % 10 == 0 || epoch_end)) {
      const double secs = std::chrono::duration<double>(Clock::now() - t_window).count();
      const double rate = window_samples / std::max(secs, 1e-9);
      const double temperature = 1.0 / model->scale().item<double>();
      json line{{"step", done},  {"epoch", epoch},       {"loss", loss_sum / loss_count},
                {"lr", lr},      {"temperature", temperature}, {"samples_per_s", rate}};
      if (comm.distributed()) {
        // The share of the window rank 0 spent in collectives, waiting for slower ranks included.
        line["ranks"] = world;
        line["comm_share"] = (comm.communication_seconds() - window_comm) / std::max(secs, 1e-9);
      }
      log << line.dump() << "\n" << std::flush;
      if (tty) {
        const double elapsed = std::chrono::duration<double>(Clock::now() - t_start).count();
        const double eta = elapsed / (done - first_step) * (total_steps - done);
        std::fprintf(stderr,
                     "\repoch %lld/%d  step %lld/%lld  loss %.3f  T %.3f  %.0f samples/s  ETA %s ",
                     static_cast<long long>(epoch), config.epochs, static_cast<long long>(done),
                     static_cast<long long>(total_steps), loss_sum / loss_count, temperature, rate,
                     format_duration(eta).c_str());
      }
    }
    if (done % 10 == 0 || epoch_end) {
      loss_sum = 0;
      loss_count = 0;
      window_samples = 0;
      window_comm = comm.communication_seconds();
      t_window = Clock::now();
    }
    if (epoch_end && comm.distributed()) {
      // The ranks step identically by construction; this proves it once an epoch, and puts
      // rank 0's state everywhere should float rounding ever have drifted (a rank with
      // another thread count can sum in another order).
      const std::vector<double> sums = comm.all_gather_value(
          weights_checksum(model) + (ema.is_empty() ? 0.0 : weights_checksum(ema)),
          "the weights check");
      if (std::any_of(sums.begin(), sums.end(), [&](double v) { return v != sums[0]; })) {
        if (main) std::fprintf(stderr, "%strain: ranks' weights drifted apart at step %lld; "
                               "continuing from rank 0's\n", tty ? "\n" : "",
                               static_cast<long long>(done));
        Checkpoint same = ck;
        share_state(comm, model, optimizer, ema, same);
      }
    }
    if (main && epoch_end) {
      double score = 0;
      const json val = evaluate_val(exported, data, tokenizer, score);
      log << json{{"step", done}, {"epoch", epoch}, {"val", val}, {"val_score", score}}.dump()
          << "\n"
          << std::flush;
      if (!options.quiet) {
        std::fprintf(stderr, "%sepoch %lld: validation score %.2f (mean recall)%s\n",
                     tty ? "\n" : "", static_cast<long long>(epoch), score,
                     score > ck.best_score ? ", best so far" : "");
      }
      if (score > ck.best_score) {
        ck.best_score = score;
        export_model(exported, config, val, out_dir);
        result.model_dir = (out_dir / "model").string();
      }
    }
    if (epoch_end || done % config.checkpoint_every == 0) {
      ck.step = done;
      if (main) save_checkpoint(model, optimizer, ema, ck, out_dir);
    }
    if (epoch_end && comm.distributed()) {
      // The others wait while rank 0 validates and writes, so that a checkpoint a resumed run
      // would start from is never behind a rank that went on.
      const std::string key = "epoch-" + std::to_string(epoch);
      if (main) {
        comm.mark_main_done(key);
      } else {
        comm.wait_for_main(key, "rank 0's validation and checkpoint");
      }
    }
    result.steps = done;
    if (options.stop_after_steps > 0 && done >= options.stop_after_steps && done < total_steps) {
      if (ck.step != done) {
        ck.step = done;
        if (main) save_checkpoint(model, optimizer, ema, ck, out_dir);
      }
      comm.all_gather_value(0, "the end of the run");  // rank 0's store outlives every rank's use
      result.best_score = ck.best_score;
      return result;
    }
  }
  comm.all_gather_value(0, "the end of the run");
  result.steps = total_steps;
  result.best_score = ck.best_score;
  result.finished = true;
  return result;
}

}  // namespace

TrainResult train_model(const TrainConfig& config, const TrainOptions& options) {
  if (options.device == "cuda" && !torch::cuda::is_available()) {
    throw Error::unsupported("--device cuda: this build of LibTorch sees no CUDA device");
  }
  Communicator comm(options.distributed, options.device == "cuda");
  try {
    return train_ranked(config, options, comm);
  } catch (const std::exception& e) {
    comm.report_failure(e.what());
    throw;
  }
}

}  // namespace mms
