#include "training/evaluate.h"

#include <torch/torch.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace mms {
namespace {

constexpr int64_t kQueryChunk = 1024;

// [n] float32 from `values` scaled by `weight`: what each gallery item's score loses (hub
// scoring); undefined where there is no penalty.
torch::Tensor penalty_of(const std::vector<float>& values, float weight, size_t n,
                         const char* what) {
  if (weight == 0 || values.empty()) return {};
  if (values.size() != n) {
    throw Error::invalid_argument(std::string("evaluation: ") + what + " hubs hold " +
                                  std::to_string(values.size()) + " values, expected " +
                                  std::to_string(n));
  }
  return weight * torch::from_blob(const_cast<float*>(values.data()), {static_cast<int64_t>(n)},
                                   torch::kFloat);
}

// For each query row of `queries`, the rank (1-based) of its best relevant gallery item,
// counting every gallery item scored >= it that is not relevant as above it. `penalty`
// ([gallery rows], where defined) is subtracted from each gallery item's scores.
std::vector<int64_t> best_ranks(const torch::Tensor& queries, const torch::Tensor& gallery,
                                const std::vector<std::vector<int32_t>>& relevant,
                                const torch::Tensor& penalty = {}) {
  std::vector<int64_t> ranks(relevant.size());
  for (int64_t start = 0; start < queries.size(0); start += kQueryChunk) {
    const int64_t end = std::min(queries.size(0), start + kQueryChunk);
    torch::Tensor scores = torch::matmul(queries.slice(0, start, end), gallery.t());
    if (penalty.defined()) scores = scores - penalty.unsqueeze(0);
    scores = scores.contiguous();
    const int64_t g = gallery.size(0);
    for (int64_t q = start; q < end; ++q) {
      const float* row = scores.data_ptr<float>() + (q - start) * g;
      const std::vector<int32_t>& rel = relevant[q];
      if (rel.empty()) throw Error::internal("evaluation: a query has no relevant item");
      float best = row[rel[0]];
      for (int32_t r : rel) best = std::max(best, row[r]);
      int64_t above = 0;
      for (int64_t j = 0; j < g; ++j) above += row[j] >= best;
      // Relevant items at or above `best` are not competitors: only the best one counts.
      int64_t relevant_at_or_above = 0;
      for (int32_t r : rel) relevant_at_or_above += row[r] >= best;
      ranks[q] = above - relevant_at_or_above + 1;
    }
  }
  return ranks;
}

DirectionMetrics summarize(std::vector<int64_t> ranks) {
  DirectionMetrics m;
  if (ranks.empty()) return m;
  const double n = static_cast<double>(ranks.size());
  for (int64_t r : ranks) {
    m.r1 += r <= 1;
    m.r5 += r <= 5;
    m.r10 += r <= 10;
  }
  m.r1 *= 100.0 / n;
  m.r5 *= 100.0 / n;
  m.r10 *= 100.0 / n;
  std::sort(ranks.begin(), ranks.end());
  const size_t mid = ranks.size() / 2;
  m.median_rank = ranks.size() % 2 ? static_cast<double>(ranks[mid])
                                   : 0.5 * static_cast<double>(ranks[mid - 1] + ranks[mid]);
  return m;
}

torch::Tensor as_matrix(const std::vector<float>& v, int32_t dim, size_t rows, const char* what) {
  if (v.size() != rows * static_cast<size_t>(dim)) {
    throw Error::invalid_argument(std::string("evaluation: ") + what + " embeddings hold " +
                                  std::to_string(v.size()) + " floats, expected " +
                                  std::to_string(rows) + " x " + std::to_string(dim));
  }
  return torch::from_blob(const_cast<float*>(v.data()),
                          {static_cast<int64_t>(rows), static_cast<int64_t>(dim)}, torch::kFloat);
}

nlohmann::json direction_json(const DirectionMetrics& m) {
  return {{"r1", m.r1}, {"r5", m.r5}, {"r10", m.r10}, {"median_rank", m.median_rank}};
}

}  // namespace

