#include "index/indexer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/hash.h"
#include "encoders/embedder.h"
#include "encoders/image_io.h"
#include "index/collection.h"
#include "index/file_walk.h"

namespace mms {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Decoded {
  FoundFile file;
  ItemWrite write;
  std::vector<float> pixels;  // [3, S, S] when ok
};

// Reads, hashes, decodes and preprocesses one file; a bad file becomes a failed record.
Decoded decode_one(const FoundFile& f, int32_t size,
                   const std::map<std::string, std::string>& captions) {
  Decoded d;
  d.file = f;
  ItemWrite& w = d.write;
  w.path = f.path;
  w.size = f.size;
  w.mtime_ns = f.mtime_ns;
  const auto caption = captions.find(f.path);
  if (caption != captions.end()) w.caption = caption->second;
  try {
    const ImageLimits limits;
    if (f.size > limits.max_bytes) {
      throw Error::too_large("'" + f.path + "' is " + std::to_string(f.size) +
                             " bytes, over the limit of " + std::to_string(limits.max_bytes));
    }
    std::ifstream in(f.path, std::ios::binary);
    if (!in) throw Error::io("'" + f.path + "' cannot be read");
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    w.content_hash = hex64(fnv1a64(bytes.data(), bytes.size()));
    const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
    const DecodedImage img = decode_image(data, bytes.size(), f.path, limits, size);
    w.width = img.source.width;
    w.height = img.source.height;
    d.pixels = preprocess_image(img, size);
    w.ok = true;
  } catch (const Error& e) {
    w.ok = false;
    w.error = std::string(error_kind_name(e.kind())) + ": " + e.what();
  }
  return d;
}

std::vector<Decoded> decode_batch(const std::vector<FoundFile>& files, int32_t size,
                                  int32_t threads,
                                  const std::map<std::string, std::string>& captions) {
  std::vector<Decoded> out(files.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < files.size(); i = next++)
      out[i] = decode_one(files[i], size, captions);
  };
  std::vector<std::thread> pool;
  for (int32_t t = 1; t < std::min<int32_t>(threads, static_cast<int32_t>(files.size())); ++t) {
    pool.emplace_back(work);
  }
  work();
  for (std::thread& t : pool) t.join();
  return out;
}

std::string reason_of(const std::string& error) {
  return error.substr(0, error.find(':'));
}

class Progress {
 public:
  Progress(bool enabled, int64_t total)
      : enabled_(enabled),
        tty_(isatty(fileno(stderr))),
        total_(total),
        start_(Clock::now()),
        last_(start_) {}
  void update(int64_t done, bool final = false) {
    if (!enabled_ || total_ == 0) return;
    const double elapsed = since(start_);
    if (!final && !tty_ && std::chrono::duration<double>(Clock::now() - last_).count() < 5) return;
    last_ = Clock::now();
    const double rate = done / std::max(elapsed, 1e-9);
    const double eta = rate > 0 ? (total_ - done) / rate : 0;
    std::fprintf(stderr, "%sindexing %lld/%lld images  %.1f images/s  ETA %.0f s%s",
                 tty_ ? "\r" : "", static_cast<long long>(done), static_cast<long long>(total_),
                 rate, eta, tty_ && !final ? "   " : "\n");
  }

 private:
  bool enabled_, tty_;
  int64_t total_;
  Clock::time_point start_, last_;
};

}  // namespace

