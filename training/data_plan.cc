#include "training/data_plan.h"

#include <algorithm>
#include <numeric>
#include <random>

namespace mms {

std::vector<uint8_t> true_pairs(const std::vector<const TrainSample*>& batch, bool by_label,
                                const std::vector<CaptionView>* views) {
  const size_t n = batch.size();
  const size_t m = views != nullptr ? views->size() : n;  // text columns: row j % n's
  auto text = [&](size_t j) -> const std::string& {
    return views != nullptr ? (*views)[j].text : batch[j]->caption;
  };
  auto tagged = [&](const TrainSample& image, const std::vector<std::string>& concepts) {
    if (concepts.empty()) return false;
    return std::all_of(concepts.begin(), concepts.end(), [&](const std::string& c) {
      return std::find(image.keywords.begin(), image.keywords.end(), c) != image.keywords.end();
    });
  };
  // Image i's own texts drawn in this batch equal to text j (columns i, i + n, ...).
  auto own_text = [&](size_t i, size_t j) {
    for (size_t k = i; k < m; k += n) {
      if (text(k) == text(j)) return true;
    }
    return false;
  };
  std::vector<uint8_t> pairs(n * m);
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < m; ++j) {
      const TrainSample& a = *batch[i];
      const TrainSample& b = *batch[j % n];
      pairs[i * m + j] = a.caption == b.caption || a.image == b.image || own_text(i, j) ||
                         (by_label && !a.label.empty() && a.label == b.label) ||
                         (views != nullptr && tagged(a, (*views)[j].concepts));
    }
  }
  return pairs;
}

DataPlan::DataPlan(const std::vector<TrainSource>& sources, int64_t batch_size, uint64_t seed,
                   bool by_source)
    : sources_(sources), batch_size_(batch_size), seed_(seed), by_source_(by_source) {
  for (const TrainSource& s : sources_) {
    const int64_t n = static_cast<int64_t>(s.samples.size());
    samples_per_epoch_ += (s.max_per_epoch > 0 ? std::min(n, s.max_per_epoch) : n) * s.repeats;
  }
}

void DataPlan::build_epoch(int64_t epoch) {
  std::mt19937_64 rng(seed_ ^ (0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(epoch + 1)));
  order_.clear();
  const size_t bs = static_cast<size_t>(batch_size_);
  std::vector<std::vector<const TrainSample*>> batches;  // whole one-source batches
  std::vector<const TrainSample*> rest;                  // everything else, mixed
  for (const TrainSource& s : sources_) {
    std::vector<size_t> idx(s.samples.size());
    std::iota(idx.begin(), idx.end(), 0);
    for (int64_t pass = 0; pass < s.repeats; ++pass) {
      std::shuffle(idx.begin(), idx.end(), rng);
      size_t take = idx.size();
      if (s.max_per_epoch > 0) take = std::min<size_t>(take, static_cast<size_t>(s.max_per_epoch));
      const size_t whole = by_source_ ? take - take % bs : 0;
      for (size_t i = 0; i < take; ++i) {
        if (i < whole && i % bs == 0) batches.emplace_back();
        (i < whole ? batches.back() : rest).push_back(&s.samples[idx[i]]);
      }
    }
  }
  std::shuffle(rest.begin(), rest.end(), rng);
  if (!by_source_) {
    order_ = std::move(rest);
  } else {
    for (size_t start = 0; start + bs <= rest.size(); start += bs) {
      batches.emplace_back(rest.begin() + start, rest.begin() + start + bs);
    }
    std::shuffle(batches.begin(), batches.end(), rng);
    for (const auto& batch : batches) order_.insert(order_.end(), batch.begin(), batch.end());
  }
  cached_epoch_ = epoch;
}

std::vector<const TrainSample*> DataPlan::batch(int64_t b) {
  const int64_t epoch = b / batches_per_epoch();
  if (epoch != cached_epoch_) build_epoch(epoch);
  const int64_t start = (b % batches_per_epoch()) * batch_size_;
  return {order_.begin() + start, order_.begin() + start + batch_size_};
}

}  // namespace mms
