// Small file helpers shared by the modules that must never leave a torn file behind, or read
// what is not a file.
#pragma once

#include <sys/types.h>

#include <string>

namespace mms {

// Writes `bytes` to a temporary file beside `path` (creating the folder if needed), flushes
// it to disk, renames it over `path` and syncs the folder: a crash leaves either the old
// file or the new one, never a torn one. Throws Error::io naming the file.
void write_file_atomically(const std::string& path, const std::string& bytes);

// The whole of a file's bytes. Throws Error::not_found "WHAT 'PATH' does not exist or is
// unreadable" when it cannot be opened.
std::string read_file_bytes(const std::string& path, const std::string& what);

// What a stat() st_mode names, for messages: "a regular file", "a folder", "a FIFO",
// "a socket", "a character device", "a block device", "a symbolic link" or "an unknown kind
// of file".
const char* file_type_name(mode_t mode);

}  // namespace mms
