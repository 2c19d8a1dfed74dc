#!/usr/bin/env bash
# Benchmark: `mmsearch index` end to end on the Open Clip Art images with the shipped model
# (images/s and how the time splits between decode, encode and write), then a re-run over
# the unchanged folder, whose time should be a small fraction of the first.
#   scripts/bench_index.sh [MODEL_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model="${1:-data/models/default}"
scripts/setup.sh >/dev/null
scripts/fetch_data.sh --only openclipart >/dev/null
images="data/cache/openclipart-png/usr/share/openclipart/png"
index_dir="$(mktemp -d)/index"
trap 'rm -rf "$(dirname "$index_dir")"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "first run (every image decoded, embedded and written):"
t0=$(date +%s.%N)
build/mmsearch index --index "$index_dir" --model "$model" "$images"
t1=$(date +%s.%N)
echo "re-run over the unchanged folder:"
build/mmsearch index --index "$index_dir" --model "$model" "$images"
t2=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
  printf "first run %.1f s, re-run %.2f s: %.1f%% of the first\n", b - a, c - b, 100 * (c - b) / (b - a) }'
