#include "training/image_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/error.h"
#include "common/hash.h"
#include "encoders/image_io.h"
#include "training/augment.h"

namespace mms {
namespace {

constexpr char kMagic[8] = {'M', 'M', 'S', 'S', 'T', 'O', 'R', '1'};

uint64_t store_key(const std::vector<std::string>& paths, int32_t side) {
  uint64_t h = fnv1a64(&side, sizeof side);
  for (const std::string& p : paths) {
    struct stat st {};
    int64_t meta[2] = {-1, -1};
    if (::stat(p.c_str(), &st) == 0) {
      meta[0] = st.st_size;
      meta[1] = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    }
    h = fnv1a64(p.data(), p.size() + 1, h);
    h = fnv1a64(meta, sizeof meta, h);
  }
  return h;
}

bool read_cache(const std::string& file, ImageStore& store) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return false;
  char magic[8];
  uint64_t n = 0;
  in.read(magic, 8).read(reinterpret_cast<char*>(&n), sizeof n);
  if (!in || std::string(magic, 8) != std::string(kMagic, 8) || n != store.paths.size())
    return false;
  for (std::string& e : store.errors) {
    uint32_t len = 0;
    in.read(reinterpret_cast<char*>(&len), sizeof len);
    if (!in || len > (1u << 16)) return false;
    e.resize(len);
    in.read(e.data(), len);
  }
  in.read(reinterpret_cast<char*>(store.pixels.data()),
          static_cast<std::streamsize>(store.pixels.size()));
  return static_cast<bool>(in) && in.peek() == EOF;
}

void write_cache(const std::string& file, const ImageStore& store) {
  // Per process: the ranks of a distributed run on one machine may write the same cache at once.
  const std::string tmp = file + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    const uint64_t n = store.paths.size();
    out.write(kMagic, 8).write(reinterpret_cast<const char*>(&n), sizeof n);
    for (const std::string& e : store.errors) {
      const uint32_t len = static_cast<uint32_t>(e.size());
      out.write(reinterpret_cast<const char*>(&len), sizeof len).write(e.data(), len);
    }
    out.write(reinterpret_cast<const char*>(store.pixels.data()),
              static_cast<std::streamsize>(store.pixels.size()));
    if (!out) {
      std::remove(tmp.c_str());
      return;  // a cache that cannot be written only costs time next run
    }
  }
  std::rename(tmp.c_str(), file.c_str());
}

}  // namespace

ImageStore build_image_store(const std::vector<std::string>& paths, int32_t side, int32_t threads,
                             const std::string& cache_dir) {
  ImageStore store;
  store.side = side;
  store.paths = paths;
  store.errors.assign(paths.size(), "");
  store.pixels.assign(paths.size() * store.bytes_per_image(), 255);

  std::string cache_file;
  if (!cache_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(cache_dir, ec);
    cache_file = cache_dir + "/" + hex64(store_key(paths, side)) + ".store";
    if (read_cache(cache_file, store)) return store;
    store.errors.assign(paths.size(), "");
  }

  std::atomic<size_t> next{0};
  auto work = [&] {
    const ImageLimits limits;
    for (size_t i = next++; i < paths.size(); i = next++) {
      try {
        const DecodedImage img = load_image_file(paths[i], limits, side);
        const std::vector<float> chw = preprocess_image(img, side);
        const size_t plane = size_t(side) * side;
        uint8_t* dst = store.pixels.data() + i * store.bytes_per_image();
        for (size_t p = 0; p < plane; ++p) {
          for (int c = 0; c < 3; ++c) {
            dst[p * 3 + c] = static_cast<uint8_t>(std::lround(chw[c * plane + p] * 255.0f));
          }
        }
      } catch (const Error& e) {
        store.errors[i] = e.what();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int32_t t = 1; t < std::max(threads, 1); ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  if (!cache_file.empty()) write_cache(cache_file, store);
  return store;
}

std::vector<float> embed_stored_images(const Embedder& embedder, const ImageStore& store,
                                       const std::vector<size_t>& rows) {
  constexpr size_t kChunk = 512;  // images converted at once: 512 x 3 x 64 x 64 floats = 25 MB
  const int32_t s = embedder.image_size();
  const size_t floats_per_image = 3 * size_t(s) * s;
  std::vector<float> out, pixels;
  out.reserve(rows.size() * embedder.dim());
  for (size_t start = 0; start < rows.size(); start += kChunk) {
    const size_t n = std::min(kChunk, rows.size() - start);
    pixels.resize(n * floats_per_image);
    for (size_t j = 0; j < n; ++j) {
      plain_image(store.image(rows[start + j]), store.side, s, pixels.data() + j * floats_per_image);
    }
    const std::vector<float> e = embedder.embed_pixels(pixels.data(), static_cast<int64_t>(n));
    out.insert(out.end(), e.begin(), e.end());
  }
  return out;
}

}  // namespace mms
