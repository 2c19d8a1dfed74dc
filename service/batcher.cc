#include "service/batcher.h"

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <map>
#include <thread>
#include <utility>

#include "common/error.h"
#include "encoders/embedder.h"  // Embedder, set_compute_threads

namespace mms {
namespace {

namespace asio = boost::asio;

// A job's outcome is stored first (result or error) and delivered to its promise only after
// the job has left the queue count, so a caller that submits its next job right away (search
// after embed) never finds its own finished job still counted.
template <typename Result>
struct Outcome {
  Result result;
  std::exception_ptr error;
  std::promise<Result> done;
  void deliver() { error ? done.set_exception(error) : done.set_value(std::move(result)); }
};

struct TextJob : Outcome<std::vector<float>> {
  std::vector<int32_t> ids;  // Tokenizer::encode's: BOS .. EOS
};

struct TextSearchJob : Outcome<Batcher::EmbeddedSearch> {
  std::vector<int32_t> ids;
  Collection::Target target;
  int32_t k;
};

struct ImageJob : Outcome<std::vector<float>> {
  std::vector<float> pixels;
};

struct SearchJob : Outcome<std::vector<SearchHit>> {
  Collection::Target target;
  std::vector<float> query;
  int32_t k;
  float hub_weight = 0;
};

// One kind of job's queue. Touched only on the dispatcher thread, so it needs no lock.
template <typename Job>
struct Lane {
  explicit Lane(const char* kind) : kind(kind) {}
  std::vector<std::shared_ptr<Job>> pending;
  const char* kind;
};

template <typename Job>
void fail_all(std::vector<std::shared_ptr<Job>>& jobs, std::exception_ptr error) {
  for (auto& job : jobs) job->error = error;
}

}  // namespace

// Two executors: the dispatcher, one thread that owns the lanes and decides what runs (its
// work is a few pointer moves a job, so it answers at once even while every worker computes:
// jobs that arrive then are queued where the next free worker finds them all), and the
// workers, which only run batches. Had the lanes been handled on the workers themselves, a
// job arriving while both computed would wait for one to finish before even being queued,
// and the first to be queued then would run alone.
struct Batcher::Impl {
  Impl(const Embedder& embedder, const Collection& collection, const BatcherOptions& options,
       BatchObserver observer)
      : embedder(embedder),
        collection(collection),
        options(options),
        n_workers(std::max(1, options.workers)),
        observer(std::move(observer)),
        dispatch_work(asio::make_work_guard(dispatch_io)),
        compute_work(asio::make_work_guard(compute_io)),
        texts("text"),
        text_searches("text"),
        images("image"),
        searches("search") {
    dispatcher = std::thread([this] { dispatch_io.run(); });
    for (int32_t i = 0; i < n_workers; ++i) {
      workers.emplace_back([this] {
        if (n_workers > 1) set_compute_threads(1);
        compute_io.run();
      });
    }
  }

  void reserve_slot() {
    if (depth.fetch_add(1) >= options.max_queue) {
      depth.fetch_sub(1);
      throw Error::unavailable("the server is busy (" + std::to_string(options.max_queue) +
                               " requests queued); retry shortly");
    }
  }

  // Jobs submitted together (a burst of requests) reach the dispatcher one post each; the
  // dispatch waits for the last of those already on their way, so that a burst arriving at
  // idle workers is shared among them instead of its first job running alone.
  template <typename Job>
  void enqueue(Lane<Job>& lane, std::shared_ptr<Job> job) {
    in_flight.fetch_add(1);
    asio::post(dispatch_io, [this, &lane, job = std::move(job)]() mutable {
      lane.pending.push_back(std::move(job));
      if (in_flight.fetch_sub(1) == 1 ||
          static_cast<int32_t>(lane.pending.size()) >= options.max_batch) {
        dispatch();
      }
    });
  }

  // On the dispatcher, while a worker is idle: takes the lanes with pending jobs in turn,
  // from the one after the lane served last (no kind waits behind a busy other), and hands
  // all of a lane's pending jobs to the workers, shared among them: 8 queries on 2 workers
  // run as two batches of 4 on both cores, not one of 8 on one core while the other idles
  // (the second batch goes to whichever worker frees first).
  void dispatch() {
    constexpr int kLanes = 4;
    for (int visited = 0; running < n_workers && visited < kLanes; ++visited) {
      next_lane = (next_lane + 1) % kLanes;
      switch (next_lane) {
        case 0: start_batches(texts); break;
        case 1: start_batches(text_searches); break;
        case 2: start_batches(images); break;
        default: start_batches(searches); break;
      }
    }
    if (closing) maybe_closed();
  }

