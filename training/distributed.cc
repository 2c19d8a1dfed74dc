#include "training/distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>
#ifdef MMSEARCH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "encoders/nn/dual_encoder.h"

namespace mms {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How often each rank proves it is alive, and how long a silent one is watched before it is
// named: a killed rank's last beat can be up to one period old when the others notice.
constexpr milliseconds kBeatPeriod{500};
constexpr milliseconds kBeatWindow{2500};
// Store requests from the watchdog side must not hang on a stopped rank 0 (which hosts the
// store) for the whole run's timeout.
constexpr milliseconds kProbeTimeout{5000};

int32_t parse_int(const std::string& text, const std::string& name, int64_t lo, int64_t hi) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || v < lo || v > hi) {
    throw Error::invalid_argument(name + " is '" + text + "'; expected an integer in [" +
                                  std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return static_cast<int32_t>(v);
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

std::string alive_key(int32_t rank) { return "mms/alive/" + std::to_string(rank); }
std::string failed_key(int32_t rank) { return "mms/failed/" + std::to_string(rank); }

c10::intrusive_ptr<c10d::TCPStore> store_client(const DistributedSettings& s, milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(s.master_port);
  o.isServer = false;
  o.waitWorkers = false;
  o.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(s.master_addr, o);
}

}  // namespace

DistributedSettings resolve_distributed(const LaunchFlags& flags, const EnvLookup& env) {
  DistributedSettings s;
  auto from_env = [&](const char* name) -> std::string {
    const char* v = env(name);
    return v != nullptr ? std::string(v) : std::string();
  };
  const std::string world_env = from_env("WORLD_SIZE"), rank_env = from_env("RANK"),
                    local_env = from_env("LOCAL_RANK");
  s.world_size = flags.world_size >= 0 ? flags.world_size
                 : world_env.empty()   ? 1
                                       : parse_int(world_env, "WORLD_SIZE", 1, 1 << 20);
  if (s.world_size < 1) {
    throw Error::invalid_argument("--world-size is " + std::to_string(s.world_size) +
                                  "; expected 1 or more");
  }
  s.rank = flags.rank >= 0   ? flags.rank
           : rank_env.empty() ? 0
                              : parse_int(rank_env, "RANK", 0, s.world_size - 1);
  if (s.rank >= s.world_size) {
    throw Error::invalid_argument("--rank " + std::to_string(s.rank) + " is outside [0, " +
                                  std::to_string(s.world_size - 1) + "] (world size " +
                                  std::to_string(s.world_size) + ")");
  }
  s.local_rank = flags.local_rank >= 0 ? flags.local_rank
                 : local_env.empty()   ? 0
                                       : parse_int(local_env, "LOCAL_RANK", 0, 1 << 20);
  if (!flags.master.empty()) {
    const size_t colon = flags.master.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      throw Error::invalid_argument("--master is '" + flags.master + "'; expected HOST:PORT");
    }
    s.master_addr = flags.master.substr(0, colon);
    s.master_port = parse_int(flags.master.substr(colon + 1), "the port of --master", 1, 65535);
  } else {
    const std::string addr = from_env("MASTER_ADDR"), port = from_env("MASTER_PORT");
    if (!addr.empty()) s.master_addr = addr;
    if (!port.empty()) s.master_port = parse_int(port, "MASTER_PORT", 1, 65535);
    if (s.world_size > 1 && (addr.empty() || port.empty()) && !is_loopback(s.master_addr)) {
      throw Error::invalid_argument("a distributed run needs --master HOST:PORT (or MASTER_ADDR and MASTER_PORT)");
    }
  }
  if (flags.timeout_s >= 0) {
    s.timeout_s = flags.timeout_s;
  } else if (const std::string t = from_env("MMSEARCH_DIST_TIMEOUT"); !t.empty()) {
    s.timeout_s = parse_int(t, "MMSEARCH_DIST_TIMEOUT", 1, 7 * 24 * 3600);
  }
  if (!(s.timeout_s > 0)) {
    throw Error::invalid_argument("--dist-timeout must be a positive number of seconds");
  }
  return s;
}