IndexSummary index_paths(Collection& collection, const Embedder& embedder,
                         const std::vector<std::string>& paths, const IndexOptions& options) {
  const auto t_start = Clock::now();
  IndexSummary s;
  const int32_t threads =
      options.threads > 0 ? options.threads
                          : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  const std::vector<FoundFile> files = walk_files(paths, WalkOptions{options.follow_links});
  s.files = static_cast<int64_t>(files.size());

  // Files whose size and mtime match their catalog row are done: skip them unread.
  std::vector<FoundFile> todo;
  std::vector<bool> existed;
  for (const FoundFile& f : files) {
    const auto row = collection.find_item_by_path(f.path);
    // A stale row (left by a model change) must be embedded again even if the file is not.
    if (row && row->size == f.size && row->mtime_ns == f.mtime_ns &&
        row->status != ItemStatus::kStale) {
      ++s.unchanged;
      continue;
    }
    todo.push_back(f);
    existed.push_back(row.has_value());
  }

  // Every file found is recorded: images with their vector, the rest (not an image,
  // corrupt, too large, unreadable) as failed with the reason, so a summary can name them.
  const int32_t size = embedder.image_size();
  const size_t batch = static_cast<size_t>(std::max(1, options.batch_size));
  Progress progress(options.progress, static_cast<int64_t>(todo.size()));
  auto slice = [&](size_t start) {
    return std::vector<FoundFile>(todo.begin() + start,
                                  todo.begin() + std::min(todo.size(), start + batch));
  };
  auto decode_async = [&](size_t start) {
    return std::async(std::launch::async, [&, start] {
      const auto t0 = Clock::now();
      auto out = decode_batch(slice(start), size, threads, options.captions);
      return std::make_pair(std::move(out), since(t0));
    });
  };
  // Decoding batch i + 1 overlaps embedding and writing batch i.
  std::future<std::pair<std::vector<Decoded>, double>> pending;
  if (!todo.empty()) pending = decode_async(0);
  for (size_t start = 0; start < todo.size(); start += batch) {
    auto [decoded, decode_s] = pending.get();
    s.decode_seconds += decode_s;
    if (start + batch < todo.size()) pending = decode_async(start + batch);

    const auto t_encode = Clock::now();
    std::vector<float> pixels;
    std::vector<size_t> ok_rows;
    for (size_t i = 0; i < decoded.size(); ++i) {
      if (!decoded[i].write.ok) continue;
      ok_rows.push_back(i);
      pixels.insert(pixels.end(), decoded[i].pixels.begin(), decoded[i].pixels.end());
    }
    const std::vector<float> vectors =
        ok_rows.empty()
            ? std::vector<float>()
            : embedder.embed_pixels(pixels.data(), static_cast<int64_t>(ok_rows.size()));
    const size_t dim = static_cast<size_t>(embedder.dim());
    for (size_t r = 0; r < ok_rows.size(); ++r) {
      decoded[ok_rows[r]].write.vector.assign(vectors.begin() + r * dim,
                                              vectors.begin() + (r + 1) * dim);
    }
    s.encode_seconds += since(t_encode);

    const auto t_write = Clock::now();
    std::vector<ItemWrite> writes;
    for (Decoded& d : decoded) writes.push_back(std::move(d.write));
    collection.upsert_items(writes);
    s.write_seconds += since(t_write);
    for (size_t i = 0; i < writes.size(); ++i) {
      const bool was = existed[start + i];
      if (!writes[i].ok) {
        ++s.failed;
        ++s.failed_by_reason[reason_of(writes[i].error)];
      } else {
        ++(was ? s.updated : s.added);
      }
    }
    progress.update(static_cast<int64_t>(std::min(todo.size(), start + batch)));
  }
  if (!todo.empty()) progress.update(static_cast<int64_t>(todo.size()), true);

  if (options.prune) {
    std::vector<int64_t> gone;
    int64_t after = 0;
    for (;;) {
      const std::vector<ItemRecord> page = collection.list_items(after, 1000);
      if (page.empty()) break;
      for (const ItemRecord& item : page) {
        std::error_code ec;
        if (!std::filesystem::exists(item.path, ec)) gone.push_back(item.id);
      }
      after = page.back().id;
    }
    if (!gone.empty()) collection.remove_items(gone);
    s.removed = static_cast<int64_t>(gone.size());
  }
  const auto t_sync = Clock::now();
  collection.sync_indexes();
  s.write_seconds += since(t_sync);
  s.seconds = since(t_start);
  return s;
}

std::string format_summary(const IndexSummary& s) {
  std::ostringstream out;
  out << s.files << " files: " << s.added << " added, " << s.updated << " updated, " << s.unchanged
      << " unchanged, " << s.removed << " removed, " << s.failed << " failed";
  if (!s.failed_by_reason.empty()) {
    out << " (";
    bool first = true;
    for (const auto& [reason, n] : s.failed_by_reason) {
      out << (first ? "" : ", ") << reason << " " << n;
      first = false;
    }
    out << ")";
  }
  char timing[160];
  const int64_t processed = s.added + s.updated + s.failed;
  std::snprintf(timing, sizeof timing,
                "\n%.1f s in all, %.1f images/s; decode %.1f s, encode %.1f s, write %.1f s",
                s.seconds, processed / std::max(s.seconds, 1e-9), s.decode_seconds,
                s.encode_seconds, s.write_seconds);
  out << timing;
  return out.str();
}

}  // namespace mms
