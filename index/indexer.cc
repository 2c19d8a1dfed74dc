#include "index/indexer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
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
    // Never blocks (a FIFO put in the file's place since the walk) and never reads more than
    // the limit (a file that keeps growing).
    const std::vector<uint8_t> bytes = read_image_file(f.path, limits.max_bytes);
    if (static_cast<int64_t>(bytes.size()) != f.size) {
      // Being written (or rewritten) now: what was read may be half a file, and the row would
      // carry the walk's size for other bytes. A later run reads it again once it has settled.
      throw Error::io("'" + f.path + "' changed while it was being indexed (" +
                      std::to_string(f.size) + " bytes when found, " +
                      std::to_string(bytes.size()) + " when read); run again once it is complete");
    }
    w.content_hash = hex64(fnv1a64(bytes.data(), bytes.size()));
    const DecodedImage img = decode_image(bytes.data(), bytes.size(), f.path, limits, size);
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
  Progress(bool enabled, const char* verb, int64_t total)
      : enabled_(enabled),
        verb_(verb),
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
    std::fprintf(stderr, "%s%s %lld/%lld images  %.1f images/s  ETA %.0f s%s", tty_ ? "\r" : "",
                 verb_, static_cast<long long>(done), static_cast<long long>(total_), rate, eta,
                 tty_ && !final ? "   " : "\n");
  }

 private:
  bool enabled_;
  const char* verb_;
  bool tty_;
  int64_t total_;
  Clock::time_point start_, last_;
};

// Decodes `files` in parallel batches, embeds the images, and hands each batch's records to
// `sink` with the index of its first file; decoding batch i + 1 overlaps embedding and
// writing batch i. Every file gets a record: a bad one (not an image, corrupt, too large,
// unreadable) is !ok with the reason. Adds the time of each phase to `s`.
void embed_files(const std::vector<FoundFile>& files, const Embedder& embedder,
                 const IndexOptions& options, const char* verb, IndexSummary& s,
                 const std::function<void(size_t start, std::vector<ItemWrite>& batch)>& sink) {
  const int32_t threads =
      options.threads > 0 ? options.threads
                          : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  const int32_t size = embedder.image_size();
  const size_t batch = static_cast<size_t>(std::max(1, options.batch_size));
  Progress progress(options.progress, verb, static_cast<int64_t>(files.size()));
  auto slice = [&](size_t start) {
    return std::vector<FoundFile>(files.begin() + start,
                                  files.begin() + std::min(files.size(), start + batch));
  };
  auto decode_async = [&](size_t start) {
    return std::async(std::launch::async, [&, start] {
      const auto t0 = Clock::now();
      auto out = decode_batch(slice(start), size, threads, options.captions);
      return std::make_pair(std::move(out), since(t0));
    });
  };
  std::future<std::pair<std::vector<Decoded>, double>> pending;
  if (!files.empty()) pending = decode_async(0);
  for (size_t start = 0; start < files.size(); start += batch) {
    auto [decoded, decode_s] = pending.get();
    s.decode_seconds += decode_s;
    if (start + batch < files.size()) pending = decode_async(start + batch);

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
    // Each image's h for hubness-aware scoring, stored beside its vector (encoders/memory.h).
    const std::vector<float> hubs =
        embedder.image_hubs(vectors.data(), static_cast<int64_t>(ok_rows.size()));
    const size_t dim = static_cast<size_t>(embedder.dim());
    for (size_t r = 0; r < ok_rows.size(); ++r) {
      decoded[ok_rows[r]].write.vector.assign(vectors.begin() + r * dim,
                                              vectors.begin() + (r + 1) * dim);
      decoded[ok_rows[r]].write.hub = hubs[r];
    }
    s.encode_seconds += since(t_encode);

    const auto t_write = Clock::now();
    std::vector<ItemWrite> writes;
    for (Decoded& d : decoded) writes.push_back(std::move(d.write));
    sink(start, writes);
    s.write_seconds += since(t_write);
    for (const ItemWrite& w : writes) {
      if (!w.ok) {
        ++s.failed;
        ++s.failed_by_reason[reason_of(w.error)];
      }
    }
    progress.update(static_cast<int64_t>(std::min(files.size(), start + batch)));
  }
  if (!files.empty()) progress.update(static_cast<int64_t>(files.size()), true);
}

}  // namespace

