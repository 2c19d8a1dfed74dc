#include "service/batcher.h"

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
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
};

// One kind of job. Touched only through its strand, so it needs no lock; its batches run on
// any worker, outside the strand.
template <typename Job>
struct Lane {
  Lane(asio::io_context& io, const char* kind)
      : strand(asio::make_strand(io)), timer(strand), kind(kind) {}
  std::vector<std::shared_ptr<Job>> pending;
  asio::strand<asio::io_context::executor_type> strand;
  asio::steady_timer timer;
  uint64_t generation = 0;  // a timer handler from an older generation is stale
  bool armed = false;
  size_t last_batch = 1;  // size of the lane's previous batch
  const char* kind;
};

template <typename Job>
void fail_all(std::vector<std::shared_ptr<Job>>& jobs, std::exception_ptr error) {
  for (auto& job : jobs) job->error = error;
}

}  // namespace

struct Batcher::Impl {
  Impl(const Embedder& embedder, const Collection& collection, const BatcherOptions& options,
       BatchObserver observer)
      : embedder(embedder),
        collection(collection),
        options(options),
        observer(std::move(observer)),
        work(asio::make_work_guard(io)),
        texts(io, "text"),
        text_searches(io, "text"),
        images(io, "image"),
        searches(io, "search") {
    for (int32_t i = 0; i < std::max(1, options.workers); ++i) {
      workers.emplace_back([this] {
        if (this->options.workers > 1) set_compute_threads(1);
        io.run();
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

  // Waiting for company only pays when there is some: a job that arrives while nothing else
  // is on its way, in a lane whose last batch was a single job, with a worker free, runs at
  // once (a lone request does not pay flush_after per stage). Otherwise the lane lingers up
  // to flush_after for more jobs.
  template <typename Job>
  void enqueue(Lane<Job>& lane, std::shared_ptr<Job> job) {
    in_flight.fetch_add(1);
    asio::post(lane.strand, [this, &lane, job] {
      const bool alone = in_flight.fetch_sub(1) == 1;
      lane.pending.push_back(job);
      const bool worker_free = running.load() < std::max(1, options.workers);
      if (static_cast<int32_t>(lane.pending.size()) >= options.max_batch ||
          (alone && worker_free && lane.last_batch <= 1 && lane.pending.size() == 1)) {
        flush(lane);
      } else if (!lane.armed) {
        lane.armed = true;
        const uint64_t generation = ++lane.generation;
        lane.timer.expires_after(options.flush_after);
        lane.timer.async_wait([this, &lane, generation](const boost::system::error_code& ec) {
          if (ec || generation != lane.generation) return;
          flush(lane);
        });
      }
    });
  }

  template <typename Job>
  void flush(Lane<Job>& lane) {
    lane.armed = false;
    ++lane.generation;
    lane.timer.cancel();
    // What is pending is shared among the workers: 8 queries on 2 workers run as two batches
    // of 4 on both cores, not one batch of 8 on one core while the other idles.
    const size_t workers = static_cast<size_t>(std::max(1, options.workers));
    const size_t share = (lane.pending.size() + workers - 1) / workers;
    while (!lane.pending.empty()) {
      const size_t n =
          std::min({lane.pending.size(), share, static_cast<size_t>(options.max_batch)});
      std::vector<std::shared_ptr<Job>> batch(lane.pending.begin(), lane.pending.begin() + n);
      lane.pending.erase(lane.pending.begin(), lane.pending.begin() + n);
      lane.last_batch = n;
      running.fetch_add(1);
      asio::post(io, [this, kind = lane.kind, batch = std::move(batch)]() mutable {
        if (observer) observer(kind, static_cast<int64_t>(batch.size()));
        try {
          run(batch);
        } catch (...) {
          fail_all(batch, std::current_exception());
        }
        running.fetch_sub(1);
        depth.fetch_sub(static_cast<int64_t>(batch.size()));
        for (auto& job : batch) job->deliver();
      });
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
    search_groups(
        batch,
        [](const TextSearchJob& job) -> const std::vector<float>& { return job.result.embedding; },
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
        [](SearchJob& job, std::vector<SearchHit> hits) { job.result = std::move(hits); });
  }

  // Jobs with the same target and k share one Collection::search; a group that fails fails
  // its jobs only. query(job) is the job's [dim] query; found(job, hits) takes its hits.
  template <typename Job, typename Query, typename Found>
  void search_groups(std::vector<std::shared_ptr<Job>>& batch, Query query, Found found) {
    std::map<std::pair<Collection::Target, int32_t>, std::vector<std::shared_ptr<Job>>> groups;
    for (const auto& job : batch) groups[{job->target, job->k}].push_back(job);
    for (auto& [key, jobs] : groups) {
      try {
        std::vector<float> queries;
        for (const auto& job : jobs) {
          const std::vector<float>& q = query(*job);
          queries.insert(queries.end(), q.begin(), q.end());
        }
        auto hits = collection.search(key.first, queries.data(), static_cast<int64_t>(jobs.size()),
                                      key.second);
        for (size_t i = 0; i < jobs.size(); ++i) found(*jobs[i], std::move(hits.at(i)));
      } catch (...) {
        fail_all(jobs, std::current_exception());
      }
    }
  }

  const Embedder& embedder;
  const Collection& collection;
  const BatcherOptions options;
  const BatchObserver observer;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  Lane<TextJob> texts;
  Lane<TextSearchJob> text_searches;
  Lane<ImageJob> images;
  Lane<SearchJob> searches;
  std::atomic<int64_t> depth{0};
  std::atomic<int64_t> in_flight{0};  // jobs posted to a lane that it has not taken yet
  std::atomic<int32_t> running{0};    // batches handed to the workers and not yet done
  std::vector<std::thread> workers;
};

Batcher::Batcher(const Embedder& embedder, const Collection& collection,
                 const BatcherOptions& options, BatchObserver observer)
    : impl_(std::make_unique<Impl>(embedder, collection, options, std::move(observer))) {}

Batcher::~Batcher() {
  impl_->work.reset();  // the workers finish what is queued (timers included), then return
  for (std::thread& t : impl_->workers) t.join();
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
                                                    std::vector<float> query, int32_t k) {
  impl_->reserve_slot();
  auto job = std::make_shared<SearchJob>();
  job->target = target;
  job->query = std::move(query);
  job->k = k;
  auto result = job->done.get_future();
  impl_->enqueue(impl_->searches, std::move(job));
  return result;
}

int64_t Batcher::queue_depth() const {
  return impl_->depth.load();
}

}  // namespace mms
