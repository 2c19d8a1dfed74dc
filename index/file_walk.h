// Finds the files under a set of paths for indexing: recursive, sorted, without following
// symbolic links unless asked (so an index never escapes its folders through a link), and
// without loops when it does follow them. Which files are images is decided later, by
// content.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mms {

struct FoundFile {
  std::string path;  // absolute, lexically normal
  int64_t size = 0;
  int64_t mtime_ns = 0;
};

struct WalkOptions {
  bool follow_links = false;
};

// Throws Error::not_found when a given path does not exist. Unreadable sub-folders and what
// is neither a folder nor a regular file (FIFOs, sockets, devices; with follow_links, links
// to them and broken links) are skipped, each reported in `skipped` as "PATH: reason" when
// given; links not followed are left out silently, as documented.
std::vector<FoundFile> walk_files(const std::vector<std::string>& paths, const WalkOptions& options,
                                  std::vector<std::string>* skipped = nullptr);

// The regular file at `path` (through links when `follow`), or nullopt when there is none.
std::optional<FoundFile> stat_regular_file(const std::string& path, bool follow);

}  // namespace mms