struct Communicator::Impl {
  DistributedSettings s;
  torch::Device device{torch::kCPU};
  c10::intrusive_ptr<c10d::TCPStore> store;  // rank 0: the server; also the group's rendezvous
  c10::intrusive_ptr<c10d::TCPStore> probe;  // the watchdog's own client, short timeout
  c10::intrusive_ptr<c10d::TCPStore> beat;   // the heartbeat thread's client
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::thread heart;
  std::mutex mutex;
  std::condition_variable cv;
  bool stop = false;
  int64_t step = -1;
  double comm_seconds = 0;

  std::string me() const {
    return "rank " + std::to_string(s.rank) + " of " + std::to_string(s.world_size) + ": ";
  }
  std::string during(const char* what) const {
    return std::string("during ") + what + (step >= 0 ? " at step " + std::to_string(step) : "");
  }
  std::string store_gone() const {
    return "rank 0, which hosts the rendezvous store at " + s.master_addr + ":" +
           std::to_string(s.master_port) + ", is gone or not answering (killed, hung or exited)";
  }

  void beat_loop() {
    std::unique_lock<std::mutex> lock(mutex);
    while (!stop) {
      lock.unlock();
      try {
        beat->add(alive_key(s.rank), 1);
      } catch (const std::exception&) {
        // The store is gone (rank 0 ended); the collectives report that, not this thread.
      }
      lock.lock();
      cv.wait_for(lock, kBeatPeriod, [&] { return stop; });
    }
  }

  void stop_heart() {
    if (!heart.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
    }
    cv.notify_all();
    heart.join();
  }

  std::vector<int64_t> beats() {
    std::vector<int64_t> v(static_cast<size_t>(s.world_size));
    for (int32_t r = 0; r < s.world_size; ++r) v[static_cast<size_t>(r)] = probe->add(alive_key(r), 0);
    return v;
  }

  std::string failure_of_another_rank() {
    for (int32_t r = 0; r < s.world_size; ++r) {
      if (r == s.rank || !probe->check({failed_key(r)})) continue;
      const std::vector<uint8_t> m = probe->get(failed_key(r));
      return "rank " + std::to_string(r) + " failed: " + std::string(m.begin(), m.end());
    }
    return "";
  }

  // Why a collective failed, naming the rank at fault: one that published its error, else
  // those whose heartbeat stopped, else rank 0 when the store itself is unreachable.
  std::string diagnose(const char* what, const std::string& cause) {
    try {
      std::string failed = failure_of_another_rank();
      if (failed.empty()) {
        const std::vector<int64_t> before = beats();
        std::this_thread::sleep_for(kBeatWindow);
        failed = failure_of_another_rank();
        if (failed.empty()) {
          const std::vector<int64_t> after = beats();
          std::string silent;
          int32_t count = 0;
          for (int32_t r = 0; r < s.world_size; ++r) {
            if (r == s.rank || after[size_t(r)] != before[size_t(r)]) continue;
            silent += (count++ ? ", " : "") + std::to_string(r);
          }
          if (count > 0) {
            failed = (count == 1 ? "rank " : "ranks ") + silent +
                     " stopped responding (killed, hung or stopped)";
          }
        }
      }
      if (!failed.empty()) {
        return me() + failed + " " + during(what) + "; stopping (cause seen here: " + cause + ")";
      }
    } catch (const std::exception&) {
      if (s.rank != 0) return me() + store_gone() + " " + during(what) + "; stopping";
    }
    return me() + during(what) + " the collective failed: " + cause;
  }

  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
    const auto t0 = Clock::now();
    try {
      work->wait();
    } catch (const std::exception& e) {
      throw Error::unavailable(diagnose(what, e.what()));
    }
    comm_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  }
};

