#!/usr/bin/env bash
# The main job in one command: set up, fetch a real image collection (Open Clip Art, 6,900
# public-domain drawings), index it with the shipped default model and serve it at
# http://127.0.0.1:8080. Re-running it re-uses the index (only new or changed files are read).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model="data/models/default"
index_dir="${INDEX_DIR:-data/cache/demo-index}"

scripts/setup.sh
scripts/fetch_data.sh --only openclipart
images="data/cache/openclipart-png/usr/share/openclipart/png"

if [ ! -f "$model/model.safetensors" ]; then
  echo "demo: no shipped model in $model; build one with scripts/train.sh" >&2
  exit 1
fi

echo "demo: the shipped model on Open Clip Art: caption recall on its test split, and short"
echo "      keyword queries over the whole collection and its test images (in percent):"
build/mmsearch eval --model "$model" --manifest data/manifests/openclipart.jsonl --queries

# --reembed: an index left by an earlier shipped model is moved into this model's space
# (a no-op when it is already there).
build/mmsearch index --index "$index_dir" --model "$model" --reembed "$images"
echo "demo: a search from the terminal:"
build/mmsearch search --index "$index_dir" --model "$model" --text "a red apple" -k 5
echo "demo: serving on http://127.0.0.1:8080 (Ctrl-C stops it)"
exec build/mmsearch serve --index "$index_dir" --model "$model" --host 127.0.0.1 --port 8080
