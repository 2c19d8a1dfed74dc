#!/usr/bin/env bash
# Reproduces the shipped default model (data/models/default/) end to end on a CPU machine:
# set-up, fetch and prepare the data, train the tokenizer, train the dual encoder, build a
# memory of training pairs (unless MEMORY_TEXTS=none), evaluate it on every data set's test
# split (natural queries too, eval --queries, where the manifest has keywords), install it.
# Two stages: the whole recipe (CONFIG) into RUN_DIR, then a short second stage
# (FINETUNE_CONFIG, started from the first's weights: more passes over Open Clip Art at a lower
# learning rate) into RUN_DIR/finetune; FINETUNE_CONFIG=none stops after the first. Extra
# arguments go to the first stage.
# Environment: RUN_DIR, INSTALL_TO, CONFIG, FINETUNE_CONFIG, VOCAB_SIZE, MEMORY_TEXTS (mmsearch
# memory --texts, or none), and MMSEARCH (a copy of the program kept apart from rebuilds; then
# no set-up).
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
finetune_config="${FINETUNE_CONFIG:-training/configs/default_finetune.json}"
vocab="${VOCAB_SIZE:-8000}"
mms="${MMSEARCH:-build/mmsearch}"   # another build of the program, e.g. a copy kept apart from rebuilds
start=$(date +%s)

# With MMSEARCH= naming a program kept apart from rebuilds, build/ is left alone.
if [ -z "${MMSEARCH:-}" ]; then scripts/setup.sh; fi
scripts/fetch_data.sh
mkdir -p "$run"

# The config's data sets: "name path" a line.
datasets=$(/usr/bin/python3 -c '
import json, sys
for d in json.load(open(sys.argv[1]))["data"]:
    print(d["name"], d["path"])' "$config")

if [ ! -f "$run/tokenizer.model" ]; then
  # The tokenizer learns from the training pairs' texts only (captions, titles and other
  # names, which the caption views train with): test captions stay unseen.
  /usr/bin/python3 - "$run/corpus.txt" $(echo "$datasets" | awk '{print $2}') <<'PY'
import json, os, sys
out_path = sys.argv[1]
with open(out_path + ".tmp", "w", encoding="utf-8") as out:
    for manifest in sys.argv[2:]:
        with open(manifest, encoding="utf-8") as f:
            for line in f:
                pair = json.loads(line)
                if pair.get("split", "train") != "train":
                    continue
                texts = [pair["caption"]] + ([pair["title"]] if pair.get("title") else [])
                for text in texts + pair.get("names", []):
                    out.write(text.replace("\n", " ") + "\n")
os.replace(out_path + ".tmp", out_path)
PY
  "$mms" tokenizer-train --corpus "$run/corpus.txt" --vocab-size "$vocab" \
    --out "$run/tokenizer.model"
fi

resume=()
[ -f "$run/checkpoint.json" ] && resume=(--resume)
"$mms" train --config "$config" --out "$run" --set "tokenizer=$run/tokenizer.model" \
  "${resume[@]}" "$@"

# The second stage, from the first's exported weights; the model the rest uses and installs.
final="$run"
if [ "$finetune_config" != none ]; then
  final="$run/finetune"
  resume=()
  [ -f "$final/checkpoint.json" ] && resume=(--resume)
  "$mms" train --config "$finetune_config" --out "$final" \
    --set "tokenizer=$run/tokenizer.model" --set "train.init_from=$run/model" "${resume[@]}"
fi

# The model's memory of training pairs (encoders/memory.h), from the same data and overrides,
# unless MEMORY_TEXTS=none: its texts are the training captions, titles and keywords (on the
# validation splits, r30 answered text queries best with all three; README).
memory_texts="${MEMORY_TEXTS:-captions,titles,keywords}"
rm -f "$final/model/memory.safetensors"
if [ "$memory_texts" != none ]; then
  sets=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --set) sets+=(--set "$2"); shift 2 ;;
      --set=*) sets+=("$1"); shift ;;
      *) shift ;;
    esac
  done
  "$mms" memory --model "$final/model" --config "$config" --set "tokenizer=$run/tokenizer.model" \
    --texts "$memory_texts" "${sets[@]}"
fi

# Test figures (with the memory where there is one, and then also without it); natural
# queries (eval --queries) for every set whose manifest carries keywords.
while read -r name path; do
  queries=()
  grep -q '"keywords"' "$path" && queries=(--queries)
  "$mms" eval --model "$final/model" --manifest "$path" "${queries[@]}" \
    --json "$final/test_$name.json" --zero-shot-template "a photo of {}" </dev/null
  if [ "$memory_texts" != none ]; then
    "$mms" eval --model "$final/model" --manifest "$path" --no-memory "${queries[@]}" \
      --json "$final/test_${name}_no_memory.json" --zero-shot-template "a photo of {}" </dev/null
  fi
done <<<"$datasets"

/usr/bin/python3 - "$final" "$memory_texts" $(echo "$datasets" | awk '{print $1}') <<'PY'
import json, sys, os
run, memory_texts, names = sys.argv[1], sys.argv[2], sys.argv[3:]
def figures(suffix):
    out = {}
    for name in names:
        with open(f"{run}/test_{name}{suffix}.json") as f:
            m = json.load(f)
        acc = m.pop("zero_shot_acc", None)
        m.pop("zero_shot_classes", None)
        m.pop("memory", None)
        m.pop("hub_weight", None)
        out[name] = m
        if acc is not None:
            out[f"{name}_zero_shot_acc"] = acc
    return out
out = figures("")
if memory_texts != "none":
    out["without_memory"] = figures("_no_memory")
with open(f"{run}/model/eval.json.tmp", "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
os.replace(f"{run}/model/eval.json.tmp", f"{run}/model/eval.json")
PY

mkdir -p "$install_to"
rm -f "$install_to/memory.safetensors"
cp "$final/model/config.json" "$final/model/model.safetensors" "$final/model/tokenizer.model" \
  "$final/model/eval.json" "$install_to/"
[ -f "$final/model/memory.safetensors" ] && cp "$final/model/memory.safetensors" "$install_to/"
cp "$final/train_config.json" "$install_to/train_config.json"
[ "$final" != "$run" ] && cp "$run/train_config.json" "$install_to/train_config_stage1.json"
echo "train.sh: installed $install_to in $(( ($(date +%s) - start) / 60 )) min"
cat "$install_to/eval.json"
