#!/usr/bin/env bash
# Chooses a model's memory settings on the validation splits: evaluates MODEL_DIR (which must
# hold a memory.safetensors, see `mmsearch memory`) on the val split of each data set for a
# grid of neighbour counts and weights, and prints recall@10 both ways per set, Fashion-MNIST
# zero-shot accuracy, and their mean (the six recalls), first without the memory.
#   scripts/tune_memory.sh [MODEL_DIR=data/models/default] [K_LIST="3 5 10"] \
#                          [WEIGHT_LIST="0.5 0.75 1.0"] [TEMPERATURE=0.05]
# Run after scripts/setup.sh and scripts/fetch_data.sh; about a minute per setting on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model="${1:-data/models/default}"
ks="${2:-3 5 10}"
weights="${3:-0.5 0.75 1.0}"
temperature="${4:-0.05}"
mms="${MMSEARCH:-build/mmsearch}"
[ -f "$model/memory.safetensors" ] || {
  echo "tune_memory: '$model' has no memory.safetensors (run mmsearch memory first)" >&2
  exit 2
}
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

evaluate() {  # evaluate NAME EVAL-ARGS...: the three val splits; prints one line
  local name="$1"
  shift
  for set in emoji openclipart fashion_mnist; do
    "$mms" eval --model "$model" --manifest "data/manifests/$set.jsonl" --split val \
      --json "$out/$set.json" "$@" >/dev/null 2>&1
  done
  /usr/bin/python3 - "$out" "$name" <<'PY'
import json, sys
out, name = sys.argv[1], sys.argv[2]
cells, recalls = [], []
for s in ("emoji", "openclipart", "fashion_mnist"):
    with open(f"{out}/{s}.json") as f:
        m = json.load(f)
    r = (m["t2i"]["r10"], m["i2t"]["r10"])
    recalls += r
    cells.append("%5.1f / %5.1f" % r)
    if "zero_shot_acc" in m:
        zs = m["zero_shot_acc"]
print("%-28s %s   %5.1f%%   %5.2f" % (name, "   ".join(cells), zs, sum(recalls) / len(recalls)))
PY
}

echo "validation R@10 t2i / i2t     emoji           openclipart     fashion_mnist   zero-shot  mean"
evaluate "no memory" --no-memory
for k in $ks; do
  for w in $weights; do
    evaluate "k $k, T $temperature, weight $w" --memory-k "$k" --memory-weight "$w" \
      --memory-temperature "$temperature"
  done
done
