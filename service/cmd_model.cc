#include "service/cmd_model.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"
#include "encoders/embedder.h"
#include "encoders/image_io.h"
#include "training/augment.h"  // fill_template
#include "training/evaluate.h"
#include "training/image_store.h"
#include "training/manifest.h"
#include "training/memory_builder.h"
#include "training/query_eval.h"
#include "training/train_config.h"
#include "training/trainer.h"

namespace mms {
namespace {

int32_t resolve_threads(int threads) {
  return threads > 0 ? threads
                     : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
}

void print_direction(const char* name, const DirectionMetrics& m) {
  std::printf("%-12s %6.2f %6.2f %6.2f %8.1f\n", name, m.r1, m.r5, m.r10, m.median_rank);
}

// Rows `rows` of `emb` ([n, dim] row-major), in that order.
std::vector<float> gather_rows(const std::vector<float>& emb, int32_t dim,
                               const std::vector<size_t>& rows) {
  std::vector<float> out;
  out.reserve(rows.size() * size_t(dim));
  for (size_t r : rows) {
    out.insert(out.end(), emb.begin() + r * dim, emb.begin() + (r + 1) * dim);
  }
  return out;
}

// The natural-query figures (training/query_eval.h) of every loadable image the manifest
// names, as JSON; prints the summary and the best and worst keywords. `stored_emb` holds the
// embedding of every store row (run_eval decodes and encodes each image once), `store_index`
// maps an image path to its row.
// Rows of an [n, dim] embedding matrix.
int64_t gallery_rows(const std::vector<float>& embeddings, const Embedder& embedder) {
  return static_cast<int64_t>(embeddings.size()) / embedder.dim();
}

std::string eval_queries(const Embedder& embedder, const std::vector<Pair>& pairs, Split split,
                         const EvalCommand& c, const ImageStore& store,
                         const std::unordered_map<std::string, size_t>& store_index,
                         const std::vector<float>& stored_emb) {
  if (c.query_templates.empty()) throw Error::invalid_argument("eval: --queries needs a template");
  std::vector<Pair> loaded;
  for (const Pair& p : pairs) {
    if (store.errors[store_index.at(p.image)].empty()) loaded.push_back(p);
  }
  QueryEvalOptions options;
  options.templates = c.query_templates;
  const NaturalQueries queries = natural_queries(loaded, split, options);
  if (queries.keywords.empty()) {
    throw Error::invalid_argument("manifest '" + c.manifest +
                                  "' has no keyword with enough images for natural queries");
  }
  std::vector<size_t> rows;
  for (const std::string& image : queries.images) rows.push_back(store_index.at(image));
  const std::vector<float> image_emb = gather_rows(stored_emb, embedder.dim(), rows);
  std::vector<std::string> texts;
  for (const std::string& k : queries.keywords) {
    for (const std::string& t : options.templates) texts.push_back(fill_template(t, k));
  }
  const std::vector<float> query_emb = embedder.embed_texts(texts);
  const int64_t n_images = static_cast<int64_t>(queries.images.size());
  const QueryMetrics m =
      query_metrics(queries, image_emb, query_emb, embedder.dim(), options.templates,
                    embedder.hub_weight(), embedder.image_hubs(image_emb.data(), n_images));
  std::printf("natural queries: %zu keywords x %zu templates\n", queries.keywords.size(),
              options.templates.size());
  std::printf("%-22s %8s %8s %8s\n", "", "P@10", "mAP@100", "images");
  std::printf("%-22s %8.2f %8.2f %8lld\n", "whole collection", m.collection.p10,
              m.collection.map100, static_cast<long long>(m.collection.n_images));
  std::printf("%-22s %8.2f %8.2f %8lld\n", (std::string(split_name(split)) + " images").c_str(),
              m.split.p10, m.split.map100, static_cast<long long>(m.split.n_images));
  auto show = [](const char* what, const std::vector<KeywordFigures>& list) {
    std::printf("%s:", what);
    for (const KeywordFigures& k : list) std::printf(" %s (%.0f)", k.keyword.c_str(), k.p10);
    std::printf("\n");
  };
  show("best keywords (P@10 over the collection)", best_keywords(m, 10));
  show("worst keywords", worst_keywords(m, 10));
  return query_metrics_to_json(m, split);
}

}  // namespace

void run_train(const TrainCommand& c) {
  const DistributedSettings distributed =
      resolve_distributed(c.launch, [](const char* name) { return std::getenv(name); });
  const int32_t threads = resolve_threads(c.threads);
  set_compute_threads(threads);
  const TrainConfig config = load_train_config(c.config, c.overrides);
  TrainOptions options;
  options.out_dir = c.out_dir;
  options.resume = c.resume;
  options.device = c.device;
  options.threads = threads;
  options.distributed = distributed;
  const TrainResult r = train_model(config, options);
  if (distributed.rank != 0) return;  // rank 0 reports for the run
  std::cout << "trained " << r.steps << " steps; best validation score " << r.best_score
            << " (mean recall, %); model: " << (r.model_dir.empty() ? "none" : r.model_dir) << "\n";
}

void run_eval(const EvalCommand& c) {
  const int32_t threads = resolve_threads(c.threads);
  set_compute_threads(threads);
  const std::unique_ptr<Embedder> embedder =
      Embedder::load(c.model_dir, c.use_memory, c.memory_overrides);
  const std::vector<Pair> pairs = read_pairs(c.manifest);
  const Split split = parse_split(c.split);
  const Gallery all = make_gallery(pairs, split);
  if (all.images.empty()) {
    throw Error::invalid_argument("manifest '" + c.manifest + "' has no pairs in the " + c.split +
                                  " split");
  }
  // The split's images, or with --queries every image the manifest names (the collection
  // the natural queries search, which holds the split's).
  std::vector<std::string> images = all.images;
  std::unordered_map<std::string, size_t> store_index;
  if (c.queries) {
    images.clear();
    for (const Pair& p : pairs) {
      if (store_index.emplace(p.image, images.size()).second) images.push_back(p.image);
    }
  } else {
    for (size_t i = 0; i < images.size(); ++i) store_index.emplace(images[i], i);
  }
  const ImageStore store = build_image_store(images, embedder->image_size(), threads, "");
  // Images that cannot be loaded (over the pixel bound, corrupt) leave the galleries, with
  // their pairs; the figures then describe the images a user could index. Each image is
  // decoded and encoded once: the gallery is rebuilt from the pairs, the pixels come from
  // the store.
  std::unordered_set<std::string> failed;
  for (const std::string& image : all.images) {
    const std::string& error = store.errors[store_index.at(image)];
    if (!error.empty()) {
      if (failed.empty()) {
        std::fprintf(stderr, "eval: image(s) cannot be loaded and are left out, e.g. %s\n",
                     error.c_str());
      }
      failed.insert(image);
    }
  }
  Gallery gallery = all;
  if (!failed.empty()) {
    std::fprintf(stderr, "eval: %zu image(s) left out\n", failed.size());
    std::vector<Pair> kept;
    for (const Pair& p : pairs) {
      if (!failed.count(p.image)) kept.push_back(p);
    }
    gallery = make_gallery(kept, split);
  }
  std::vector<size_t> loaded;  // store rows that decoded, each embedded once
  for (size_t i = 0; i < images.size(); ++i) {
    if (store.errors[i].empty()) loaded.push_back(i);
  }
  std::vector<float> stored_emb(images.size() * size_t(embedder->dim()));
  {
    const std::vector<float> emb = embed_stored_images(*embedder, store, loaded);
    for (size_t r = 0; r < loaded.size(); ++r) {
      std::copy(emb.begin() + r * embedder->dim(), emb.begin() + (r + 1) * embedder->dim(),
                stored_emb.begin() + loaded[r] * embedder->dim());
    }
  }
  std::vector<size_t> rows;
  for (const std::string& image : gallery.images) rows.push_back(store_index.at(image));
  const std::vector<float> image_emb = gather_rows(stored_emb, embedder->dim(), rows);
  const std::vector<float> text_emb = embedder->embed_texts(gallery.texts);
  // Ranked as search ranks them: across modalities, with the memory's hub penalty if any.
  HubPenalty hubs;
  hubs.weight = embedder->hub_weight();
  if (hubs.weight != 0) {
    hubs.images = embedder->image_hubs(image_emb.data(), gallery_rows(image_emb, *embedder));
    hubs.texts = embedder->text_hubs(text_emb.data(), gallery_rows(text_emb, *embedder));
  }
  const RetrievalMetrics m = retrieval_metrics(image_emb, text_emb, embedder->dim(), gallery, hubs);
  nlohmann::json out = nlohmann::json::parse(retrieval_metrics_to_json(m));
  out["memory"] = embedder->uses_memory();
  out["hub_weight"] = hubs.weight;

  // Zero-shot classification where the manifest carries class labels.
  const ZeroShotTask task = zero_shot_task(gallery);
  std::printf("%s split of %s: %lld images, %lld texts%s\n", c.split.c_str(), c.manifest.c_str(),
              static_cast<long long>(m.n_images), static_cast<long long>(m.n_texts),
              embedder->uses_memory() ? " (embeddings augmented by the model's memory)" : "");
  std::printf("%-12s %6s %6s %6s %8s\n", "", "R@1", "R@5", "R@10", "med.rank");
  print_direction("text->image", m.t2i);
  print_direction("image->text", m.i2t);
  if (!task.classes.empty()) {
    if (c.zero_shot_templates.empty()) {
      throw Error::invalid_argument("eval: zero-shot accuracy needs at least one template");
    }
    std::vector<std::vector<float>> prompt_sets;
    nlohmann::json per_template = nlohmann::json::array();
    for (const std::string& tmpl : c.zero_shot_templates) {
      std::vector<std::string> prompts;
      for (const std::string& cls : task.classes) prompts.push_back(zero_shot_prompt(tmpl, cls));
      prompt_sets.push_back(embedder->embed_texts(prompts));
      const double acc = zero_shot_accuracy(
          image_emb, prompt_sets.back(), embedder->dim(), task.labels, hubs.weight,
          embedder->text_hubs(prompt_sets.back().data(),
                              gallery_rows(prompt_sets.back(), *embedder)));
      per_template.push_back({{"template", tmpl}, {"acc", acc}});
      std::printf("zero-shot classification over %zu classes, '%s': %.2f%%\n", task.classes.size(),
                  tmpl.c_str(), acc);
    }
    out["zero_shot_classes"] = task.classes.size();
    out["zero_shot_acc"] = per_template[0]["acc"];
    if (prompt_sets.size() > 1) {
      const std::vector<float> ensemble = ensemble_prompts(prompt_sets, embedder->dim());
      const double acc = zero_shot_accuracy(
          image_emb, ensemble, embedder->dim(), task.labels, hubs.weight,
          embedder->text_hubs(ensemble.data(), gallery_rows(ensemble, *embedder)));
      out["zero_shot_acc"] = acc;
      out["zero_shot_templates"] = per_template;
      std::printf("zero-shot classification, ensemble of %zu templates: %.2f%%\n",
                  prompt_sets.size(), acc);
    }
  }
  if (c.queries) {
    out["queries"] = nlohmann::json::parse(
        eval_queries(*embedder, pairs, split, c, store, store_index, stored_emb));
  }
  if (!c.json_out.empty()) {
    std::ofstream f(c.json_out, std::ios::trunc);
    f << out.dump(2) << "\n";
    if (!f.flush()) throw Error::io("cannot write '" + c.json_out + "'");
  }
  if (!c.ranks_out.empty()) {
    std::ofstream f(c.ranks_out, std::ios::trunc);
    for (size_t i = 0; i < gallery.texts.size(); ++i) {
      f << nlohmann::json{{"direction", "t2i"},
                          {"text", gallery.texts[i]},
                          {"rank", m.t2i_ranks[i]}}
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
        << "\n";
    }
    for (size_t j = 0; j < gallery.images.size(); ++j) {
      f << nlohmann::json{{"direction", "i2t"},
                          {"image", gallery.images[j]},
                          {"rank", m.i2t_ranks[j]}}
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
        << "\n";
    }
    if (!f.flush()) throw Error::io("cannot write '" + c.ranks_out + "'");
  }
}

void run_memory(const MemoryCommand& c) {
  const int32_t threads = resolve_threads(c.threads);
  set_compute_threads(threads);
  const TrainConfig config = load_train_config(c.config, c.overrides);
  const std::unique_ptr<Embedder> embedder = Embedder::load(c.model_dir, /*use_memory=*/false);
  const MemorySettings settings = c.settings.applied_to(MemorySettings{});
  MemoryBuildStats stats;
  const EmbeddingMemory memory =
      build_memory(*embedder, config, settings, threads, &stats, parse_memory_texts(c.texts));
  const std::string path = (std::filesystem::path(c.model_dir) / "memory.safetensors").string();
  write_memory(path, memory);
  std::printf(
      "wrote %s: %lld images, %lld texts, %lld pairs (k %d, temperature %g, weight %g, "
      "image weight %g, gate %g to %g, recall weight %g, recall gate %g to %g); hub banks of "
      "%lld texts and %lld images (hub k %d, hub weight %g)\n",
      path.c_str(), static_cast<long long>(stats.images), static_cast<long long>(stats.texts),
      static_cast<long long>(stats.pairs), settings.k, settings.temperature, settings.weight,
      settings.image_pull(), settings.gate_low, settings.gate_high, settings.recall_weight,
      settings.recall_gate_low, settings.recall_gate_high,
      static_cast<long long>(memory.text_bank.size() / memory.dim),
      static_cast<long long>(memory.image_bank.size() / memory.dim), settings.hub_k,
      settings.hub_weight);
  if (stats.textless_images) {
    std::printf("%lld image(s) have no text of the chosen kinds and are left out\n",
                static_cast<long long>(stats.textless_images));
  }
  if (stats.failed_images) {
    std::printf("%lld image(s) could not be loaded and are left out\n",
                static_cast<long long>(stats.failed_images));
  }
}

void run_embed(const EmbedCommand& c) {
  if (c.texts.empty() && c.images.empty()) {
    throw Error::invalid_argument("give something to embed: --text or --image");
  }
  set_compute_threads(resolve_threads(c.threads));
  const std::unique_ptr<Embedder> embedder = Embedder::load(c.model_dir, c.use_memory);
  // With hub banks, each line also gives the input's h as a document (encoders/memory.h),
  // computed for a whole batch at a time (`hubs`, one per row of its embeddings).
  const bool with_hubs = embedder->hub_weight() > 0;
  auto print = [&](const char* kind, const std::string& input, const float* v, float hub) {
    nlohmann::json line = {{"kind", kind},
                           {"input", input},
                           {"embedding", std::vector<float>(v, v + embedder->dim())}};
    if (with_hubs) line["hub"] = hub;
    std::cout << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  };
  if (!c.texts.empty()) {
    const std::vector<float> emb = embedder->embed_texts(c.texts);
    const std::vector<float> hubs =
        embedder->text_hubs(emb.data(), static_cast<int64_t>(c.texts.size()));
    for (size_t i = 0; i < c.texts.size(); ++i) {
      print("text", c.texts[i], emb.data() + i * size_t(embedder->dim()), hubs[i]);
    }
  }
  // An image that cannot be loaded is told on stderr and left out; the others are still
  // embedded (each line names its input), and the command fails at the end, naming how many
  // were left out, with the first one's kind of error. The loaded ones are encoded in
  // batches, not one encoder pass (and memory lookup) per image.
  constexpr size_t kBatch = 256;  // 256 x 3 x 64 x 64 floats: 12.6 MB of pixels at a time
  size_t failed = 0;
  std::optional<Error> first_failure;
  std::vector<float> pixels;
  std::vector<const std::string*> batch;
  auto flush = [&] {
    if (batch.empty()) return;
    const std::vector<float> emb =
        embedder->embed_pixels(pixels.data(), static_cast<int64_t>(batch.size()));
    const std::vector<float> hubs =
        embedder->image_hubs(emb.data(), static_cast<int64_t>(batch.size()));
    for (size_t i = 0; i < batch.size(); ++i) {
      print("image", *batch[i], emb.data() + i * size_t(embedder->dim()), hubs[i]);
    }
    pixels.clear();
    batch.clear();
  };
  for (const std::string& path : c.images) {
    try {
      const DecodedImage image = load_image_file(path, ImageLimits{}, embedder->image_size());
      const std::vector<float> p = preprocess_image(image, embedder->image_size());
      pixels.insert(pixels.end(), p.begin(), p.end());
    } catch (const Error& e) {
      std::cerr << "mmsearch embed: " << e.what() << " (left out)\n";
      if (!failed++) first_failure = e;
      continue;
    }
    batch.push_back(&path);
    if (batch.size() == kBatch) flush();
  }
  flush();
  std::cout.flush();
  if (first_failure) {
    throw Error(first_failure->kind(),
                std::to_string(failed) + " of " + std::to_string(c.images.size()) +
                    " image(s) could not be embedded; the first: " + first_failure->what());
  }
}

}  // namespace mms
