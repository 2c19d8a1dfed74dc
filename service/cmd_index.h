// The collection commands of the CLI: `index`, `add-texts` and `search`.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "index/query.h"

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
  std::string index_dir, model_dir;
  // The query: every one given adds its terms (see index/query.h), weight 1 unless --query
  // says otherwise.
  std::string text, image, query, vector_file;
  std::vector<int64_t> items;
  std::string target = "images";
  int k = 10;
  bool json = false;
  int threads = 0;
  int nprobe = 16, ef_search = 64;  // approximate indexes only
  std::optional<float> min_score;
  std::string path_prefix;
  bool dedup = false;
  float dedup_threshold = 0.99f;
  // When set (http://host:port), the search is asked of that running `mmsearch serve`
  // instead; index_dir and model_dir are not used. Output is the same.
  std::string server;
};
void run_search(const SearchCommand& command);

// The command's query terms: --query's, then --text, --image, --vector and each --item (weight
// 1), as the local and the remote search both send them.
std::vector<QueryTerm> search_terms(const SearchCommand& command);

// POST /v1/search on command.server with the command's terms and filters: the answer's JSON
// ({"results", "took_ms"}), or the Error the server's status stands for (service/cmd_remote.cc).
nlohmann::json remote_search(const SearchCommand& command);

}  // namespace mms
