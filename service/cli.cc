#include "service/cli.h"

#include <CLI/CLI.hpp>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "service/cmd_index.h"
#include "service/cmd_model.h"
#include "service/http_server.h"
#include "tokenizer/tokenizer.h"
#include "training/evaluate.h"
#include "training/query_eval.h"

namespace mms {
namespace {

constexpr int kExitOk = 0;
constexpr const char* kDefaultModel = "data/models/default";
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// The single place where errors become exit codes: a value the user passed is bad usage,
// everything else is a runtime failure.
int exit_code_for(const Error& error) {
  return error.kind() == ErrorKind::kInvalidArgument ? kExitUsage : kExitFailure;
}

int default_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

struct Options {
  // train
  std::string config, out_dir, device = "cpu";
  std::vector<std::string> overrides;
  bool resume = false;
  LaunchFlags launch;  // unset: from the environment (torchrun's)
  // eval / index / search / serve
  std::string model_dir = kDefaultModel, manifest, json_out, ranks_out, index_dir, index_type;
  std::vector<std::string> paths;
  bool prune = false, gpu = false, json = false, reembed = false, follow_links = false;
  std::string captions;
  std::string target = "images", file;
  SearchCommand search;
  std::string split = "test";
  std::vector<std::string> zero_shot_templates = {mms::kDefaultZeroShotTemplate};
  int k = 10;
  std::string host = "127.0.0.1", api_key;
  int port = 8080;
  int64_t max_body_bytes = ServeLimits{}.max_body_bytes;
  int http_threads = HttpCoreLimits{}.worker_threads;
  std::vector<std::string> allow_hosts;
  std::string cors_origin;
  int64_t max_queue = BatcherOptions{}.max_queue;
  int threads = default_threads();
  int batch_size = 64;
  int nprobe = 16, ef_search = 64;
  // memory (the subcommand's settings; eval's overrides of a memory's own)
  MemoryOverrides memory, memory_overrides;
  bool no_memory = false;
  std::vector<std::string> embed_texts, embed_images;
  std::string memory_texts = "captions";
  bool queries = false;
  std::vector<std::string> query_templates = mms::QueryEvalOptions{}.templates;
  // tokenizer-train
  std::string corpus, tokenizer_out;
  int vocab_size = 8000;
};

// --PREFIXk, --PREFIXtemperature, --PREFIXweight: a memory's settings (encoders/memory.h),
// each help text ending in `which` (and the default, where `defaults` is given).
void add_memory_settings(CLI::App* cmd, const std::string& prefix, MemoryOverrides& m,
                         const std::string& which, const MemorySettings* defaults = nullptr) {
  auto help = [&](const std::string& what, double value) {
    std::ostringstream s;
    s << what << ", " << which;
    if (defaults) s << " (default " << value << ")";
    return s.str();
  };
  const MemorySettings d = defaults ? *defaults : MemorySettings{};
  cmd->add_option(prefix + "k", m.k, help("Memory neighbours each embedding consults", d.k))
      ->check(CLI::Range(1, 1000));
  cmd->add_option(prefix + "temperature", m.temperature,
                  help("Softmax temperature over their similarities", d.temperature))
      ->check(CLI::PositiveNumber);
  cmd->add_option(
         prefix + "weight", m.weight,
         help("How far an embedding moves toward its neighbours (0: not at all)", d.weight))
      ->check(CLI::NonNegativeNumber);
  cmd->add_option(prefix + "image-weight", m.image_weight,
                  help("How far an image moves toward its neighbours' captions (0: not at all; "
                       "-1: the weight)",
                       d.image_weight))
      ->check(CLI::Range(-1.0, 1e6));
  cmd->add_option(
         prefix + "gate-low", m.gate_low,
         help("Nearest-neighbour similarity below which an embedding does not move", d.gate_low))
      ->check(CLI::Range(-1.0, 1.0));
  cmd->add_option(prefix + "gate-high", m.gate_high,
                  help("Similarity from which it moves by the whole weight (-1 and -1: no gate)",
                       d.gate_high))
      ->check(CLI::Range(-1.0, 1.0));
  cmd->add_option(prefix + "recall-weight", m.recall_weight,
                  help("How far an image that is one of the memory's own moves toward its own "
                       "texts (0: not at all)",
                       d.recall_weight))
      ->check(CLI::NonNegativeNumber);
  cmd->add_option(prefix + "recall-gate-low", m.recall_gate_low,
                  help("Similarity to the nearest memory image below which an image is not "
                       "recognised as it",
                       d.recall_gate_low))
      ->check(CLI::Range(-1.0, 1.0));
  cmd->add_option(prefix + "recall-gate-high", m.recall_gate_high,
                  help("Similarity from which it is recognised by the whole recall weight",
                       d.recall_gate_high))
      ->check(CLI::Range(-1.0, 1.0));
  cmd->add_option(prefix + "hub-k", m.hub_k,
                  help("Bank neighbours that make a document's hubness h", d.hub_k))
      ->check(CLI::Range(1, 1024));
  cmd->add_option(prefix + "hub-weight", m.hub_weight,
                  help("Weight of h in a score across modalities: cosine - weight * h (0: plain "
                       "cosines)",
                       d.hub_weight))
      ->check(CLI::NonNegativeNumber);
}

void add_threads(CLI::App* cmd, Options& o) {
  cmd->add_option("--threads", o.threads, "Worker threads (default: all cores)")
      ->check(CLI::Range(1, 1024));
}

void run_tokenizer_train(const Options& o) {
  TokenizerTrainOptions options;
  options.corpus_path = o.corpus;
  options.vocab_size = o.vocab_size;
  options.out_path = o.tokenizer_out;
  options.num_threads = o.threads;
  train_tokenizer(options);
  const Tokenizer tokenizer = Tokenizer::load(o.tokenizer_out);
  std::cout << "wrote " << o.tokenizer_out << " (" << tokenizer.vocab_size() << " pieces)\n";
}

bool has_subcommand(const CLI::App& app, const std::string& name) {
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (sub->check_name(name)) return true;
  }
  return false;
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"mmsearch: find images by a sentence or by an example image", "mmsearch"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mmsearch 0.1.0");
  Options o;
  std::function<void()> action;

