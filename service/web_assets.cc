#include "service/web_assets.h"

#include <cctype>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace mms {
namespace {

constexpr const char* kPage = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mmsearch</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #222; background: #fafafa; }
  body { margin: 0 auto; max-width: 1200px; padding: 1rem; min-height: 100vh; box-sizing: border-box; }
  body.dragging { outline: 3px dashed #4a7; outline-offset: -6px; }
  h1 { font-size: 1.4rem; margin: 0 0 .8rem; }
  form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-bottom: .6rem; }
  input[type=search] { flex: 1 1 18rem; font-size: 1rem; padding: .45rem .6rem; }
  button { font-size: 1rem; padding: .45rem .9rem; cursor: pointer; }
  .bar { display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; font-size: .9rem; }
  #status { min-height: 1.4rem; margin: .4rem 0; font-size: .9rem; color: #555; }
  #status.error { color: #b00020; font-weight: 600; }
  #grid { display: grid; gap: .8rem; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); }
  .card { background: #fff; border: 1px solid #ddd; border-radius: 6px; overflow: hidden; }
  .card img { width: 100%; aspect-ratio: 1; object-fit: contain; background: #eee; cursor: zoom-in; display: block; }
  .card .meta { padding: .35rem .5rem; font-size: .8rem; word-break: break-word; }
  .card .score { font-weight: 600; }
  .text-card { padding: .6rem; font-size: .9rem; }
  #viewer { position: fixed; inset: 0; background: rgba(0,0,0,.85); display: none;
            align-items: center; justify-content: center; cursor: zoom-out; }
  #viewer img { max-width: 95vw; max-height: 95vh; }
</style>
</head>
<body>
<h1>mmsearch</h1>
<form id="text-form">
  <input type="search" id="query" placeholder="Describe what you are looking for" autofocus>
  <button type="submit">Search</button>
</form>
<div class="bar">
  <label>Or search by image (drop one on the page): <input type="file" id="image" accept="image/*"></label>
  <span>Show:
    <label><input type="radio" name="target" value="images" checked> images</label>
    <label><input type="radio" name="target" value="texts"> texts</label>
  </span>
  <label>Results <input type="number" id="k" value="24" min="1" max="1000" style="width:4.5rem"></label>
  <label>API key <input type="password" id="key" placeholder="if required" style="width:8rem"></label>
</div>
<div id="status" role="status"></div>
<div id="grid" aria-busy="false"></div>
<div id="viewer"><img alt=""></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const keyInput = $("key");
keyInput.value = localStorage.getItem("mmsearch-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("mmsearch-key", keyInput.value));
const authHeaders = () => keyInput.value ? { "Authorization": "Bearer " + keyInput.value } : {};
const target = () => document.querySelector("input[name=target]:checked").value;
const k = () => Math.max(1, Math.min(1000, parseInt($("k").value, 10) || 24));

function status(message, isError) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

async function call(url, options) {
  options = options || {};
  options.headers = Object.assign({}, options.headers || {}, authHeaders());
  const response = await fetch(url, options);
  if (!response.ok) {
    let message = "HTTP " + response.status;
    try { const body = await response.json(); message = body.error.message || message; } catch (e) {}
    throw new Error(message);
  }
  return response;
}

// Thumbnails are fetched (not <img src>) so that the API key header goes with them.
async function thumbnail(img, id, size) {
  try {
    const blob = await (await call("/v1/items/" + id + "/image?size=" + size)).blob();
    const url = URL.createObjectURL(blob);
    img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
    img.src = url;
  } catch (e) { img.alt = "(" + e.message + ")"; }
}

function span(className, text) {
  const s = document.createElement("span");
  s.className = className;
  s.textContent = text;
  return s;
}

function show(body, what) {
  const grid = $("grid");
  grid.replaceChildren();
  status(body.results.length + " results for " + what + " in " + body.took_ms.toFixed(1) + " ms");
  for (const r of body.results) {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.id = r.id;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.append(span("score", r.score.toFixed(3)), " ");
    if (r.text !== undefined) {
      card.classList.add("text-card");
      meta.append(span("text", r.text));
    } else {
      const img = document.createElement("img");
      img.alt = r.caption || r.path;
      img.title = r.path;
      thumbnail(img, r.id, 256);
      img.addEventListener("click", async () => {
        const full = $("viewer").querySelector("img");
        full.removeAttribute("src");
        full.alt = img.alt;
        $("viewer").style.display = "flex";
        await thumbnail(full, r.id, 1024);
      });
      card.append(img);
      meta.append(r.caption ? span("caption", r.caption) : span("name", r.path.split("/").pop()));
    }
    card.append(meta);
    grid.append(card);
  }
}

// The last search, run again when the images/texts toggle changes. Only the newest
// search's answer is shown, however the answers arrive.
let lastSearch = null;
let searchNumber = 0;
async function search(run) {
  lastSearch = run;
  const mine = ++searchNumber;
  $("grid").setAttribute("aria-busy", "true");
  try {
    const [body, what] = await run();
    if (mine === searchNumber) show(body, what);
  } catch (e) {
    if (mine === searchNumber) status("Search failed: " + e.message, true);
  } finally {
    if (mine === searchNumber) $("grid").setAttribute("aria-busy", "false");
  }
}

function searchText(query) {
  search(async () => {
    status("Searching...");
    const response = await call("/v1/search/text", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query: query, k: k(), target: target() }) });
    return [await response.json(), "\u201c" + query + "\u201d"];
  });
}

