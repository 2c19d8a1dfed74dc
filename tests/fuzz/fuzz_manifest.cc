// Fuzzes the pair readers (training/manifest.h) as `mmsearch train` and `eval` use them:
// read_pairs, which tells JSONL manifests, COCO captions and Karpathy splits apart by
// content and reads each, then make_gallery over every split. The readers take a path, so
// each input is written to a file of this process under /tmp first. Findings: a crash, a
// sanitizer report, a non-Error exception (nlohmann's, std::filesystem's), or pairs that
// break the readers' promises: a non-empty trimmed caption and an absolute image path; and
// galleries whose indices are out of range.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "tests/fuzz/fuzz_support.h"
#include "training/manifest.h"

namespace {

const std::string& input_path() {
  static const std::string path = [] {
    const std::string p = "/tmp/mmsearch-fuzz-manifest-" + std::to_string(::getpid()) + ".json";
    std::atexit([] { std::remove(input_path().c_str()); });
    return p;
  }();
  return path;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  {
    std::ofstream out(input_path(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  std::vector<Pair> pairs;
  if (!fuzz::parses([&] { pairs = read_pairs(input_path()); })) return 0;
  for (const Pair& p : pairs) {
    check(!p.caption.empty() && !is_space(p.caption.front()) && !is_space(p.caption.back()),
          "a pair's caption is empty or not trimmed");
    check(!p.image.empty() && p.image.front() == '/', "a pair's image path is not absolute");
  }
  for (Split split : {Split::kTrain, Split::kVal, Split::kTest}) {
    const Gallery g = make_gallery(pairs, split);
    check(g.text_to_images.size() == g.texts.size() && g.image_to_texts.size() == g.images.size(),
          "gallery index lists differ from the galleries");
    for (const auto& images : g.text_to_images) {
      check(!images.empty(), "a gallery text has no image");
      for (int32_t i : images)
        check(i >= 0 && size_t(i) < g.images.size(), "image index out of range");
    }
    for (const auto& texts : g.image_to_texts) {
      check(!texts.empty(), "a gallery image has no text");
      for (int32_t t : texts)
        check(t >= 0 && size_t(t) < g.texts.size(), "text index out of range");
    }
  }
  return 0;
}