IndexSummary index_paths(Collection& collection, const Embedder& embedder,
                         const std::vector<std::string>& paths, const IndexOptions& options) {
  const auto t_start = Clock::now();
  IndexSummary s;
  const std::vector<FoundFile> files =
      walk_files(paths, WalkOptions{options.follow_links}, &s.skipped);
  s.files = static_cast<int64_t>(files.size());

  // Files whose size and mtime match their catalog row are done: skip them unread.
  std::vector<FoundFile> todo;
  std::vector<bool> existed;
  for (const FoundFile& f : files) {
    const auto row = collection.find_item_by_path(f.path);
    // A stale row (its file was gone at a model change) must be embedded again.
    if (row && row->size == f.size && row->mtime_ns == f.mtime_ns &&
        row->status != ItemStatus::kStale) {
      ++s.unchanged;
      continue;
    }
    todo.push_back(f);
    existed.push_back(row.has_value());
  }

  // Every file found is recorded: images with their vector, the rest as failed with the
  // reason, so a summary can name them.
  embed_files(todo, embedder, options, "indexing", s,
              [&](size_t start, std::vector<ItemWrite>& writes) {
                collection.upsert_items(writes);
                for (size_t i = 0; i < writes.size(); ++i) {
                  if (writes[i].ok) ++(existed[start + i] ? s.updated : s.added);
                }
              });

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

ReembedSummary reembed_collection(Collection& collection, const Embedder& embedder,
                                  const IndexOptions& options) {
  const auto t_start = Clock::now();
  ReembedSummary r;
  if (collection.reembed_fingerprint().empty()) {  // already in this model's space
    // A run killed after its swap committed left the FAISS files of the old space behind.
    collection.sync_indexes();
    return r;
  }
  if (collection.reembed_fingerprint() != embedder.fingerprint()) {
    throw Error::invalid_argument("reembed_collection: the collection stages model " +
                                  collection.reembed_fingerprint() + ", not " +
                                  embedder.fingerprint());
  }
  constexpr int32_t kPage = 4096;
  // A writer with the old model may add items meanwhile: stage until nothing is left, then
  // swap (commit_reembed checks again inside its transaction).
  do {
    for (int64_t after = 0;;) {
      const std::vector<ItemRecord> page = collection.items_to_reembed(after, kPage);
      if (page.empty()) break;
      after = page.back().id;
      std::vector<FoundFile> files;
      std::vector<int64_t> ids;
      std::vector<ItemWrite> gone;
      std::vector<int64_t> gone_ids;
      for (const ItemRecord& item : page) {
        if (std::optional<FoundFile> f = stat_regular_file(item.path, /*follow=*/true)) {
          f->path = item.path;
          files.push_back(*f);
          ids.push_back(item.id);
          continue;
        }
        // Gone: keep what the catalog knew; the item turns stale at the swap.
        ItemWrite w;
        w.size = item.size;
        w.mtime_ns = item.mtime_ns;
        w.content_hash = item.content_hash;
        w.width = item.width;
        w.height = item.height;
        w.ok = false;
        gone.push_back(std::move(w));
        gone_ids.push_back(item.id);
      }
      if (!gone.empty()) collection.stage_items(gone_ids, gone);
      r.gone += static_cast<int64_t>(gone.size());
      r.items.files += static_cast<int64_t>(page.size());
      embed_files(
          files, embedder, options, "re-embedding", r.items,
          [&](size_t start, std::vector<ItemWrite>& writes) {
            collection.stage_items(
                std::vector<int64_t>(ids.begin() + start, ids.begin() + start + writes.size()),
                writes);
            for (const ItemWrite& w : writes) r.items.updated += w.ok ? 1 : 0;
          });
    }
    for (int64_t after = 0;;) {
      const std::vector<TextRecord> page = collection.texts_to_reembed(after, 256);
      if (page.empty()) break;
      after = page.back().id;
      std::vector<int64_t> ids;
      std::vector<std::string> texts;
      for (const TextRecord& t : page) {
        ids.push_back(t.id);
        texts.push_back(t.text);
      }
      const auto t_encode = Clock::now();
      const std::vector<float> vectors = embedder.embed_texts(texts);
      const std::vector<float> hubs =
          embedder.text_hubs(vectors.data(), static_cast<int64_t>(texts.size()));
      r.items.encode_seconds += since(t_encode);
      collection.stage_texts(ids, vectors, hubs);
      r.texts += static_cast<int64_t>(page.size());
    }
  } while (!collection.commit_reembed());
  const auto t_sync = Clock::now();
  collection.sync_indexes();
  r.items.write_seconds += since(t_sync);
  r.items.seconds = since(t_start);
  return r;
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
  if (!s.skipped.empty()) out << ", " << s.skipped.size() << " skipped (not files to index)";
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