  CLI::App* train = app.add_subcommand("train", "Train the dual encoder contrastively");
  train->add_option("--config", o.config, "Training config (JSON)")->required();
  train->add_option("--out", o.out_dir, "Run directory (checkpoints, logs, exported model)")
      ->required();
  train->add_flag("--resume", o.resume, "Continue from the last checkpoint in --out");
  train->add_option("--set", o.overrides, "Override a config value: key=value (repeatable)");
  train->add_option("--world-size", o.launch.world_size,
                    "Processes in a distributed run (default: $WORLD_SIZE, else 1)")
      ->check(CLI::PositiveNumber);
  train->add_option("--rank", o.launch.rank, "This process's rank (default: $RANK, else 0)")
      ->check(CLI::NonNegativeNumber);
  train->add_option("--local-rank", o.launch.local_rank,
                    "This process's rank on its machine (default: $LOCAL_RANK, else 0)")
      ->check(CLI::NonNegativeNumber);
  train->add_option("--master", o.launch.master,
                    "HOST:PORT of rank 0 (default: $MASTER_ADDR:$MASTER_PORT, else 127.0.0.1:29500)");
  train->add_option("--dist-timeout", o.launch.timeout_s,
                    "Seconds a rank waits for a lost or hung one before failing (default 300)")
      ->check(CLI::PositiveNumber);
  train->add_option("--device", o.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  add_threads(train, o);
  train->callback([&] {
    action = [&o] {
      run_train({o.config, o.out_dir, o.device, o.overrides, o.resume, o.threads, o.launch});
    };
  });

  CLI::App* eval = app.add_subcommand("eval", "Recall@K of a model on a manifest's test split");
  eval->add_option("--model", o.model_dir, "Model directory")->required();
  eval->add_option("--manifest", o.manifest, "JSONL manifest (or COCO / Karpathy JSON)")
      ->required();
  eval->add_option("--json", o.json_out, "Also write the figures to this JSON file");
  eval->add_option("--ranks", o.ranks_out,
                   "Also write every query's rank to this file, a JSON line per query: "
                   "{\"direction\": \"t2i\", \"text\", \"rank\"} or {\"direction\": \"i2t\", "
                   "\"image\", \"rank\"} (1 = its best relevant item came first)");
  eval->add_flag("--no-memory", o.no_memory,
                 "Score the encoders' own embeddings, without the model's memory.safetensors");
  add_memory_settings(eval, "--memory-", o.memory_overrides, "instead of the memory's own setting");
  eval->add_option("--split", o.split, "Which split to evaluate (default: test)")
      ->check(CLI::IsMember({"train", "val", "test"}));
  eval->add_option("--zero-shot-template", o.zero_shot_templates,
                   "Class prompt for zero-shot accuracy where the manifest has labels; {} is "
                   "the class (default: 'a photo of {}', as labels carry their article: 'a coat'). "
                   "Repeat it for a prompt ensemble: "
                   "each class is the mean of its prompts' embeddings");
  eval->add_flag("--queries", o.queries,
                 "Also score natural queries: each keyword of the manifest with >= 8 images "
                 "(>= 2 in the split) asked in every --query-template; precision@10 and "
                 "mAP@100 over all the manifest's images and over the split's");
  eval->add_option("--query-template", o.query_templates,
                   "Natural-query template, {} is the keyword; repeatable (default: 'a {}', "
                   "'{}', 'a picture of {}')");
  add_threads(eval, o);
  eval->callback([&] {
    action = [&o] {
      run_eval({o.model_dir, o.manifest, o.json_out, o.split, o.zero_shot_templates, o.threads,
                o.ranks_out, !o.no_memory, o.memory_overrides, o.queries, o.query_templates});
    };
  });

  CLI::App* embed = app.add_subcommand("embed", "Print the embeddings of texts and images");
  embed->add_option("--model", o.model_dir, "Model directory (default: the shipped model)");
  embed->add_option("--text", o.embed_texts, "A text to embed (repeatable)")
      ->allow_extra_args(false);
  embed
      ->add_option("--image", o.embed_images,
                   "An image file to embed (repeatable; one that cannot be loaded is told on "
                   "stderr and left out, the others still embedded, and the exit status is 1)")
      ->allow_extra_args(false);
  embed->add_flag("--no-memory", o.no_memory,
                  "The encoders' own embeddings, without the model's memory.safetensors");
  add_threads(embed, o);
  embed->callback([&] {
    action = [&o] {
      run_embed({o.model_dir, o.embed_texts, o.embed_images, !o.no_memory, o.threads});
    };
  });

  CLI::App* memory = app.add_subcommand(
      "memory", "Build a model's memory of training pairs (MODEL_DIR/memory.safetensors)");
  memory->add_option("--model", o.model_dir, "Model directory to add the memory to")->required();
  memory
      ->add_option("--config", o.config, "Training config whose data's train pairs fill the memory")
      ->required();
  memory->add_option("--set", o.overrides, "Override a config value: key=value (repeatable)");
  const MemorySettings memory_defaults;
  add_memory_settings(memory, "--", o.memory, "stored in the memory", &memory_defaults);
  memory->add_option("--texts", o.memory_texts,
                     "Which texts of the training pairs the memory holds: captions, titles, "
                     "keywords, comma-separated (default: captions)");
  add_threads(memory, o);
  memory->callback([&] {
    action = [&o] {
      run_memory({o.model_dir, o.config, o.overrides, o.memory, o.threads, o.memory_texts});
    };
  });

  CLI::App* index = app.add_subcommand("index", "Index images under PATHs into an index dir");
  index->add_option("--index", o.index_dir, "Index directory")->required();
  index->add_option("--model", o.model_dir, "Model directory (default: the shipped model)");
  index->add_option("paths", o.paths, "Files or folders to index");
  index->add_option("--index-type", o.index_type,
                    "FAISS factory string (Flat, HNSW32, IVF1024,Flat, ...), or auto: Flat below "
                    "100k vectors, HNSW32 below 200k, then IVF (default: what the index records; "
                    "auto for a new one)");
  index->add_flag("--prune", o.prune, "Remove items whose files are gone");
  index->add_flag("--reembed", o.reembed, "Re-embed every item with --model");
  index->add_flag("--gpu", o.gpu, "Search on the GPU (FAISS GPU builds only)");
  index->add_option("--batch-size", o.batch_size, "Images per transaction (default 64)")
      ->check(CLI::Range(1, 4096));
  index->add_flag("--follow-links", o.follow_links, "Follow symbolic links (loops are detected)");
  index->add_option("--captions", o.captions,
                    "Manifest (JSONL/COCO/Karpathy) whose captions attach to the images");
  add_threads(index, o);
  index->callback([&] {
    action = [&o] {
      run_index({o.index_dir, o.model_dir, o.index_type, o.captions, o.paths, o.prune, o.gpu,
                 o.reembed, o.follow_links, o.threads, o.batch_size});
    };
  });

  CLI::App* add_texts = app.add_subcommand("add-texts", "Encode a text corpus into the index");
  add_texts->add_option("--index", o.index_dir, "Index directory")->required();
  add_texts->add_option("file", o.file, "One text per line, or JSONL {\"text\": ...}")->required();
  add_texts->add_option("--model", o.model_dir, "Model directory (default: the shipped model)");
  add_threads(add_texts, o);
  add_texts->callback([&] {
    action = [&o] { run_add_texts({o.index_dir, o.model_dir, o.file, o.threads}); };
  });

  CLI::App* search = app.add_subcommand("search", "Search an index by text or by image");
  CLI::Option* search_index = search->add_option("--index", o.index_dir, "Index directory");
  search
      ->add_option("--server", o.search.server,
                   "Ask this running `mmsearch serve` (http://host:port) instead of loading "
                   "the model and index here; same output")
      ->excludes(search_index);
  SearchCommand& q = o.search;
  search->add_option("--text", q.text, "Query text");
  search->add_option("--image", q.image, "Query image file");
  search->add_option("--query", q.query,
                     "Compound query, e.g. '2 * \"golden retriever\" + image:dog.jpg - fruit'");
  search->add_option("--item", q.items, "An indexed item's id: search like it (repeatable)");
  search->add_option("--vector", q.vector_file, "A raw embedding: JSON array of floats");
  search->add_option("--min-score", q.min_score, "Drop results scoring below this (-1..1)")
      ->check(CLI::Range(-1.0, 1.0));
  search->add_option("--path-prefix", q.path_prefix, "Only images under this folder");
  search->add_flag("--dedup", q.dedup, "Collapse near-identical results into one");
  search
      ->add_option("--dedup-threshold", q.dedup_threshold,
                   "Cosine similarity that counts as identical (default 0.99)")
      ->check(CLI::Range(0.01, 1.0));
  search->add_option("--target", o.target, "What to return")
      ->check(CLI::IsMember({"images", "texts"}));
  search->add_option("-k", o.k, "Number of results")->check(CLI::Range(1, 10000));
  search->add_flag("--json", o.json, "Print JSON instead of a table");
  search->add_option("--model", o.model_dir, "Model directory (default: the shipped model)");
  search->add_option("--nprobe", o.nprobe, "IVF lists visited per query (default 16)")
      ->check(CLI::Range(1, 65536));
  search->add_option("--ef-search", o.ef_search, "HNSW candidate list length (default 64)")
      ->check(CLI::Range(1, 65536));
  add_threads(search, o);
  search->callback([&] {
    if (o.index_dir.empty() && q.server.empty()) {
      throw CLI::ValidationError("search", "give --index DIR (or --server URL)");
    }
    if (q.text.empty() && q.image.empty() && q.query.empty() && q.vector_file.empty() &&
        q.items.empty()) {
      throw CLI::ValidationError("search",
                                 "give a query: --text, --image, --query, --item or --vector");
    }
    action = [&o] {
      SearchCommand c = o.search;
      c.index_dir = o.index_dir;
      c.model_dir = o.model_dir;
      c.target = o.target;
      c.k = o.k;
      c.json = o.json;
      c.threads = o.threads;
      c.nprobe = o.nprobe;
      c.ef_search = o.ef_search;
      run_search(c);
    };
  });

  CLI::App* serve = app.add_subcommand("serve", "Serve search over HTTP with a web page");
  serve->add_option("--index", o.index_dir, "Index directory")->required();
  serve->add_option("--host", o.host, "Address to bind (default 127.0.0.1)");
  serve->add_option("--port", o.port, "Port (default 8080)")->check(CLI::Range(1, 65535));
  serve->add_option("--api-key", o.api_key, "Require this bearer token")
      ->envname("MMSEARCH_API_KEY");
  serve->add_option("--model", o.model_dir, "Model directory (default: the shipped model)");
  serve->add_option("--max-body-bytes", o.max_body_bytes, "Largest request body (default 16 MiB)")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 32));
  serve
      ->add_option("--http-threads", o.http_threads,
                   "Requests handled at once; connections are not limited by it (default 32)")
      ->check(CLI::Range(1, 4096));
  serve->add_option("--allow-host", o.allow_hosts,
                    "Also answer requests whose Host header names this (repeatable); others get "
                    "421 (default: the bound address's names)");
  serve->add_option("--cors-origin", o.cors_origin,
                    "Let web pages from this origin call the API (CORS; default: off)");
  serve->add_option("--max-queue", o.max_queue, "Queued jobs at most; beyond: 503 (default 512)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  add_threads(serve, o);
  serve->callback([&] {
    action = [&o] {
      ServeOptions options;
      options.index_dir = o.index_dir;
      options.model_dir = o.model_dir;
      options.host = o.host;
      options.port = o.port;
      options.api_key = o.api_key;
      options.threads = o.threads;
      options.limits.max_body_bytes = o.max_body_bytes;
      options.limits.http.worker_threads = o.http_threads;
      options.allow_hosts = o.allow_hosts;
      options.cors_origin = o.cors_origin;
      options.limits.batch.max_queue = o.max_queue;
      run_serve(options);
    };
  });

  CLI::App* tok = app.add_subcommand("tokenizer-train", "Train a SentencePiece tokenizer");
  tok->add_option("--corpus", o.corpus, "Text corpus, one sentence per line")->required();
  tok->add_option("--vocab-size", o.vocab_size, "Vocabulary size")
      ->required()
      ->check(CLI::Range(16, 1000000));
  tok->add_option("--out", o.tokenizer_out, "Output FILE.model")->required();
  add_threads(tok, o);
  tok->callback([&] { action = [&o] { run_tokenizer_train(o); }; });

  if (argc > 1 && argv[1][0] != '-' && !has_subcommand(app, argv[1])) {
    std::cerr << "mmsearch: unknown command '" << argv[1] << "' (see 'mmsearch --help')\n";
    return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << "\n";
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    std::cerr << "mmsearch: " << e.what() << " (see 'mmsearch --help')\n";
    return kExitUsage;
  }

  // The shipped model is found from any working directory: beside the build tree's program.
  if (o.model_dir == kDefaultModel && !std::filesystem::exists(o.model_dir)) {
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    const auto beside = exe.parent_path().parent_path() / kDefaultModel;
    if (!ec && std::filesystem::exists(beside)) o.model_dir = beside.string();
  }
  try {
    action();
    return kExitOk;
  } catch (const Error& e) {
    std::cerr << "mmsearch: " << e.what() << "\n";
    return exit_code_for(e);
  } catch (const std::exception& e) {
    std::cerr << "mmsearch: unexpected failure: " << e.what() << "\n";
    return kExitFailure;
  }
}

}  // namespace mms
