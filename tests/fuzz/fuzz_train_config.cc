// Fuzzes parse_train_config (training/train_config.h): the JSON of `mmsearch train --config`
// and its `--set key=value` overrides. Input: the JSON text, then optionally a line "--set"
// followed by one override per line. Findings: a crash, a sanitizer report, a non-Error
// exception, or a config that parses but does not survive train_config_to_json ->
// parse_train_config.
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_support.h"
#include "training/train_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  std::string_view input = fuzz::as_text(data, size);
  std::vector<std::string> overrides;
  const size_t set = input.find("\n--set\n");
  std::string_view json_text = input.substr(0, set);
  if (set != std::string_view::npos) {
    std::string_view rest = input.substr(set + 7);
    while (!rest.empty()) {
      auto [line, next] = fuzz::first_line(rest);
      overrides.emplace_back(line);
      rest = next;
    }
  }
  TrainConfig config;
  if (!fuzz::parses(
          [&] { config = parse_train_config(std::string(json_text), "fuzz", overrides); })) {
    return 0;
  }
  check(
      fuzz::parses([&] { parse_train_config(train_config_to_json(config), "fuzz: written", {}); }),
      "a parsed train config does not parse again once written");
  return 0;
}