Communicator::Communicator(const DistributedSettings& settings, bool cuda)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.s = settings;
  if (settings.world_size == 1) return;
  const milliseconds timeout(static_cast<int64_t>(settings.timeout_s * 1000));
  const std::string where = settings.master_addr + ":" + std::to_string(settings.master_port);
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(settings.master_port);
    o.isServer = settings.rank == 0;
    o.numWorkers = static_cast<size_t>(settings.world_size);
    o.waitWorkers = true;  // returns once every rank has joined, or throws after `timeout`
    o.timeout = timeout;
    m.store = c10::make_intrusive<c10d::TCPStore>(settings.master_addr, o);
    m.probe = store_client(settings, kProbeTimeout);
    m.beat = store_client(settings, kProbeTimeout);
  } catch (const std::exception& e) {
    throw Error::unavailable(m.me() + "could not gather all " +
                             std::to_string(settings.world_size) + " ranks at " + where +
                             " within " + std::to_string(settings.timeout_s) + " s: " + e.what());
  }
  m.heart = std::thread([&m] { m.beat_loop(); });
  try {
    if (cuda) {
#ifdef MMSEARCH_NCCL
      // Without blocking wait, NCCL collectives ignore the timeout and a lost rank hangs.
      setenv("NCCL_BLOCKING_WAIT", "1", 0);
      m.device = torch::Device(torch::kCUDA, static_cast<int16_t>(settings.local_rank));
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      m.group = c10::make_intrusive<c10d::ProcessGroupNCCL>(m.store, settings.rank,
                                                            settings.world_size, options);
#else
      throw Error::unsupported(
          "--device cuda with --world-size > 1 needs a build with -DMMSEARCH_CUDA=ON against a "
          "CUDA LibTorch (NCCL)");
#endif
    } else {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      // GLOO_SOCKET_IFNAME picks the network interface, as in PyTorch; a loopback master means
      // every rank is on this machine; otherwise the interface the hostname resolves to.
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (is_loopback(settings.master_addr)) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      options->threads = 2;
      m.group = c10::make_intrusive<c10d::ProcessGroupGloo>(m.store, settings.rank,
                                                            settings.world_size, options);
    }
  } catch (const Error&) {
    m.stop_heart();  // the destructor does not run when the constructor throws
    throw;
  } catch (const std::exception& e) {
    const std::string message = m.diagnose("the process group's set-up", e.what());
    m.stop_heart();
    throw Error::unavailable(message);
  }
}

Communicator::~Communicator() { impl_->stop_heart(); }

int32_t Communicator::rank() const { return impl_->s.rank; }
int32_t Communicator::world_size() const { return impl_->s.world_size; }
void Communicator::set_step(int64_t step) { impl_->step = step; }
double Communicator::communication_seconds() const { return impl_->comm_seconds; }

at::Tensor Communicator::all_gather(const at::Tensor& local, const char* what) {
  Impl& m = *impl_;
  if (m.s.world_size == 1) return local;
  const at::Tensor send = local.detach().contiguous();
  std::vector<std::vector<at::Tensor>> out(1);
  for (int32_t r = 0; r < m.s.world_size; ++r) out[0].push_back(torch::empty_like(send));
  std::vector<at::Tensor> in{send};
  m.wait(m.group->allgather(out, in), what);
  out[0][static_cast<size_t>(m.s.rank)] = local;  // the rows whose gradient is this rank's
  return torch::cat(out[0]);
}

void Communicator::all_reduce_sum(const std::vector<at::Tensor>& tensors, const char* what) {
  Impl& m = *impl_;
  if (m.s.world_size == 1 || tensors.empty()) return;
  // Buckets of consecutive tensors of one dtype, flattened into one buffer each.
  struct Bucket {
    size_t first, last;
    at::Tensor flat;
    c10::intrusive_ptr<c10d::Work> work;
  };
  std::vector<Bucket> buckets;
  size_t first = 0;
  int64_t bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    bytes += tensors[i].numel() * static_cast<int64_t>(tensors[i].element_size());
    const bool last = i + 1 == tensors.size();
    if (last || bytes >= kBucketBytes || tensors[i + 1].scalar_type() != tensors[i].scalar_type()) {
      buckets.push_back({first, i + 1, {}, {}});
      first = i + 1;
      bytes = 0;
    }
  }
  for (Bucket& b : buckets) {
    std::vector<at::Tensor> parts;
    for (size_t i = b.first; i < b.last; ++i) parts.push_back(tensors[i].reshape({-1}));
    b.flat = torch::cat(parts);
    std::vector<at::Tensor> one{b.flat};
    b.work = m.group->allreduce(one);  // all buckets in flight before the first wait
  }
  for (Bucket& b : buckets) {
    m.wait(b.work, what);
    int64_t offset = 0;
    for (size_t i = b.first; i < b.last; ++i) {
      const int64_t n = tensors[i].numel();
      tensors[i].copy_(b.flat.slice(0, offset, offset + n).view_as(tensors[i]));
      offset += n;
    }
  }
}

