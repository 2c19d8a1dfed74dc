// The collection commands of the CLI: `index`, `add-texts` and `search`.
#pragma once

#include <string>
#include <vector>

namespace mms {

struct IndexCommand {
  std::string index_dir, model_dir, index_type, captions;
  std::vector<std::string> paths;
  bool prune = false, gpu = false, reembed = false, follow_links = false;
  int threads = 0;
  int batch_size = 64;
};
void run_index(const IndexCommand& command);

struct AddTextsCommand {
  std::string index_dir, model_dir, file;
  int threads = 0;
};
void run_add_texts(const AddTextsCommand& command);

struct SearchCommand {
  std::string index_dir, model_dir, text, image, target = "images";
  int k = 10;
  bool json = false;
  int threads = 0;
  int nprobe = 16, ef_search = 64;  // approximate indexes only
};
void run_search(const SearchCommand& command);

}  // namespace mms