  template <typename Job>
  void start_batches(Lane<Job>& lane) {
    const size_t workers = static_cast<size_t>(n_workers);
    const size_t share = std::min((lane.pending.size() + workers - 1) / workers,
                                  static_cast<size_t>(options.max_batch));
    while (!lane.pending.empty()) {
      const size_t n = std::min(share, lane.pending.size());
      std::vector<std::shared_ptr<Job>> batch(lane.pending.begin(), lane.pending.begin() + n);
      lane.pending.erase(lane.pending.begin(), lane.pending.begin() + n);
      start_batch(lane.kind, std::move(batch));
    }
  }

  template <typename Job>
  void start_batch(const char* kind, std::vector<std::shared_ptr<Job>> batch) {
    ++running;
    asio::post(compute_io, [this, kind, batch = std::move(batch)]() mutable {
      if (observer) observer(kind, static_cast<int64_t>(batch.size()));
      try {
        run(batch);
      } catch (...) {
        fail_all(batch, std::current_exception());
      }
      depth.fetch_sub(static_cast<int64_t>(batch.size()));
      // The worker is free: the dispatcher hands out the next batch while this one's callers
      // are woken.
      asio::post(dispatch_io, [this] {
        --running;
        dispatch();
      });
      for (auto& job : batch) job->deliver();
    });
  }

  // On the dispatcher, once the batcher is being destroyed: every job is done when no batch
  // runs, no lane holds a job and none is on its way.
  void maybe_closed() {
    if (running == 0 && in_flight.load() == 0 && texts.pending.empty() &&
        text_searches.pending.empty() && images.pending.empty() && searches.pending.empty()) {
      if (!closed_signalled) closed.set_value();
      closed_signalled = true;
    }
  }

  void run(std::vector<std::shared_ptr<TextJob>>& batch) {
    std::vector<std::vector<int32_t>> ids;
    ids.reserve(batch.size());
    for (const auto& job : batch) ids.push_back(job->ids);
    split_rows(batch, embedder.embed_token_ids(ids));
  }

  // Embeds the batch, then searches its embeddings, grouped by target and k like search jobs.
  void run(std::vector<std::shared_ptr<TextSearchJob>>& batch) {
    std::vector<std::vector<int32_t>> ids;
    ids.reserve(batch.size());
    for (const auto& job : batch) ids.push_back(job->ids);
    const std::vector<float> vectors = embedder.embed_token_ids(ids);
    const size_t dim = static_cast<size_t>(embedder.dim());
    for (size_t i = 0; i < batch.size(); ++i) {
      batch[i]->result.embedding.assign(vectors.begin() + i * dim, vectors.begin() + (i + 1) * dim);
    }
    if (observer) observer("search", static_cast<int64_t>(batch.size()));
    // A text query: across modalities over images (hubness-aware scoring), not over texts.
    const float across = embedder.hub_weight();
    search_groups(
        batch,
        [](const TextSearchJob& job) -> const std::vector<float>& { return job.result.embedding; },
        [across](const TextSearchJob& job) {
          return job.target == Collection::Target::kImages ? across : 0.f;
        },
        [](TextSearchJob& job, std::vector<SearchHit> hits) { job.result.hits = std::move(hits); });
  }

  void run(std::vector<std::shared_ptr<ImageJob>>& batch) {
    std::vector<float> pixels;
    for (const auto& job : batch)
      pixels.insert(pixels.end(), job->pixels.begin(), job->pixels.end());
    split_rows(batch, embedder.embed_pixels(pixels.data(), static_cast<int64_t>(batch.size())));
  }

  template <typename Job>
  void split_rows(std::vector<std::shared_ptr<Job>>& batch, const std::vector<float>& vectors) {
    const size_t dim = static_cast<size_t>(embedder.dim());
    for (size_t i = 0; i < batch.size(); ++i) {
      batch[i]->result.assign(vectors.begin() + i * dim, vectors.begin() + (i + 1) * dim);
    }
  }

  void run(std::vector<std::shared_ptr<SearchJob>>& batch) {
    search_groups(
        batch, [](const SearchJob& job) -> const std::vector<float>& { return job.query; },
        [](const SearchJob& job) { return job.hub_weight; },
        [](SearchJob& job, std::vector<SearchHit> hits) { job.result = std::move(hits); });
  }

