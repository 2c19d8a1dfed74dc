#!/usr/bin/env bash
# Reproduces the shipped default model (data/models/default/) end to end on a CPU machine:
# set-up, fetch and prepare the data, train the tokenizer, train the dual encoder, build its
# memory of training pairs, evaluate it on the three test splits (with and without the
# memory), and install the result.
#   scripts/train.sh                      # the default model
#   RUN_DIR=runs/x scripts/train.sh --set train.epochs=2   # extra args go to `mmsearch train`
#                                         # (and the --set ones to `mmsearch memory` too)
# A run that is interrupted resumes from its last checkpoint when started again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
run="${RUN_DIR:-runs/default}"
install_to="${INSTALL_TO:-data/models/default}"
config="${CONFIG:-training/configs/default.json}"
vocab="${VOCAB_SIZE:-4000}"
mms="${MMSEARCH:-build/mmsearch}"   # another build of the program, e.g. a copy kept apart from rebuilds
start=$(date +%s)

scripts/setup.sh
scripts/fetch_data.sh
mkdir -p "$run"

if [ ! -f "$run/tokenizer.model" ]; then
  # The tokenizer learns from training captions only: test captions stay unseen.
  /usr/bin/python3 - "$run/corpus.txt" <<'PY'
import json, sys
with open(sys.argv[1] + ".tmp", "w", encoding="utf-8") as out:
    for name in ("emoji", "openclipart", "fashion_mnist"):
        with open(f"data/manifests/{name}.jsonl", encoding="utf-8") as f:
            for line in f:
                pair = json.loads(line)
                if pair.get("split", "train") == "train":
                    out.write(pair["caption"].replace("\n", " ") + "\n")
import os
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
PY
  "$mms" tokenizer-train --corpus "$run/corpus.txt" --vocab-size "$vocab" \
    --out "$run/tokenizer.model"
fi

resume=()
[ -f "$run/checkpoint.json" ] && resume=(--resume)
"$mms" train --config "$config" --out "$run" --set "tokenizer=$run/tokenizer.model" \
  "${resume[@]}" "$@"

# The model's memory of training pairs (encoders/memory.h), from the same data and overrides.
sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --set) sets+=(--set "$2"); shift 2 ;;
    --set=*) sets+=("$1"); shift ;;
    *) shift ;;
  esac
done
"$mms" memory --model "$run/model" --config "$config" --set "tokenizer=$run/tokenizer.model" \
  "${sets[@]}"

# Test figures with the memory (what the model answers) and without (the encoders alone).
for set in emoji openclipart fashion_mnist; do
  "$mms" eval --model "$run/model" --manifest "data/manifests/$set.jsonl" \
    --json "$run/test_$set.json" --zero-shot-template "a photo of {}"
  "$mms" eval --model "$run/model" --manifest "data/manifests/$set.jsonl" --no-memory \
    --json "$run/test_${set}_no_memory.json" --zero-shot-template "a photo of {}"
done

/usr/bin/python3 - "$run" <<'PY'
import json, sys, os
run = sys.argv[1]
def figures(suffix):
    out = {}
    for name in ("emoji", "openclipart", "fashion_mnist"):
        with open(f"{run}/test_{name}{suffix}.json") as f:
            m = json.load(f)
        acc = m.pop("zero_shot_acc", None)
        m.pop("zero_shot_classes", None)
        m.pop("memory", None)
        out[name] = m
        if acc is not None:
            out[f"{name}_zero_shot_acc"] = acc
    return out
out = figures("")
out["without_memory"] = figures("_no_memory")
with open(f"{run}/model/eval.json.tmp", "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
os.replace(f"{run}/model/eval.json.tmp", f"{run}/model/eval.json")
PY

mkdir -p "$install_to"
cp "$run/model/config.json" "$run/model/model.safetensors" "$run/model/tokenizer.model" \
  "$run/model/memory.safetensors" "$run/model/eval.json" "$install_to/"
cp "$run/train_config.json" "$install_to/train_config.json"
echo "train.sh: installed $install_to in $(( ($(date +%s) - start) / 60 )) min"
cat "$install_to/eval.json"
