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
  double seconds = 0, decode_seconds = 0, encode_seconds = 0, write_seconds = 0;
};

IndexSummary index_paths(Collection& collection, const Embedder& embedder,
                         const std::vector<std::string>& paths, const IndexOptions& options);

// One line per figure, for the end of a run.
std::string format_summary(const IndexSummary& summary);

}  // namespace mms
