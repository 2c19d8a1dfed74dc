#include "index/file_walk.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "common/error.h"
#include "common/file_io.h"

namespace mms {
namespace {

namespace fs = std::filesystem;

// Fills `out` when `p` is a regular file (through a link when `follow`). Anything else that
// is not a folder (a FIFO, socket or device; with `follow`, a link to one or a broken link) is
// reported in `skipped` with why: opening a FIFO or a device could block or never end, and
// saying so beats a file that silently never shows up.
bool stat_file(const fs::path& p, bool follow, FoundFile& out, std::vector<std::string>* skipped) {
  struct stat st {};
  const int rc = follow ? ::stat(p.c_str(), &st) : ::lstat(p.c_str(), &st);
  if (rc != 0) {
    if (skipped) skipped->push_back(p.string() + ": " + std::strerror(errno));
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    if (skipped && !S_ISLNK(st.st_mode) && !S_ISDIR(st.st_mode)) {
      skipped->push_back(p.string() + ": not a regular file (" + file_type_name(st.st_mode) + ")");
    }
    return false;
  }
  out.path = p.lexically_normal().string();
  out.size = st.st_size;
  out.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  return true;
}

void walk_dir(const fs::path& dir, const WalkOptions& options, std::set<fs::path>& visited,
              std::vector<FoundFile>& out, std::vector<std::string>* skipped) {
  std::error_code ec;
  const fs::path canonical = fs::canonical(dir, ec);
  if (ec || !visited.insert(canonical).second) return;  // a link loop or a folder seen twice
  fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) {
    if (skipped) skipped->push_back(dir.string() + ": " + ec.message());
    return;
  }
  for (const fs::directory_entry& entry : it) {
    const bool link = entry.is_symlink(ec);
    if (link && !options.follow_links) continue;
    if (entry.is_directory(ec)) {
      walk_dir(entry.path(), options, visited, out, skipped);
    } else {
      FoundFile f;
      if (stat_file(entry.path(), options.follow_links, f, skipped)) out.push_back(std::move(f));
    }
  }
}

}  // namespace

std::optional<FoundFile> stat_regular_file(const std::string& path, bool follow) {
  FoundFile f;
  if (!stat_file(path, follow, f, nullptr)) return std::nullopt;
  return f;
}

std::vector<FoundFile> walk_files(const std::vector<std::string>& paths, const WalkOptions& options,
                                  std::vector<std::string>* skipped) {
  std::vector<FoundFile> out;
  std::set<fs::path> visited;
  for (const std::string& given : paths) {
    std::error_code ec;
    const fs::path p = fs::absolute(given, ec);
    if (ec || !fs::exists(fs::symlink_status(p, ec))) {
      throw Error::not_found("path '" + given + "' does not exist");
    }
    if (fs::is_directory(p, ec)) {
      walk_dir(p, options, visited, out, skipped);
    } else {
      FoundFile f;
      // A file named on the command line is taken even through a link: the user asked.
      if (stat_file(p, true, f, skipped)) out.push_back(std::move(f));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const FoundFile& a, const FoundFile& b) { return a.path < b.path; });
  out.erase(std::unique(out.begin(), out.end(),
                        [](const FoundFile& a, const FoundFile& b) { return a.path == b.path; }),
            out.end());
  return out;
}

}  // namespace mms
