// Training reads every image many times; decoding it each time would dominate a CPU run.
// The store decodes each image once (in parallel), keeps it as a side x side RGB8 square
// (shorter side resized, centre crop: exactly preprocess_image's geometry) and caches the
// result on disk, keyed by the files' paths, sizes and mtimes, so later runs start at once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "encoders/embedder.h"

namespace mms {

struct ImageStore {
  int32_t side = 0;
  std::vector<std::string> paths;
  std::vector<uint8_t> pixels;      // [paths.size(), side, side, 3] HWC
  std::vector<std::string> errors;  // [paths.size()]: why an image failed, empty when it loaded

  const uint8_t* image(size_t i) const { return pixels.data() + i * size_t(side) * side * 3; }
  size_t bytes_per_image() const { return size_t(side) * side * 3; }
};

// Loads `paths` (duplicates allowed) at `side`, using `threads` decoder threads and the cache
// folder `cache_dir` ("" for none). Failed images are recorded in `errors`, not thrown.
ImageStore build_image_store(const std::vector<std::string>& paths, int32_t side, int32_t threads,
                             const std::string& cache_dir);

// The embeddings of the stored images store.image(rows[i]), as `embedder` embeds them
// (plain_image geometry, no augmentation): [rows.size(), dim] row-major. Converted to float
// in chunks, so the pixel buffer stays small however many images there are.
std::vector<float> embed_stored_images(const Embedder& embedder, const ImageStore& store,
                                       const std::vector<size_t>& rows);

}  // namespace mms
