#include "service/cmd_index.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/error.h"
#include "encoders/embedder.h"
#include "index/collection.h"
#include "index/indexer.h"
#include "index/query.h"
#include "index/search.h"
#include "service/search_json.h"
#include "training/manifest.h"

namespace mms {
namespace {

int32_t resolve_threads(int threads) {
  return threads > 0 ? threads
                     : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
}

std::unique_ptr<Collection> open_collection(const std::string& dir, const Embedder& embedder,
                                            const std::string& index_type) {
  CollectionOptions options;
  options.model_fingerprint = embedder.fingerprint();
  options.dim = embedder.dim();
  options.index_type = index_type;
  return Collection::open(dir, options);
}

// The writer's lock of an index folder, held until the process ends (the kernel drops it
// with the descriptor, so a killed run never leaves it behind). A second `mmsearch index` or
// `add-texts` on the same folder is refused at once instead of rebuilding the FAISS files
// beside the first.
void lock_for_writing(const std::string& index_dir) {
  std::error_code ec;
  std::filesystem::create_directories(index_dir, ec);
  if (ec) throw Error::io("cannot create index folder '" + index_dir + "': " + ec.message());
  const std::string path = (std::filesystem::path(index_dir) / "write.lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error::io("cannot open '" + path +
                    "' to lock the index for writing: " + std::strerror(errno));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      throw Error::unavailable("another mmsearch index or add-texts is writing '" + index_dir +
                               "'; run this one when it has finished");
    }
    throw Error::io("cannot lock '" + path + "': " + std::strerror(err));
  }
  // fd stays open (and locked) for the life of the process.
}

}  // namespace

void run_index(const IndexCommand& c) {
  if (c.gpu) {
    throw Error::unsupported(
        "--gpu: this build of mmsearch has no FAISS GPU support "
        "(configure with -DMMSEARCH_CUDA=ON on a CUDA machine)");
  }
  if (c.paths.empty() && !c.reembed) {
    throw Error::invalid_argument("index: give at least one PATH to index");
  }
  lock_for_writing(c.index_dir);
  const int32_t threads = resolve_threads(c.threads);
  set_compute_threads(threads);
  const std::unique_ptr<Embedder> embedder = Embedder::load(c.model_dir);
  CollectionOptions collection_options;
  collection_options.model_fingerprint = embedder->fingerprint();
  collection_options.dim = embedder->dim();
  collection_options.index_type = c.index_type;
  collection_options.reembed = c.reembed;
  const std::unique_ptr<Collection> collection = Collection::open(c.index_dir, collection_options);
  IndexOptions options;
  options.threads = threads;
  options.prune = c.prune;
  options.follow_links = c.follow_links;
  options.batch_size = c.batch_size;
  if (!c.captions.empty()) {
    for (const Pair& p : read_pairs(c.captions)) options.captions.emplace(p.image, p.caption);
  }
  if (c.reembed) {
    // Until the swap at its end, searchers with the old model keep answering.
    const ReembedSummary r = reembed_collection(*collection, *embedder, options);
    std::cout << "re-embedded " << r.items.updated << " items and " << r.texts << " texts into "
              << "the space of model " << embedder->fingerprint() << "; " << r.items.failed
              << " unreadable, " << r.gone << " gone (stale until indexed again; --prune "
              << "removes them)\n"
              << format_summary(r.items) << "\n";
    if (c.paths.empty() && !c.prune) return;
  }
  const IndexSummary summary = index_paths(*collection, *embedder, c.paths, options);
  // Skipped paths have no catalog row to look up later, so each is named here.
  for (const std::string& why : summary.skipped) std::cerr << "skipped: " << why << "\n";
  std::cout << format_summary(summary) << "\n";
}

void run_add_texts(const AddTextsCommand& c) {
  lock_for_writing(c.index_dir);
  set_compute_threads(resolve_threads(c.threads));
  std::ifstream in(c.file);
  if (!in) throw Error::not_found("text file '" + c.file + "' does not exist or is unreadable");
  std::vector<std::string> texts;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (line[0] == '{') {
      try {
        const nlohmann::json j = nlohmann::json::parse(line);
        texts.push_back(j.at("text").get<std::string>());
      } catch (const nlohmann::json::exception& e) {
        throw Error::corrupt("text file '" + c.file + "' line " + std::to_string(number) +
                             ": not a JSON object with a string \"text\" (" + e.what() + ")");
      }
    } else {
      texts.push_back(line);
    }
  }
  const std::unique_ptr<Embedder> embedder = Embedder::load(c.model_dir);
  const std::unique_ptr<Collection> collection = open_collection(c.index_dir, *embedder, "");
  const std::vector<float> vectors = embedder->embed_texts(texts);
  collection->add_texts(texts, vectors, c.file,
                        embedder->text_hubs(vectors.data(), static_cast<int64_t>(texts.size())));
  collection->sync_indexes();
  std::cout << "added " << texts.size() << " texts; the index holds " << collection->text_count()
            << "\n";
}

