// The training data order: which (image, caption) samples form global batch b. A pure
// function of the seed and b, so a resumed run sees exactly the batches an uninterrupted
// one would have, and a loader thread can build batches ahead of the trainer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mms {

struct TrainSample {
  int32_t image = 0;  // index into the ImageStore
  std::string caption;
  std::string label;  // the manifest's class label, or empty
  // The manifest's short descriptions (Pair::title, keywords, names), for caption views.
  std::string title;
  std::vector<std::string> keywords;
  std::vector<std::string> names;
};

// The text a batch row trains with (draw_caption in augment.h) and the keywords it names:
// a keyword view ("a cat") names "cat", so every image tagged "cat" answers it too.
struct CaptionView {
  std::string text;
  std::vector<std::string> concepts;
};

struct TrainSource {
  std::string name;
  std::vector<TrainSample> samples;
  int64_t max_per_epoch = 0;  // 0: every sample each epoch
  int64_t repeats = 1;        // passes per epoch, each its own shuffle capped by max_per_epoch
};

// Which (image i, caption j) of a batch are true pairs, row-major [n * n]: the same caption or
// the same image in two rows is a true pair, not a negative; so is the same non-empty class
// label when by_label is set. With `views` (k texts per row: text j belongs to row j % n),
// the matrix is [n * k*n]: image i also answers text j when one of its own drawn texts equals
// it, or when views[j] names concepts that are all among sample i's keywords (so the matrix
// need not be symmetric).
std::vector<uint8_t> true_pairs(const std::vector<const TrainSample*>& batch, bool by_label,
                                const std::vector<CaptionView>* views = nullptr);

class DataPlan {
 public:
  // With by_source, every full batch draws from one source (the few samples left over when a
  // source's epoch share does not divide into batches are pooled into mixed batches), so an
  // Open Clip Art pair is told apart from other clip art rather than from Fashion-MNIST
  // photos; otherwise batches mix all sources uniformly.
  DataPlan(const std::vector<TrainSource>& sources, int64_t batch_size, uint64_t seed,
           bool by_source = false);

  int64_t samples_per_epoch() const { return samples_per_epoch_; }
  int64_t batches_per_epoch() const { return samples_per_epoch_ / batch_size_; }

  // The samples of global batch b (epoch b / batches_per_epoch()). Not thread-safe: it
  // caches the current epoch's order; use one DataPlan per thread.
  std::vector<const TrainSample*> batch(int64_t b);

 private:
  void build_epoch(int64_t epoch);

  const std::vector<TrainSource>& sources_;
  int64_t batch_size_;
  uint64_t seed_;
  bool by_source_;
  int64_t samples_per_epoch_ = 0;
  int64_t cached_epoch_ = -1;
  std::vector<const TrainSample*> order_;
};

}  // namespace mms
