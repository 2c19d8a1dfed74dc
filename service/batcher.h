// Micro-batching for the HTTP service: concurrent requests' text encodes, image encodes and
// index searches are queued per kind and run together by a few worker threads, so a batch of
// 32 queries costs little more than one. The policy is work-conserving: a job that finds a
// worker idle runs at once; jobs that arrive while every worker is busy wait in their kind's
// lane, and each worker that frees takes the next batch (its share of a lane's pending jobs,
// lanes taken in turn). So a lone request never waits for company, and under load batches
// grow by themselves to what arrives during one batch's run, with no timer to tune. The
// total number of queued jobs is bounded: beyond max_queue a submit throws
// Error::unavailable at once.
//
// Thread-safety: every public method may be called from any thread. The returned futures
// carry the batch's result or its Error. Destruction finishes the queued jobs, then joins.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "index/collection.h"

namespace mms {

class Embedder;

struct BatcherOptions {
  int32_t max_batch = 64;  // jobs of one kind run together at most
  int64_t max_queue = 512;  // jobs queued or running, all kinds together
  // Threads that run batches, each with one compute thread of its own (LibTorch and FAISS):
  // on a small machine two single-threaded workers keep both cores busy without the
  // barrier stalls of one worker's two-thread pool when other processes share the cores.
  int32_t workers = 1;
};

// Called with each batch's kind ("text", "image", "search") and size, from the worker,
// before the batch runs.
using BatchObserver = std::function<void(const char* kind, int64_t size)>;

class Batcher {
 public:
  // `embedder` and `collection` must outlive the batcher.
  Batcher(const Embedder& embedder, const Collection& collection, const BatcherOptions& options,
          BatchObserver observer);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // [dim] unit-norm embedding of a tokenized text (Tokenizer::encode: BOS .. EOS, any length);
  // callers tokenize on their own threads and can check the length first.
  std::future<std::vector<float>> embed_tokens(std::vector<int32_t> ids);
  // pixels: one image as preprocess_image(img, embedder.image_size()) makes it,
  // [3, S, S] float32. Returns its [dim] unit-norm embedding.
  std::future<std::vector<float>> embed_image(std::vector<float> pixels);
  // A tokenized text's embedding and, in the same pass of the worker, its `k` best hits in
  // `target` (the text search of the HTTP service: one hand-off instead of two, and the
  // searches of a text batch run as one batch too), over images with the model's hub weight.
  struct EmbeddedSearch {
    std::vector<float> embedding;
    std::vector<SearchHit> hits;
  };
  std::future<EmbeddedSearch> embed_and_search(std::vector<int32_t> ids, Collection::Target target,
                                               int32_t k);
  // query: [dim] unit norm; hub_weight as Collection::search's. Jobs with the same target and
  // k share one Collection::search.
  std::future<std::vector<SearchHit>> search(Collection::Target target, std::vector<float> query,
                                             int32_t k, float hub_weight = 0);

  // Jobs queued or running now (a finished job leaves the count before its future is ready).
  int64_t queue_depth() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mms
