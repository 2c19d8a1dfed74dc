// Stands in for encoders/embedder.cc (LibTorch) in the fuzz targets of the query and HTTP
// parsers. Their sources come with index/search.cc, whose embed_*_query call the Embedder;
// no parser does, so these never run (one that did would be a bug of the fuzz target: it
// aborts). This keeps those targets free of LibTorch, and quick to build.
#include <cstdio>
#include <cstdlib>

#include "encoders/embedder.h"

namespace mms {
namespace {

[[noreturn]] void not_in_fuzz_targets(const char* what) {
  std::fprintf(stderr, "no_embedder.cc: %s called in a fuzz target\n", what);
  std::abort();
}

}  // namespace

int32_t Embedder::image_size() const {
  not_in_fuzz_targets("Embedder::image_size");
}
std::vector<float> Embedder::embed_pixels(const float*, int64_t) const {
  not_in_fuzz_targets("Embedder::embed_pixels");
}
std::vector<float> Embedder::embed_texts(const std::vector<std::string>&) const {
  not_in_fuzz_targets("Embedder::embed_texts");
}

}  // namespace mms