namespace {

void print_results(const std::vector<SearchResult>& hits, SearchTarget target, bool filtered) {
  std::printf("%4s  %6s  %s\n", "rank", "score", target == SearchTarget::kImages ? "path" : "text");
  for (size_t i = 0; i < hits.size(); ++i) {
    const SearchResult& h = hits[i];
    const std::string folded =
        h.duplicates.empty() ? ""
                             : "  (+" + std::to_string(h.duplicates.size()) + " near-identical)";
    std::printf("%4zu  %6.3f  %s%s\n", i + 1, h.score,
                (target == SearchTarget::kImages ? h.path : h.text).c_str(), folded.c_str());
  }
  if (hits.empty()) {
    std::printf(filtered ? "(no results pass the filters)\n"
                         : "(no results: the index is empty)\n");
  }
}

// A server's answer (search_results_json's shape) back as results, for the same table.
std::vector<SearchResult> results_of(const nlohmann::json& answer) {
  std::vector<SearchResult> hits;
  for (const nlohmann::json& r : answer["results"]) {
    SearchResult h;
    h.id = r.value("id", int64_t{0});
    h.score = r.value("score", 0.f);
    h.path = r.value("path", std::string());
    h.text = r.value("text", std::string());
    if (r.contains("duplicates")) h.duplicates = r["duplicates"].get<std::vector<int64_t>>();
    hits.push_back(std::move(h));
  }
  return hits;
}

}  // namespace

std::vector<QueryTerm> search_terms(const SearchCommand& c) {
  std::vector<QueryTerm> terms = c.query.empty() ? std::vector<QueryTerm>() : parse_query(c.query);
  auto add = [&](QueryTerm::Kind kind, const std::string& text, int64_t item) {
    QueryTerm t;
    t.kind = kind;
    t.text = text;
    t.item = item;
    terms.push_back(std::move(t));
  };
  if (!c.text.empty()) add(QueryTerm::Kind::kText, c.text, 0);
  if (!c.image.empty()) add(QueryTerm::Kind::kImage, c.image, 0);
  if (!c.vector_file.empty()) add(QueryTerm::Kind::kVector, c.vector_file, 0);
  for (int64_t item : c.items) add(QueryTerm::Kind::kItem, "", item);
  return terms;
}

void run_search(const SearchCommand& c) {
  const bool filtered = c.min_score || !c.path_prefix.empty();
  if (!c.server.empty()) {
    const SearchTarget target = parse_search_target(c.target);
    const nlohmann::json answer = remote_search(c);
    if (c.json) {
      std::cout << answer.dump(2) << "\n";
    } else {
      print_results(results_of(answer), target, filtered);
    }
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  set_compute_threads(resolve_threads(c.threads));
  const SearchTarget target = parse_search_target(c.target);
  const std::unique_ptr<Embedder> embedder = Embedder::load(c.model_dir);
  const std::unique_ptr<Collection> collection =
      Collection::open_for_search(c.index_dir, embedder->fingerprint());
  collection->set_search_params({c.nprobe, c.ef_search});
  const std::vector<QueryTerm> terms = search_terms(c);
  const TermEmbedder term_embedder{
      [&](const std::string& text) { return embed_text_query(*embedder, text); },
      [&](const std::string& file) { return embed_image_query(*embedder, file); },
      [](const std::string& file) { return read_vector_file(file); }};
  const std::vector<float> query = compose_query(*collection, terms, term_embedder);
  QueryFilters filters;
  filters.min_score = c.min_score;
  // Catalog paths are absolute and lexically normal; so must the folder be.
  if (!c.path_prefix.empty()) {
    filters.path_prefix = std::filesystem::absolute(c.path_prefix).lexically_normal().string();
  }
  filters.dedup = c.dedup;
  filters.dedup_threshold = c.dedup_threshold;
  const std::vector<SearchResult> hits =
      search_query(*collection, query, target, c.k, filters,
                   query_hub_weight(terms, target, embedder->hub_weight()));
  const double took_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (c.json) {
    // The same shape as the HTTP service's answer: one function makes both.
    std::cout << search_results_json(hits, target, took_ms).dump(2) << "\n";
    return;
  }
  print_results(hits, target, filtered);
}

}  // namespace mms
