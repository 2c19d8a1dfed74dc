// Small file helpers shared by the modules that must never leave a torn file behind.
#pragma once

#include <string>

namespace mms {

// Writes `bytes` to a temporary file beside `path` (creating the folder if needed), flushes
// it to disk, renames it over `path` and syncs the folder: a crash leaves either the old
// file or the new one, never a torn one. Throws Error::io naming the file.
void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace mms
