// Training past one process, on torch c10d: where a process sits in a run (torchrun's
// environment or flags), the process group (Gloo on CPU, NCCL with a CUDA LibTorch) and the
// few collectives the trainer needs, each bounded by a timeout and failing with a message that
// names the rank at fault instead of hanging.
//
// Invariants: every rank issues the same collectives in the same order from one thread (the
// trainer's); rank 0 hosts the rendezvous store (a c10d::TCPStore at MASTER_ADDR:MASTER_PORT)
// and is the only one that writes files. With world_size 1 nothing is opened and every
// collective is the identity, so a one-process run is the program it always was.
//
// c10d and Gloo headers stay in distributed.cc; this header only names at::Tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace at {
class Tensor;
}

namespace mms {

struct DistributedSettings {
  int32_t world_size = 1;
  int32_t rank = 0;
  int32_t local_rank = 0;  // the rank on this machine: picks the GPU with --device cuda
  std::string master_addr = "127.0.0.1";
  int32_t master_port = 29500;
  // A collective (or the rendezvous) that waits longer than this for another rank ends the run
  // with an error naming that rank. Waits for rank 0's validation are not bounded by it while
  // rank 0 is alive (see Communicator::wait_for_main).
  double timeout_s = 300;
};

// What the command line gave; unset fields fall back to torchrun's environment variables
// (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), then to one process.
struct LaunchFlags {
  int32_t world_size = -1;  // -1: not given
  int32_t rank = -1;
  int32_t local_rank = -1;
  std::string master;     // "HOST:PORT", "" when not given
  double timeout_s = -1;  // -1: not given (MMSEARCH_DIST_TIMEOUT, then 300 s)
};
using EnvLookup = std::function<const char*(const char*)>;

// Throws Error::invalid_argument naming the flag or variable that is malformed or out of range
// (a rank outside [0, world_size), a port outside 1..65535, ...).
DistributedSettings resolve_distributed(const LaunchFlags& flags, const EnvLookup& env);

// The process group of one run. Not thread-safe: one thread issues every collective.
class Communicator {
 public:
  // Joins the run: rank 0 starts the store, everyone waits (up to timeout_s) for all
  // world_size ranks, then builds the process group (NCCL when `cuda`, else Gloo).
  explicit Communicator(const DistributedSettings& settings, bool cuda = false);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int32_t rank() const;
  int32_t world_size() const;
  bool is_main() const { return rank() == 0; }
  bool distributed() const { return world_size() > 1; }

  // The optimizer step being taken, for error messages.
  void set_step(int64_t step);

  // [n, ...] from every rank -> [world_size * n, ...], rank r's rows at [r * n, (r + 1) * n).
  // Autograd flows back into `local` only (the rows this rank computed); the other ranks'
  // rows are constants here, as each rank differentiates its own shard (see
  // global_contrastive_loss).
  at::Tensor all_gather(const at::Tensor& local, const char* what);

  // Sums every tensor across ranks, in place, packed into buckets of about kBucketBytes so a
  // model's hundreds of small gradients cost a few collectives, all in flight at once.
  static constexpr int64_t kBucketBytes = 4 << 20;
  void all_reduce_sum(const std::vector<at::Tensor>& tensors, const char* what);

  // Rank 0's bytes on every rank (for checkpoint state: no shared file system needed).
  void broadcast_bytes(std::string& bytes, const char* what);

  // Every rank's value, in rank order.
  std::vector<double> all_gather_value(double value, const char* what);

  // Rank 0 calls mark_main_done(key) after work only it does (validation, the decoded-image
  // cache); the others call wait_for_main(key), which waits as long as rank 0 is alive (its
  // heartbeat advances) and fails within timeout_s once it is gone or stopped.
  void mark_main_done(const std::string& key);
  void wait_for_main(const std::string& key, const char* what);

  // Publishes this rank's fatal error so that the others can name it in theirs.
  void report_failure(const std::string& message) noexcept;

  // Seconds spent inside collectives (waiting for slower ranks included) since start.
  double communication_seconds() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The symmetric InfoNCE (nn::contrastive_loss) of the global batch: every rank's image and
// text embeddings are gathered, and every rank computes the same loss over all of them.
// image_local: [n, D], this rank's rows of the global batch; text_local: [k * n, D], its k texts
// per row as k blocks of n (captions, then views); positives: [N * n, k * N * n] bool over the
// global batch, texts ordered as k blocks of N * n (how a one-process run orders them).
// Gradients reach only this rank's embeddings, so summing the encoders' gradients across
// ranks gives the one-process gradient; the scale's gradient is the whole loss's on every
// rank (divide it by world_size before summing).
at::Tensor global_contrastive_loss(Communicator& comm, const at::Tensor& image_local,
                                   const at::Tensor& text_local, const at::Tensor& scale,
                                   const at::Tensor& positives);

}  // namespace mms
