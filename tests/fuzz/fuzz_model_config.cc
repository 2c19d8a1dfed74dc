// Fuzzes parse_model_config (encoders/model_config.h), the reader of a MODEL_DIR's
// config.json. Findings: a crash, a sanitizer report (UBSan: a JSON number cast out of an
// int32's range), a non-Error exception (an nlohmann exception that escaped translation), or
// a config that parses but does not survive model_config_to_json -> parse_model_config.
#include <string>

#include "encoders/model_config.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  ModelConfig config;
  if (!fuzz::parses(
          [&] { config = parse_model_config(std::string(fuzz::as_text(data, size)), "fuzz"); })) {
    return 0;
  }
  check(fuzz::parses([&] { parse_model_config(model_config_to_json(config), "fuzz: written"); }),
        "a parsed model config does not parse again once written");
  return 0;
}
