#!/usr/bin/env python3
"""Where a model's recall comes from: the queries of an `mmsearch eval --ranks` file split by
whether their words were ever seen in training captions, and by how many keywords they carry
(for captions written as "<title>. ... Keywords: a, b, c.").

    mmsearch eval --model M --manifest data/manifests/openclipart.jsonl --ranks ranks.jsonl
    scripts/recall_breakdown.py ranks.jsonl data/manifests/all.jsonl
    scripts/recall_breakdown.py ranks.jsonl data/manifests/all.jsonl \
        --direction i2t --captions data/manifests/openclipart.jsonl

The second argument is the manifest whose train split defines the seen vocabulary (words of
three or more letters, lower-cased). Text->image queries are grouped by their own text;
image->text queries (--direction i2t) by their image's first caption in the evaluated
manifest (--captions). Python 3 standard library only.
"""
import argparse
import json
import os
import re
import sys

WORD_RE = re.compile(r"[^\W\d_]{3,}")


def words(text):
    return WORD_RE.findall(text.lower())


def title_of(caption):
    """The first sentence: Open Clip Art and emoji captions start with their title."""
    return caption.split(". ", 1)[0]


def keywords_of(caption):
    if "Keywords:" not in caption:
        return []
    tail = caption.rsplit("Keywords:", 1)[1].strip().rstrip(".")
    return [k for k in (s.strip() for s in tail.split(",")) if k]


def training_vocabulary(manifest_path):
    seen = set()
    with open(manifest_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if row.get("split") == "train":
                    seen.update(words(row["caption"]))
    return seen


def groups_of(text, seen):
    title_unseen = any(w not in seen for w in words(title_of(text)))
    any_unseen = any(w not in seen for w in words(text))
    n = len(keywords_of(text))
    return [
        "all queries",
        "title has a word unseen in training" if title_unseen else "every title word seen",
        "some word unseen in training" if any_unseen else "every word seen",
        "0-1 keywords" if n <= 1 else ("2-3 keywords" if n <= 3 else "4+ keywords"),
    ]


def summarize(ranks):
    ranks = sorted(ranks)
    n = len(ranks)
    median = ranks[n // 2] if n % 2 else 0.5 * (ranks[n // 2 - 1] + ranks[n // 2])
    return {
        "n": n,
        "r1": 100.0 * sum(r <= 1 for r in ranks) / n,
        "r10": 100.0 * sum(r <= 10 for r in ranks) / n,
        "median_rank": median,
    }


def image_captions(manifest_path):
    """Each image's first caption in a manifest, keyed by its resolved path (as eval writes it)."""
    base = os.path.dirname(os.path.abspath(manifest_path))
    captions = {}
    with open(manifest_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                path = os.path.realpath(os.path.join(base, row["image"]))
                captions.setdefault(path, row["caption"])
    return captions


def breakdown(rank_rows, seen, direction="t2i", captions=None):
    """Recall figures per group for the queries of one direction. For "i2t", `captions` maps
    an image path to the caption that stands for it; an image it lacks is an error."""
    by_group = {}
    for row in rank_rows:
        if row.get("direction") != direction:
            continue
        if direction == "t2i":
            text = row["text"]
        else:
            path = os.path.realpath(row["image"])
            if path not in captions:
                raise ValueError(f"image '{row['image']}' is not in the captions manifest")
            text = captions[path]
        for g in groups_of(text, seen):
            by_group.setdefault(g, []).append(int(row["rank"]))
    return {g: summarize(r) for g, r in by_group.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ranks", help="JSONL from `mmsearch eval --ranks`")
    ap.add_argument("train_manifest", help="manifest whose train split is the seen vocabulary")
    ap.add_argument("--direction", choices=("t2i", "i2t"), default="t2i",
                    help="text->image queries (default) or image->text queries")
    ap.add_argument("--captions", help="for i2t: the evaluated manifest, giving each image's caption")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    if args.direction == "i2t" and not args.captions:
        print("recall_breakdown: --direction i2t needs --captions MANIFEST", file=sys.stderr)
        return 2
    name = "text->image" if args.direction == "t2i" else "image->text"
    try:
        with open(args.ranks, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        seen = training_vocabulary(args.train_manifest)
        captions = image_captions(args.captions) if args.direction == "i2t" else None
        result = breakdown(rows, seen, args.direction, captions)
    except (OSError, ValueError, KeyError) as e:
        print(f"recall_breakdown: {e}", file=sys.stderr)
        return 1
    if not result:
        print(f"recall_breakdown: '{args.ranks}' has no {name} ranks", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    print(f"{name + ' queries':40s} {'n':>5s} {'R@1':>6s} {'R@10':>6s} {'med.rank':>9s}")
    for g, m in result.items():
        print(f"{g:40s} {m['n']:5d} {m['r1']:6.1f} {m['r10']:6.1f} {m['median_rank']:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
