// Distributed training over loopback, with real processes: this test binary starts copies of
// itself as ranks (MMS_DIST_WORKER set: the copy runs one rank and exits before GoogleTest
// starts). Two ranks at batch 12 (6 each) end with the weights of one rank at batch 12; the
// global loss and its gradients equal the one-process ones; a killed or stopped rank makes the
// other exit with a message naming it, within the timeout; and the run resumes from its last
// checkpoint with one rank or two.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "encoders/embedder.h"
#include "encoders/nn/dual_encoder.h"
#include "training/distributed.h"
#include "training/train_config.h"
#include "training/trainer.h"
#include "training_shapes_fixture.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// ---- The worker side: one rank, configured by the environment. ----

mms::DistributedSettings settings_from_env() {
  return mms::resolve_distributed({}, [](const char* name) { return std::getenv(name); });
}

int run_train_worker() {
  const mms::TrainConfig config = mms::load_train_config(std::getenv("MMS_WORKER_CONFIG"), {});
  mms::TrainOptions options;
  options.out_dir = std::getenv("MMS_WORKER_OUT");
  options.resume = std::string(std::getenv("MMS_WORKER_RESUME")) == "1";
  options.quiet = true;
  options.threads = 1;
  options.distributed = settings_from_env();
  const mms::TrainResult r = mms::train_model(config, options);
  std::cerr << "worker: trained " << r.steps << " steps\n";
  return r.finished ? 0 : 1;
}

// The loss over a random global batch of 8 rows with 2 texts each, computed by every rank from
// its shard, against the one-process loss and gradients.
int run_loss_worker() {
  mms::Communicator comm(settings_from_env());
  const int64_t world = comm.world_size(), r = comm.rank(), batch = 8, n = batch / world, d = 16;
  torch::manual_seed(5);
  namespace F = torch::nn::functional;
  const torch::Tensor images = F::normalize(torch::randn({batch, d}), F::NormalizeFuncOptions().dim(1));
  const torch::Tensor texts =
      F::normalize(torch::randn({2 * batch, d}), F::NormalizeFuncOptions().dim(1));
  torch::Tensor positives = torch::zeros({batch, 2 * batch}, torch::kBool);
  for (int64_t i = 0; i < batch; ++i) {
    positives[i][i] = true;
    positives[i][batch + i] = true;
  }
  positives[1][4] = positives[4][1] = true;  // a duplicate caption across the two shards

  torch::Tensor ref_images = images.clone().requires_grad_(), ref_texts = texts.clone().requires_grad_();
  torch::Tensor ref_scale = torch::full({}, 14.0).requires_grad_();
  const torch::Tensor ref = mms::nn::contrastive_loss(ref_images, ref_texts, ref_scale, positives);
  ref.backward();

  torch::Tensor local_images = images.slice(0, r * n, (r + 1) * n).clone().requires_grad_();
  torch::Tensor local_texts = torch::cat({texts.slice(0, r * n, (r + 1) * n),
                                          texts.slice(0, batch + r * n, batch + (r + 1) * n)})
                                  .clone()
                                  .requires_grad_();
  torch::Tensor scale = torch::full({}, 14.0).requires_grad_();
  const torch::Tensor loss =
      mms::global_contrastive_loss(comm, local_images, local_texts, scale, positives);
  loss.backward();
  // As the trainer does: the scale's gradient is divided by the rank count, then summed.
  std::vector<torch::Tensor> scale_grad{scale.grad() / static_cast<double>(world)};
  comm.all_reduce_sum(scale_grad, "test");

  const torch::Tensor ref_text_grad =
      torch::cat({ref_texts.grad().slice(0, r * n, (r + 1) * n),
                  ref_texts.grad().slice(0, batch + r * n, batch + (r + 1) * n)});
  const double loss_diff = std::abs(loss.item<double>() - ref.item<double>());
  const double image_diff =
      (local_images.grad() - ref_images.grad().slice(0, r * n, (r + 1) * n)).abs().max().item<double>();
  const double text_diff = (local_texts.grad() - ref_text_grad).abs().max().item<double>();
  const double scale_diff = std::abs(scale_grad[0].item<double>() - ref_scale.grad().item<double>());
  std::cerr << "worker: loss " << loss.item<double>() << " one-process " << ref.item<double>()
            << "; gradient differences: images " << image_diff << ", texts " << text_diff
            << ", scale " << scale_diff << "\n";
  return loss_diff < 1e-6 && image_diff < 1e-6 && text_diff < 1e-6 && scale_diff < 1e-5 ? 0 : 1;
}