RetrievalMetrics retrieval_metrics(const std::vector<float>& image_emb,
                                   const std::vector<float>& text_emb, int32_t dim,
                                   const Gallery& gallery, const HubPenalty& hubs) {
  torch::NoGradGuard no_grad;
  const torch::Tensor images = as_matrix(image_emb, dim, gallery.images.size(), "image");
  const torch::Tensor texts = as_matrix(text_emb, dim, gallery.texts.size(), "text");
  RetrievalMetrics m;
  m.n_images = static_cast<int64_t>(gallery.images.size());
  m.n_texts = static_cast<int64_t>(gallery.texts.size());
  m.t2i_ranks = best_ranks(texts, images, gallery.text_to_images,
                           penalty_of(hubs.images, hubs.weight, gallery.images.size(), "image"));
  m.i2t_ranks = best_ranks(images, texts, gallery.image_to_texts,
                           penalty_of(hubs.texts, hubs.weight, gallery.texts.size(), "text"));
  m.t2i = summarize(m.t2i_ranks);
  m.i2t = summarize(m.i2t_ranks);
  return m;
}

ZeroShotTask zero_shot_task(const Gallery& gallery) {
  ZeroShotTask task;
  if (gallery.image_labels.size() != gallery.images.size()) return task;
  for (const std::string& label : gallery.image_labels) {
    if (label.empty()) return {};
    auto it = std::find(task.classes.begin(), task.classes.end(), label);
    if (it == task.classes.end()) it = task.classes.insert(task.classes.end(), label);
    task.labels.push_back(static_cast<int32_t>(it - task.classes.begin()));
  }
  if (task.classes.size() < 2) return {};
  return task;
}

std::string zero_shot_prompt(const std::string& tmpl, const std::string& cls) {
  std::string prompt = tmpl;
  const size_t at = prompt.find("{}");
  return at == std::string::npos ? prompt + " " + cls : prompt.replace(at, 2, cls);
}

double zero_shot_accuracy(const std::vector<float>& image_emb, const std::vector<float>& prompt_emb,
                          int32_t dim, const std::vector<int32_t>& labels, float hub_weight,
                          const std::vector<float>& prompt_hubs) {
  torch::NoGradGuard no_grad;
  const torch::Tensor images = as_matrix(image_emb, dim, labels.size(), "image");
  const torch::Tensor prompts =
      as_matrix(prompt_emb, dim, prompt_emb.size() / std::max(dim, 1), "prompt");
  if (labels.empty()) return 0.0;
  torch::Tensor scores = torch::matmul(images, prompts.t());
  const torch::Tensor penalty =
      penalty_of(prompt_hubs, hub_weight, static_cast<size_t>(prompts.size(0)), "prompt");
  if (penalty.defined()) scores = scores - penalty.unsqueeze(0);
  const torch::Tensor predicted = scores.argmax(1).contiguous();
  int64_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) correct += predicted[i].item<int64_t>() == labels[i];
  return 100.0 * static_cast<double>(correct) / static_cast<double>(labels.size());
}

std::vector<float> ensemble_prompts(const std::vector<std::vector<float>>& prompt_sets,
                                    int32_t dim) {
  torch::NoGradGuard no_grad;
  if (prompt_sets.empty()) throw Error::invalid_argument("prompt ensemble: no templates");
  const size_t classes = prompt_sets[0].size() / std::max(dim, 1);
  torch::Tensor sum = torch::zeros({static_cast<int64_t>(classes), dim});
  for (const std::vector<float>& set : prompt_sets) {
    if (set.size() != prompt_sets[0].size()) {
      throw Error::invalid_argument("prompt ensemble: templates differ in their number of classes");
    }
    sum += as_matrix(set, dim, classes, "prompt");
  }
  sum = torch::nn::functional::normalize(sum, torch::nn::functional::NormalizeFuncOptions().dim(1))
            .contiguous();
  return {sum.data_ptr<float>(), sum.data_ptr<float>() + sum.numel()};
}

std::string retrieval_metrics_to_json(const RetrievalMetrics& m) {
  const nlohmann::json j = {{"t2i", direction_json(m.t2i)},
                            {"i2t", direction_json(m.i2t)},
                            {"n_images", m.n_images},
                            {"n_texts", m.n_texts}};
  return j.dump(2);
}

}  // namespace mms