function searchImage(file) {
  search(async () => {
    status("Searching by " + file.name + "...");
    const form = new FormData();
    form.append("image", file);
    const response = await call("/v1/search/image?k=" + k() + "&target=" + target(),
                                { method: "POST", body: form });
    return [await response.json(), file.name];
  });
}

$("viewer").addEventListener("click", () => { $("viewer").style.display = "none"; });

$("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query) { status("Type a description first.", true); return; }
  searchText(query);
});

$("image").addEventListener("change", () => {
  const file = $("image").files[0];
  if (file) searchImage(file);
});

for (const radio of document.querySelectorAll("input[name=target]")) {
  radio.addEventListener("change", () => { if (lastSearch) search(lastSearch); });
}

// An image dropped anywhere on the page is searched for, as an uploaded one is.
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) document.body.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  const file = event.dataTransfer.files[0];
  if (!file) return;
  if (!file.type.startsWith("image/")) { status(file.name + " is not an image.", true); return; }
  searchImage(file);
});
</script>
</body>
</html>
)HTML";

nlohmann::json error_responses() {
  nlohmann::json r;
  for (const char* code : {"400", "401", "404", "405", "413", "415", "422", "429", "503"}) {
    r[code] = {{"$ref", "#/components/responses/Error"}};
  }
  return r;
}

nlohmann::json json_response(const std::string& description, const std::string& schema_ref) {
  nlohmann::json r = error_responses();
  r["200"] = {{"description", description},
              {"content", {{"application/json", {{"schema", {{"$ref", schema_ref}}}}}}}};
  return r;
}

