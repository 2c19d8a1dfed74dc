#include "tokenizer/spm_bridge.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "common/error.h"

namespace mms::spm {
namespace {

constexpr const char* kPluginName = "libmms_spm.so";

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
// AddressSanitizer's and ThreadSanitizer's dlopen refuse RTLD_DEEPBIND outright, because a
// library bound deep would normally take malloc and operator new from libc and libstdc++, not
// from the sanitizer, and memory would cross between two allocators. Here it does not: in a
// sanitized build the plugin is linked with the same -fsanitize= too, which makes the runtime
// (libasan, libtsan) the first library it needs, and so the first place its deep-bound
// lookups (SentencePiece's included) find malloc, operator new and the pthread calls: the
// same runtime as the rest of the process. So the plugin is opened with libc's own dlopen,
// past the sanitizer's check.
void* open_plugin(const char* path, int flags) {
  using DlopenFn = void* (*)(const char*, int);
  void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  auto libc_dlopen = libc ? reinterpret_cast<DlopenFn>(dlsym(libc, "dlopen")) : nullptr;
  return libc_dlopen ? libc_dlopen(path, flags) : dlopen(path, flags);
}
#else
void* open_plugin(const char* path, int flags) { return dlopen(path, flags); }
#endif

// Where the plugin may be, in order: $MMSEARCH_SPM_PLUGIN, beside the running program, and
// where this build put it.
std::vector<std::string> candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("MMSEARCH_SPM_PLUGIN")) out.emplace_back(env);
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) out.push_back((exe.parent_path() / kPluginName).string());
#ifdef MMS_SPM_PLUGIN_PATH
  out.emplace_back(MMS_SPM_PLUGIN_PATH);
#endif
  return out;
}

const Bridge* load_bridge() {
  std::string tried;
  for (const std::string& path : candidates()) {
    if (!std::filesystem::exists(path)) {
      tried += " '" + path + "' (missing)";
      continue;
    }
    // RTLD_DEEPBIND: the plugin and SentencePiece resolve symbols in their own scope first,
    // so SentencePiece's embedded protobuf never meets LibTorch's (see spm_bridge.h).
    void* handle = open_plugin(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
      tried += " '" + path + "' (" + dlerror() + ")";
      continue;
    }
    auto entry = reinterpret_cast<const Bridge* (*)()>(dlsym(handle, "mms_spm_bridge"));
    const Bridge* b = entry ? entry() : nullptr;
    if (b == nullptr || b->abi_version != kAbiVersion) {
      tried += " '" + path + "' (not a matching mmsearch SentencePiece plugin)";
      dlclose(handle);
      continue;
    }
    return b;  // stays loaded for the life of the process
  }
  throw Error::internal("cannot load the SentencePiece plugin " + std::string(kPluginName) +
                        "; tried" + tried);
}

}  // namespace

const Bridge& bridge() {
  static const Bridge* const b = load_bridge();
  return *b;
}

}  // namespace mms::spm