// Runs before GoogleTest when this process is a worker, and never returns then.
[[maybe_unused]] const bool kIsWorker = [] {
  const char* mode = std::getenv("MMS_DIST_WORKER");
  if (mode == nullptr) return false;
  mms::set_compute_threads(1);
  int code = 1;
  try {
    code = std::string(mode) == "loss" ? run_loss_worker() : run_train_worker();
  } catch (const std::exception& e) {
    std::cerr << "worker error: " << e.what() << "\n";
  }
  std::cerr.flush();
  std::exit(code);
}();

// ---- The test side. ----

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

struct Worker {
  pid_t pid = -1;
  fs::path log;
  std::string output() const {
    std::ifstream in(log);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
};

// Starts this binary as one rank with `vars` added to the environment; its stdout and stderr go
// to `log`.
Worker spawn_worker(const std::map<std::string, std::string>& vars, const fs::path& log) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    if (!vars.count(entry.substr(0, entry.find('=')))) env.push_back(entry);
  }
  for (const auto& [k, v] : vars) env.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string exe = fs::read_symlink("/proc/self/exe").string();
  char* argv[] = {exe.data(), nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  Worker w;
  w.log = log;
  EXPECT_EQ(posix_spawn(&w.pid, exe.c_str(), &actions, nullptr, argv, envp.data()), 0);
  posix_spawn_file_actions_destroy(&actions);
  return w;
}

// The worker's exit status (128 + signal when killed), or -1 if it ran past `seconds` (then
// it is killed).
int wait_exit(const Worker& w, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(w.pid, &status, WNOHANG) == w.pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(w.pid, SIGKILL);
  ::waitpid(w.pid, nullptr, 0);
  return -1;
}

int64_t checkpoint_step(const fs::path& run) {
  std::ifstream in(run / "checkpoint.json");
  if (!in) return 0;
  try {
    return nlohmann::json::parse(in).at("step").get<int64_t>();
  } catch (const std::exception&) {
    return 0;
  }
}

class DistributedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mms_distributed_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    config_ = shapes_fixture::write_shapes_data(dir_);
    // Deterministic inputs: no crop, no colour jitter; GroupNorm, so an image's features do
    // not depend on which rows share its rank's batch.
    config_.augment.jitter = 0;
    config_.augment.crop_scale_min = 1;
    config_.augment.crop_ratio = 1;
    config_.model.image.stem_norm = "group";
  }
  void TearDown() override {
    if (!getenv("KEEP")) fs::remove_all(dir_);
  }

  fs::path write_config() {
    const fs::path file = dir_ / ("config-" + std::to_string(configs_++) + ".json");
    std::ofstream(file) << mms::train_config_to_json(config_);
    return file;
  }

  // Starts `world` ranks training into `run`.
  std::vector<Worker> start_ranks(int world, const fs::path& run, bool resume,
                                  double timeout_s = 60, const char* mode = "train") {
    const fs::path config = write_config();
    const int port = free_port();
    std::vector<Worker> ranks;
    for (int r = 0; r < world; ++r) {
      ranks.push_back(spawn_worker({{"MMS_DIST_WORKER", mode},
                                    {"MMS_WORKER_CONFIG", config.string()},
                                    {"MMS_WORKER_OUT", run.string()},
                                    {"MMS_WORKER_RESUME", resume ? "1" : "0"},
                                    {"RANK", std::to_string(r)},
                                    {"WORLD_SIZE", std::to_string(world)},
                                    {"LOCAL_RANK", std::to_string(r)},
                                    {"MASTER_ADDR", "127.0.0.1"},
                                    {"MASTER_PORT", std::to_string(port)},
                                    {"MMSEARCH_DIST_TIMEOUT", std::to_string(int(timeout_s))},
                                    {"OMP_NUM_THREADS", "1"}},
                                   dir_ / (run.filename().string() + "-" + mode + "-rank" +
                                           std::to_string(r) + "-" +
                                           std::to_string(configs_) + ".log")));
    }
    return ranks;
  }

  void expect_all_succeed(const std::vector<Worker>& ranks, double seconds) {
    for (const Worker& w : ranks) EXPECT_EQ(wait_exit(w, seconds), 0) << w.output();
  }

  void train_one_process(const fs::path& run, bool resume = false) {
    mms::TrainOptions options;
    options.out_dir = run.string();
    options.quiet = true;
    options.resume = resume;
    EXPECT_TRUE(mms::train_model(config_, options).finished);
  }

  mms::nn::DualEncoder load_last_checkpoint(const fs::path& run, const std::string& part = "model") {
    std::ifstream in(run / "checkpoint.json");
    const auto j = nlohmann::json::parse(in);
    mms::nn::DualEncoder model(config_.model);
    torch::load(model, (run / (j.at("stem").get<std::string>() + "." + part + ".pt")).string());
    return model;
  }

  // The largest absolute difference between the two runs' last weights, and where.
  std::pair<double, std::string> weight_difference(const fs::path& a, const fs::path& b,
                                                   const std::string& part = "model") {
    auto ma = load_last_checkpoint(a, part), mb = load_last_checkpoint(b, part);
    auto pa = ma->named_parameters(true), pb = mb->named_parameters(true);
    std::pair<double, std::string> worst{0.0, ""};
    for (const auto& item : pa) {
      const double d = (item.value() - pb[item.key()]).abs().max().item<double>();
      if (d > worst.first) worst = {d, item.key()};
    }
    return worst;
  }

  fs::path dir_;
  mms::TrainConfig config_;
  int configs_ = 0;
};

// Float rounding differs (sums split across ranks) and AdamW amplifies it a little over the
// steps; a wrong gradient (a missing rank, a doubled scale, a misordered text) is off by 1e-2.
constexpr double kSameWeights = 2e-4;

TEST_F(DistributedTest, TheGlobalLossAndItsGradientsEqualTheOneProcessOnes) {
  std::vector<Worker> ranks = start_ranks(2, dir_ / "loss", false, 60, "loss");
  expect_all_succeed(ranks, 120);
}

TEST_F(DistributedTest, TwoRanksAtHalfTheBatchEndWithTheWeightsOfOneRank) {
  config_.epochs = 2;  // 60 train pairs / 12 = 5 steps an epoch
  config_.ema_decay = 0.9;
  // Two texts a row (caption, then a view) exercise the global text order.
  config_.caption_and_view = true;
  config_.keyword_positives = true;
  config_.augment.view_title = 1;
  config_.augment.view_keywords = 2;
  train_one_process(dir_ / "one");
  expect_all_succeed(start_ranks(2, dir_ / "two", false), 300);
  EXPECT_EQ(checkpoint_step(dir_ / "two"), 10);
  const auto [worst, name] = weight_difference(dir_ / "one", dir_ / "two");
  EXPECT_LE(worst, kSameWeights) << name;
  const auto [worst_ema, name_ema] = weight_difference(dir_ / "one", dir_ / "two", "ema");
  EXPECT_LE(worst_ema, kSameWeights) << name_ema;
  std::cout << "largest weight difference, 1 rank vs 2: " << worst << " (" << name
            << "), weight average " << worst_ema << "\n";
  // Rank 0 alone wrote the run: one metrics log, validated once an epoch.
  std::ifstream log(dir_ / "two/metrics.jsonl");
  std::string line;
  int validations = 0;
  while (std::getline(log, line)) validations += nlohmann::json::parse(line).contains("val");
  EXPECT_EQ(validations, 2);
  EXPECT_TRUE(fs::exists(dir_ / "two/model/model.safetensors"));
}