  // Jobs with the same target and k share one Collection::search; a group that fails fails
  // its jobs only. query(job) is the job's [dim] query, hub_weight(job) its hub weight;
  // found(job, hits) takes its hits.
  template <typename Job, typename Query, typename HubWeight, typename Found>
  void search_groups(std::vector<std::shared_ptr<Job>>& batch, Query query, HubWeight hub_weight,
                     Found found) {
    std::map<std::pair<Collection::Target, int32_t>, std::vector<std::shared_ptr<Job>>> groups;
    for (const auto& job : batch) groups[{job->target, job->k}].push_back(job);
    for (auto& [key, jobs] : groups) {
      try {
        std::vector<float> queries, hub_weights;
        for (const auto& job : jobs) {
          const std::vector<float>& q = query(*job);
          queries.insert(queries.end(), q.begin(), q.end());
          hub_weights.push_back(hub_weight(*job));
        }
        auto hits = collection.search(key.first, queries.data(), static_cast<int64_t>(jobs.size()),
                                      key.second, hub_weights.data());
        for (size_t i = 0; i < jobs.size(); ++i) found(*jobs[i], std::move(hits.at(i)));
      } catch (...) {
        fail_all(jobs, std::current_exception());
      }
    }
  }

  const Embedder& embedder;
  const Collection& collection;
  const BatcherOptions options;
  const int32_t n_workers;
  const BatchObserver observer;
  asio::io_context dispatch_io;
  asio::io_context compute_io;
  asio::executor_work_guard<asio::io_context::executor_type> dispatch_work;
  asio::executor_work_guard<asio::io_context::executor_type> compute_work;
  // The dispatcher's own state (touched on its thread only).
  Lane<TextJob> texts;
  Lane<TextSearchJob> text_searches;
  Lane<ImageJob> images;
  Lane<SearchJob> searches;
  int32_t running = 0;  // batches handed to the workers (running or queued) and not yet done
  int next_lane = 0;
  bool closing = false;
  bool closed_signalled = false;
  std::promise<void> closed;

  std::atomic<int64_t> depth{0};
  std::atomic<int64_t> in_flight{0};  // jobs posted to the dispatcher and not yet in a lane
  std::thread dispatcher;
  std::vector<std::thread> workers;
};

Batcher::Batcher(const Embedder& embedder, const Collection& collection,
                 const BatcherOptions& options, BatchObserver observer)
    : impl_(std::make_unique<Impl>(embedder, collection, options, std::move(observer))) {}

Batcher::~Batcher() {
  // Every queued job still runs: the dispatcher says when the last is done, then both
  // executors run out of work and their threads return.
  std::future<void> closed = impl_->closed.get_future();
  asio::post(impl_->dispatch_io, [impl = impl_.get()] {
    impl->closing = true;
    impl->maybe_closed();
  });
  closed.wait();
  impl_->compute_work.reset();
  impl_->dispatch_work.reset();
  for (std::thread& t : impl_->workers) t.join();
  impl_->dispatcher.join();
}

std::future<std::vector<float>> Batcher::embed_tokens(std::vector<int32_t> ids) {
  impl_->reserve_slot();
  auto job = std::make_shared<TextJob>();
  job->ids = std::move(ids);
  auto result = job->done.get_future();
  impl_->enqueue(impl_->texts, std::move(job));
  return result;
}

std::future<Batcher::EmbeddedSearch> Batcher::embed_and_search(std::vector<int32_t> ids,
                                                               Collection::Target target,
                                                               int32_t k) {
  impl_->reserve_slot();
  auto job = std::make_shared<TextSearchJob>();
  job->ids = std::move(ids);
  job->target = target;
  job->k = k;
  auto result = job->done.get_future();
  impl_->enqueue(impl_->text_searches, std::move(job));
  return result;
}

std::future<std::vector<float>> Batcher::embed_image(std::vector<float> pixels) {
  impl_->reserve_slot();
  auto job = std::make_shared<ImageJob>();
  job->pixels = std::move(pixels);
  auto result = job->done.get_future();
  impl_->enqueue(impl_->images, std::move(job));
  return result;
}

std::future<std::vector<SearchHit>> Batcher::search(Collection::Target target,
                                                    std::vector<float> query, int32_t k,
                                                    float hub_weight) {
  impl_->reserve_slot();
  auto job = std::make_shared<SearchJob>();
  job->target = target;
  job->query = std::move(query);
  job->k = k;
  job->hub_weight = hub_weight;
  auto result = job->done.get_future();
  impl_->enqueue(impl_->searches, std::move(job));
  return result;
}

int64_t Batcher::queue_depth() const {
  return impl_->depth.load();
}

}  // namespace mms