void Communicator::broadcast_bytes(std::string& bytes, const char* what) {
  Impl& m = *impl_;
  if (m.s.world_size == 1) return;
  std::vector<at::Tensor> size{
      torch::full({1}, static_cast<int64_t>(bytes.size()), torch::kLong).to(m.device)};
  m.wait(m.group->broadcast(size), what);
  const int64_t n = size[0].cpu().item<int64_t>();
  at::Tensor buffer = torch::empty({n}, torch::kUInt8);
  if (m.s.rank == 0) std::memcpy(buffer.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  std::vector<at::Tensor> data{buffer.to(m.device)};
  m.wait(m.group->broadcast(data), what);
  if (m.s.rank != 0) {
    buffer = data[0].cpu();
    bytes.assign(reinterpret_cast<const char*>(buffer.data_ptr<uint8_t>()), static_cast<size_t>(n));
  }
}

std::vector<double> Communicator::all_gather_value(double value, const char* what) {
  Impl& m = *impl_;
  if (m.s.world_size == 1) return {value};
  const at::Tensor gathered =
      all_gather(torch::full({1}, value, torch::kDouble).to(m.device), what).cpu();
  return std::vector<double>(gathered.data_ptr<double>(),
                             gathered.data_ptr<double>() + gathered.numel());
}

void Communicator::mark_main_done(const std::string& key) {
  Impl& m = *impl_;
  if (m.s.world_size == 1) return;
  m.store->set("mms/done/" + key, std::vector<uint8_t>{1});
}

void Communicator::wait_for_main(const std::string& key, const char* what) {
  Impl& m = *impl_;
  if (m.s.world_size == 1) return;
  // Rank 0's validation or decoding may take longer than any collective timeout, so the wait
  // is bounded by rank 0's liveness instead: its heartbeat must advance every timeout_s.
  const std::string done = "mms/done/" + key;
  int64_t last_beat = -1;
  auto last_change = Clock::now();
  try {
    while (!m.probe->check({done})) {
      const int64_t b = m.probe->add(alive_key(0), 0);
      if (b != last_beat) {
        last_beat = b;
        last_change = Clock::now();
      } else if (std::chrono::duration<double>(Clock::now() - last_change).count() > m.s.timeout_s) {
        throw Error::unavailable(m.me() + "rank 0 stopped responding (hung or stopped) " +
                                 m.during(what) + "; waited " + std::to_string(m.s.timeout_s) +
                                 " s");
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception&) {
    throw Error::unavailable(m.me() + m.store_gone() + " " + m.during(what) + "; stopping");
  }
}

void Communicator::report_failure(const std::string& message) noexcept {
  Impl& m = *impl_;
  if (m.s.world_size == 1 || !m.probe) return;
  try {
    m.probe->set(failed_key(m.s.rank), std::vector<uint8_t>(message.begin(), message.end()));
  } catch (...) {
    // Nobody left to tell.
  }
}

at::Tensor global_contrastive_loss(Communicator& comm, const at::Tensor& image_local,
                                   const at::Tensor& text_local, const at::Tensor& scale,
                                   const at::Tensor& positives) {
  if (!comm.distributed()) return nn::contrastive_loss(image_local, text_local, scale, positives);
  const int64_t n = image_local.size(0), d = image_local.size(1);
  const int64_t k = text_local.size(0) / n;
  const int64_t world = comm.world_size();
  // One gather for both towers: [world, (1 + k) n, D].
  const at::Tensor all =
      comm.all_gather(torch::cat({image_local, text_local}), "the embedding all-gather")
          .view({world, (1 + k) * n, d});
  const at::Tensor images = all.slice(1, 0, n).reshape({world * n, d});
  // Rank-major [world, k, n, D] -> text-block-major [k, world, n, D]: the one-process order.
  const at::Tensor texts =
      all.slice(1, n).reshape({world, k, n, d}).permute({1, 0, 2, 3}).reshape({k * world * n, d});
  return nn::contrastive_loss(images, texts, scale, positives);
}

}  // namespace mms
