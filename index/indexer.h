// `mmsearch index`: walks files and folders, recognizes images by content, decodes them in
// parallel, embeds them in batches and writes each batch to the catalog in one transaction.
// A kill at any moment loses at most the batch in flight; running again finishes the job
// with nothing lost or duplicated (paths are unique in the catalog, and files whose size and
// mtime match their catalog row are skipped without being read).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mms {

class Collection;
class Embedder;

struct IndexOptions {
  int32_t threads = 0;        // decoder threads (0: all cores)
  int32_t batch_size = 64;    // images per transaction
  bool prune = false;         // remove catalog items whose files are gone
  bool follow_links = false;  // follow symbolic links (loops are detected)
  bool progress = true;       // a progress bar on a terminal, a line every few seconds otherwise
  std::map<std::string, std::string> captions;  // absolute path -> caption to attach
};

struct IndexSummary {
  int64_t files = 0, added = 0, updated = 0, unchanged = 0, removed = 0, failed = 0;
  std::map<std::string, int64_t> failed_by_reason;  // error kind -> count
  // "PATH: reason" for what the walk found but could not index and left out of the catalog:
  // FIFOs, sockets, devices, broken links, unreadable folders. Not counted in `files`.
  std::vector<std::string> skipped;
  double seconds = 0, decode_seconds = 0, encode_seconds = 0, write_seconds = 0;
};

IndexSummary index_paths(Collection& collection, const Embedder& embedder,
                         const std::vector<std::string>& paths, const IndexOptions& options);

struct ReembedSummary {
  IndexSummary items;  // files: items re-read; updated: embedded; failed: unreadable now
  int64_t gone = 0;    // items whose file is gone: stale after the swap (--prune removes them)
  int64_t texts = 0;   // texts embedded
};

// For a collection opened with CollectionOptions::reembed for `embedder`'s model: embeds
// every item again from its file and every text, staged beside the live vectors (searchers
// with the old model keep answering), then swaps to the new space in one transaction and
// builds its search indexes. An interrupted run resumes with what it staged. When the
// collection is already in this model's space it only brings the search indexes up to date
// (a run killed after its swap left them to build).
ReembedSummary reembed_collection(Collection& collection, const Embedder& embedder,
                                  const IndexOptions& options);

// One line per figure, for the end of a run.
std::string format_summary(const IndexSummary& summary);

}  // namespace mms