nlohmann::json image_body() {
  return {{"required", true},
          {"content",
           {{"multipart/form-data",
             {{"schema",
               {{"type", "object"},
                {"required", {"image"}},
                {"properties", {{"image", {{"type", "string"}, {"format", "binary"}}}}}}}}},
            {"image/*", {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}};
}

// The filters every search route takes (index/query.h).
nlohmann::json filter_properties() {
  return {{"min_score",
           {{"type", "number"},
            {"minimum", -1},
            {"maximum", 1},
            {"description", "drop results scoring below this, instead of always k"}}},
          {"path_prefix",
           {{"type", "string"}, {"description", "images only: only files under this folder"}}},
          {"dedup",
           {{"type", "boolean"},
            {"default", false},
            {"description", "collapse identical files and near-identical images into one"}}},
          {"dedup_threshold",
           {{"type", "number"},
            {"default", 0.99},
            {"description", "cosine similarity that counts as near-identical"}}}};
}

// A search body's schema: its own properties plus k, target and the filters.
nlohmann::json search_schema(nlohmann::json properties, const std::vector<std::string>& required) {
  properties["k"] = {{"type", "integer"}, {"minimum", 1}, {"maximum", 1000}, {"default", 10}};
  properties["target"] = {{"type", "string"}, {"enum", {"images", "texts"}}, {"default", "images"}};
  properties.update(filter_properties());
  nlohmann::json schema = {{"type", "object"}, {"properties", properties}};
  if (!required.empty()) schema["required"] = required;
  return schema;
}

// The operation object of every route, by pattern and lower-case method.
nlohmann::json build_operations() {
  using nlohmann::json;
  const json k_param = {
      {"name", "k"},
      {"in", "query"},
      {"schema", {{"type", "integer"}, {"minimum", 1}, {"maximum", 1000}, {"default", 10}}}};
  const json target_param = {
      {"name", "target"},
      {"in", "query"},
      {"schema", {{"type", "string"}, {"enum", {"images", "texts"}}, {"default", "images"}}}};
  const json id_param = {{"name", "id"},
                         {"in", "path"},
                         {"required", true},
                         {"schema", {{"type", "integer"}, {"format", "int64"}}}};
  json paths;
  paths["/"]["get"] = {{"summary", "The search page (HTML)"},
                       {"security", json::array()},
                       {"responses", {{"200", {{"description", "HTML page"}}}}}};
  paths["/healthz"]["get"] = {{"summary", "Liveness"},
                              {"security", json::array()},
                              {"responses", json_response("ok", "#/components/schemas/Health")}};
  paths["/metrics"]["get"] = {{"summary", "Prometheus metrics (text format 0.0.4)"},
                              {"responses", {{"200", {{"description", "metrics"}}}}}};
  paths["/openapi.json"]["get"] = {
      {"summary", "This document"},
      {"responses", {{"200", {{"description", "OpenAPI 3 document"}}}}}};
  paths["/v1/search/text"]["post"] = {
      {"summary", "Search by a text query"},
      {"requestBody",
       {{"required", true},
        {"content",
         {{"application/json", {{"schema", {{"$ref", "#/components/schemas/TextSearch"}}}}}}}}},
      {"responses", json_response("results, best first", "#/components/schemas/SearchResults")}};
  auto json_body = [](const std::string& schema) {
    return json{
        {"required", true},
        {"content",
         {{"application/json", {{"schema", {{"$ref", "#/components/schemas/" + schema}}}}}}}};
  };
  paths["/v1/search"]["post"] = {
      {"summary", "Compound search: weighted texts, images, items and embeddings"},
      {"description",
       "\"query\" uses the query syntax, e.g. 2 * \"golden retriever\" + item:42 - fruit; "
       "\"terms\" lists the same as objects, uploaded images included. The query vector "
       "is the normalized weighted sum of the terms' unit embeddings."},
      {"requestBody", json_body("CompoundSearch")},
      {"responses", json_response("results, best first", "#/components/schemas/SearchResults")}};
  paths["/v1/search/vector"]["post"] = {
      {"summary", "Search by a raw embedding"},
      {"requestBody", json_body("VectorSearch")},
      {"responses", json_response("results, best first", "#/components/schemas/SearchResults")}};
  json image_params = {k_param, target_param};
  const json filters = filter_properties();
  for (const auto& [name, schema] : filters.items()) {
    image_params.push_back({{"name", name}, {"in", "query"}, {"schema", schema}});
  }
  paths["/v1/search/image"]["post"] = {
      {"summary", "Search by an example image"},
      {"parameters", image_params},
      {"requestBody", image_body()},
      {"responses", json_response("results, best first", "#/components/schemas/SearchResults")}};
  paths["/v1/embed/text"]["post"] = {
      {"summary", "Embed a text"},
      {"requestBody",
       {{"required", true},
        {"content",
         {{"application/json",
           {{"schema",
             {{"type", "object"},
              {"required", {"text"}},
              {"properties", {{"text", {{"type", "string"}}}}}}}}}}}}},
      {"responses", json_response("unit-norm embedding", "#/components/schemas/Embedding")}};
  paths["/v1/embed/image"]["post"] = {
      {"summary", "Embed an image"},
      {"requestBody", image_body()},
      {"responses", json_response("unit-norm embedding", "#/components/schemas/Embedding")}};
  paths["/v1/items/{id}"]["get"] = {
      {"summary", "An indexed image's metadata"},
      {"parameters", {id_param}},
      {"responses", json_response("the item", "#/components/schemas/Item")}};
  json thumb = error_responses();
  thumb["200"] = {
      {"description", "JPEG thumbnail"},
      {"content", {{"image/jpeg", {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}};
  paths["/v1/items/{id}/image"]["get"] = {
      {"summary", "A JPEG thumbnail of an indexed image (longer side at most size)"},
      {"parameters",
       {id_param,
        {{"name", "size"},
         {"in", "query"},
         {"schema", {{"type", "integer"}, {"minimum", 16}, {"maximum", 1024}, {"default", 256}}}}}},
      {"responses", thumb}};
  paths["/v1/admin/reload"]["post"] = {
      {"summary", "Load index files written since start (as SIGHUP does)"},
      {"responses",
       {{"200", {{"description", "reloaded"}}},
        {"401", {{"$ref", "#/components/responses/Error"}}}}}};
  return paths;
}

nlohmann::json build_document(const nlohmann::json& paths) {
  using nlohmann::json;
  json schemas;
  schemas["Health"] = {{"type", "object"}, {"properties", {{"status", {{"type", "string"}}}}}};
  schemas["TextSearch"] =
      search_schema({{"query", {{"type", "string"}, {"maxLength", 65536}}}}, {"query"});
  const json vector = {{"type", "array"}, {"items", {{"type", "number"}}}};
  schemas["VectorSearch"] = search_schema(
      {{"vector", {{"allOf", {vector}}, {"description", "any non-zero norm; normalized"}}}},
      {"vector"});
  schemas["QueryTerm"] = {
      {"type", "object"},
      {"description", "exactly one of text, image_base64, item, vector"},
      {"properties",
       {{"text", {{"type", "string"}}},
        {"image_base64",
         {{"type", "string"}, {"description", "the image file, base64 (a data: URL works)"}}},
        {"item", {{"type", "integer"}, {"description", "an indexed item: its stored vector"}}},
        {"vector", vector},
        {"weight",
         {{"type", "number"}, {"default", 1}, {"description", "non-zero; negative subtracts"}}}}}};
  schemas["CompoundSearch"] = search_schema(
      {{"query", {{"type", "string"}, {"description", "the query syntax (see README)"}}},
       {"terms",
        {{"type", "array"},
         {"maxItems", 16},
         {"items", {{"$ref", "#/components/schemas/QueryTerm"}}}}}},
      {});
  schemas["SearchResults"] = {
      {"type", "object"},
      {"properties",
       {{"results",
         {{"type", "array"},
          {"items",
           {{"type", "object"},
            {"required", {"id", "score"}},
            {"properties",
             {{"id", {{"type", "integer"}}},
              {"score", {{"type", "number"}}},
              {"path", {{"type", "string"}, {"description", "images: the file"}}},
              {"text", {{"type", "string"}, {"description", "texts: the text"}}},
              {"caption", {{"type", "string"}}},
              {"duplicates",
               {{"type", "array"},
                {"items", {{"type", "integer"}}},
                {"description", "with dedup: ids folded into this result"}}}}}}}}},
        {"took_ms", {{"type", "number"}}}}}};
  schemas["Embedding"] = {{"type", "object"},
                          {"properties",
                           {{"embedding", {{"type", "array"}, {"items", {{"type", "number"}}}}},
                            {"dim", {{"type", "integer"}}}}}};
  schemas["Item"] = {{"type", "object"},
                     {"properties",
                      {{"id", {{"type", "integer"}}},
                       {"path", {{"type", "string"}}},
                       {"size", {{"type", "integer"}}},
                       {"mtime_ns", {{"type", "integer"}}},
                       {"width", {{"type", "integer"}}},
                       {"height", {{"type", "integer"}}},
                       {"caption", {{"type", "string"}}},
                       {"status", {{"type", "string"}}},
                       {"error", {{"type", "string"}}},
                       {"image_url", {{"type", "string"}}}}}};
  schemas["Error"] = {
      {"type", "object"},
      {"properties",
       {{"error",
         {{"type", "object"},
          {"properties", {{"code", {{"type", "string"}}}, {"message", {{"type", "string"}}}}}}}}}};
  json components;
  components["schemas"] = schemas;
  components["responses"]["Error"] = {
      {"description", "an error"},
      {"content", {{"application/json", {{"schema", {{"$ref", "#/components/schemas/Error"}}}}}}}};
  components["securitySchemes"]["bearer"] = {{"type", "http"}, {"scheme", "bearer"}};
  return {{"openapi", "3.0.3"},
          {"info",
           {{"title", "mmsearch"},
            {"version", "0.1.0"},
            {"description",
             "Image-text search. When the server has an API key, every "
             "route but / and /healthz needs 'Authorization: Bearer KEY'."}}},
          {"security", json::array({{{"bearer", json::array()}}})},
          {"paths", paths},
          {"components", components}};
}

}  // namespace

const std::string& web_page_html() {
  static const std::string page = kPage;
  return page;
}

nlohmann::json openapi_operation(const std::string& method, const std::string& pattern) {
  static const nlohmann::json operations = build_operations();
  std::string m = method;
  for (char& c : m) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!operations.contains(pattern) || !operations[pattern].contains(m)) {
    throw Error::internal("no OpenAPI operation for " + method + " " + pattern);
  }
  return operations[pattern][m];
}

std::string openapi_document(const nlohmann::json& paths) {
  return build_document(paths).dump(2);
}

}  // namespace mms