// Rank 1 is killed once rank 0 has written a checkpoint; rank 0 must stop on its own, naming
// rank 1. The run then resumes from that checkpoint with two ranks, ending with the weights of
// an uninterrupted two-rank run, and (a copy) with one rank, ending near them.
TEST_F(DistributedTest, AKilledRankStopsTheOtherNamingItAndTheRunResumes) {
  config_.epochs = 8;  // 40 steps: long enough to be interrupted
  std::vector<Worker> ranks = start_ranks(2, dir_ / "killed", false, 60);
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (checkpoint_step(dir_ / "killed") < 8 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(checkpoint_step(dir_ / "killed"), 8) << ranks[0].output();
  ::kill(ranks[1].pid, SIGKILL);
  const auto t_kill = Clock::now();
  EXPECT_EQ(wait_exit(ranks[1], 10), 128 + SIGKILL);
  EXPECT_EQ(wait_exit(ranks[0], 60), 1) << ranks[0].output();
  const double took = std::chrono::duration<double>(Clock::now() - t_kill).count();
  const std::string message = ranks[0].output();
  EXPECT_NE(message.find("rank 1 stopped responding"), std::string::npos) << message;
  EXPECT_LT(took, 20) << message;
  const int64_t interrupted_at = checkpoint_step(dir_ / "killed");
  ASSERT_LT(interrupted_at, 40) << "the run ended before the kill";

  fs::copy(dir_ / "killed", dir_ / "killed-one", fs::copy_options::recursive);
  expect_all_succeed(start_ranks(2, dir_ / "killed", true), 600);
  train_one_process(dir_ / "killed-one", /*resume=*/true);
  expect_all_succeed(start_ranks(2, dir_ / "straight", false), 600);
  EXPECT_EQ(checkpoint_step(dir_ / "killed"), 40);
  // Two ranks resumed: the same arithmetic as straight through, so the same weights.
  const auto [two, name_two] = weight_difference(dir_ / "straight", dir_ / "killed");
  EXPECT_LE(two, 1e-6) << name_two;
  // One rank resumed: rounding apart, and 30 AdamW steps amplify it (a wrong step, schedule
  // or data order would be off by 1e-1).
  const auto [one, name_one] = weight_difference(dir_ / "straight", dir_ / "killed-one");
  EXPECT_LE(one, 5e-3) << name_one;
  std::cout << "rank 0 stopped " << took << " s after the kill of rank 1 (checkpoint at step "
            << interrupted_at << "); resumed with 2 ranks: largest weight difference " << two
            << ", with 1 rank: " << one << "\n";
}

TEST_F(DistributedTest, AStoppedRankStopsTheOtherWithinTheTimeout) {
  config_.epochs = 15;
  std::vector<Worker> ranks = start_ranks(2, dir_ / "hung", false, /*timeout_s=*/3);
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (checkpoint_step(dir_ / "hung") < 4 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(checkpoint_step(dir_ / "hung"), 4) << ranks[0].output();
  ::kill(ranks[1].pid, SIGSTOP);  // hung: alive, but answers nothing
  const auto t_stop = Clock::now();
  const int status = wait_exit(ranks[0], 60);
  const double took = std::chrono::duration<double>(Clock::now() - t_stop).count();
  ::kill(ranks[1].pid, SIGKILL);
  wait_exit(ranks[1], 10);
  const std::string message = ranks[0].output();
  EXPECT_EQ(status, 1) << message;
  EXPECT_NE(message.find("rank 1 stopped responding"), std::string::npos) << message;
  // The timeout (3 s) plus the heartbeat window (2.5 s) and slack for a busy machine.
  EXPECT_LT(took, 20) << message;
  std::cout << "rank 0 stopped " << took << " s after rank 1 was stopped\n";
}

TEST_F(DistributedTest, AKilledRankZeroStopsTheOthersNamingIt) {
  config_.epochs = 15;
  std::vector<Worker> ranks = start_ranks(2, dir_ / "zero", false, 60);
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (checkpoint_step(dir_ / "zero") < 4 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(checkpoint_step(dir_ / "zero"), 4) << ranks[0].output();
  ::kill(ranks[0].pid, SIGKILL);
  wait_exit(ranks[0], 10);
  EXPECT_EQ(wait_exit(ranks[1], 60), 1) << ranks[1].output();
  EXPECT_NE(ranks[1].output().find("rank 0"), std::string::npos) << ranks[1].output();
}

}  // namespace
