// Where a process sits in a distributed run: torchrun's environment, flags over it, and each
// malformed value refused with its name.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "common/error.h"
#include "training/distributed.h"

namespace {

mms::DistributedSettings resolve(const mms::LaunchFlags& flags,
                                 const std::map<std::string, std::string>& env) {
  return mms::resolve_distributed(flags, [&](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

std::string error_of(const mms::LaunchFlags& flags, const std::map<std::string, std::string>& env) {
  try {
    resolve(flags, env);
  } catch (const mms::Error& e) {
    EXPECT_EQ(e.kind(), mms::ErrorKind::kInvalidArgument);
    return e.what();
  }
  return "";
}

TEST(DistributedSettings, NothingGivenIsOneProcess) {
  const mms::DistributedSettings s = resolve({}, {});
  EXPECT_EQ(s.world_size, 1);
  EXPECT_EQ(s.rank, 0);
  EXPECT_EQ(s.local_rank, 0);
  EXPECT_EQ(s.timeout_s, 300);
}

TEST(DistributedSettings, TorchrunsEnvironmentIsRead) {
  const mms::DistributedSettings s =
      resolve({}, {{"WORLD_SIZE", "8"}, {"RANK", "5"}, {"LOCAL_RANK", "1"},
                   {"MASTER_ADDR", "10.0.0.2"}, {"MASTER_PORT", "29400"},
                   {"MMSEARCH_DIST_TIMEOUT", "60"}});
  EXPECT_EQ(s.world_size, 8);
  EXPECT_EQ(s.rank, 5);
  EXPECT_EQ(s.local_rank, 1);
  EXPECT_EQ(s.master_addr, "10.0.0.2");
  EXPECT_EQ(s.master_port, 29400);
  EXPECT_EQ(s.timeout_s, 60);
}

TEST(DistributedSettings, FlagsWinOverTheEnvironment) {
  mms::LaunchFlags flags;
  flags.world_size = 2;
  flags.rank = 1;
  flags.master = "node0.example:1234";
  flags.timeout_s = 10;
  const mms::DistributedSettings s =
      resolve(flags, {{"WORLD_SIZE", "8"}, {"RANK", "5"}, {"MASTER_ADDR", "10.0.0.2"},
                      {"MASTER_PORT", "29400"}});
  EXPECT_EQ(s.world_size, 2);
  EXPECT_EQ(s.rank, 1);
  EXPECT_EQ(s.master_addr, "node0.example");
  EXPECT_EQ(s.master_port, 1234);
  EXPECT_EQ(s.timeout_s, 10);
}

TEST(DistributedSettings, MalformedValuesAreRefusedByName) {
  EXPECT_NE(error_of({}, {{"WORLD_SIZE", "two"}}).find("WORLD_SIZE"), std::string::npos);
  EXPECT_NE(error_of({}, {{"WORLD_SIZE", "2"}, {"RANK", "2"}}).find("RANK"), std::string::npos);
  EXPECT_NE(error_of({}, {{"MASTER_PORT", "70000"}}).find("MASTER_PORT"), std::string::npos);
  mms::LaunchFlags flags;
  flags.world_size = 2;
  flags.rank = 3;
  EXPECT_NE(error_of(flags, {}).find("--rank 3"), std::string::npos);
  flags.rank = 0;
  flags.master = "nohost";
  EXPECT_NE(error_of(flags, {}).find("--master"), std::string::npos);
  flags.master = "";
  flags.timeout_s = 0;
  EXPECT_NE(error_of(flags, {}).find("--dist-timeout"), std::string::npos);
}

TEST(DistributedSettings, ARemoteRunNeedsAMaster) {
  // Several ranks and no master: only a one-machine run may default to loopback, and that
  // default is the loopback address itself, so this resolves; a non-loopback one needs both.
  EXPECT_EQ(resolve({}, {{"WORLD_SIZE", "2"}}).master_addr, "127.0.0.1");
  EXPECT_NE(error_of({}, {{"WORLD_SIZE", "2"}, {"MASTER_ADDR", "10.0.0.2"}}).find("--master"),
            std::string::npos);
}

}  // namespace
