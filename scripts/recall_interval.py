#!/usr/bin/python3
"""How far a recall figure could move by the luck of the split: a bootstrap interval.

Reads the per-query ranks `mmsearch eval --ranks FILE` writes and the manifest evaluated, and
resamples the split's groups (the manifest's "group": an emoji concept in all its styles, an
Open Clip Art title) with replacement, so that queries that share a group move together, as
they would in another draw of the split. Prints, per direction, recall@1/5/10 and the central
interval holding `--level` of the resampled figures. The gallery is not resampled: the
interval is that of the queries alone, a lower bound on the split's whole variability.
With --baseline (another model's ranks on the same split), it also prints the difference
of the two models' recall@10 with its interval, the same groups drawn for both (paired).

  build/mmsearch eval --model data/models/default --manifest data/manifests/emoji.jsonl \
      --ranks /tmp/emoji.ranks
  /usr/bin/python3 scripts/recall_interval.py --ranks /tmp/emoji.ranks \
      --manifest data/manifests/emoji.jsonl [--split test] [--samples 4000] [--level 0.95]
      [--baseline OTHER.ranks]
"""
import argparse
import collections
import json
import os
import random
import sys


def query_groups(manifest, split):
    """(text -> group, normalized image path -> group) over the split's pairs."""
    base = os.path.dirname(os.path.abspath(manifest))
    texts, images = {}, {}
    with open(manifest, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r.get("split") != split:
                continue
            group = r.get("group") or r["image"]
            texts[r["caption"].strip()] = group
            images[os.path.normpath(os.path.join(base, r["image"]))] = group
    return texts, images


def query_key(r):
    """(direction, the query's text or normalized image path) of a --ranks line."""
    return (r["direction"], r["text"].strip() if r["direction"] == "t2i"
            else os.path.normpath(r["image"]))


def grouped(ranks, texts, images, value=lambda r: int(r["rank"])):
    """{direction: [[value(line), ...] per group]}; a query whose group is unknown is its own
    group."""
    by = {"t2i": collections.defaultdict(list), "i2t": collections.defaultdict(list)}
    for r in ranks:
        direction, key = query_key(r)
        group = (texts if direction == "t2i" else images).get(key, direction + ":" + key)
        by[direction][group].append(value(r))
    return {d: list(g.values()) for d, g in by.items() if g}


def grouped_pairs(ranks, baseline, texts, images):
    """grouped() of (rank, baseline's rank) over the queries both hold."""
    base = {query_key(r): int(r["rank"]) for r in baseline}
    shared = [r for r in ranks if query_key(r) in base]
    return grouped(shared, texts, images, lambda r: (int(r["rank"]), base[query_key(r)]))


def recall(groups, k):
    n = sum(len(g) for g in groups)
    return 100.0 * sum(r <= k for g in groups for r in g) / n


def difference(groups, k):
    """recall@k of the first ranks minus the second's, over groups of (rank, rank)."""
    n = sum(len(g) for g in groups)
    return 100.0 * sum((a <= k) - (b <= k) for g in groups for a, b in g) / n


def interval(groups, figure, samples, level, rng):
    """The central `level` interval of figure(groups drawn with replacement) over `samples`
    draws."""
    figures = sorted(figure([groups[rng.randrange(len(groups))] for _ in groups])
                     for _ in range(samples))
    cut = int(round((1 - level) / 2 * samples))
    return figures[cut], figures[min(samples - 1, samples - 1 - cut)]


def read_ranks(path):
    """The --ranks lines of `path`; exits naming the file and line for anything else."""
    ranks = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                    query_key(r)
                    int(r["rank"])
                except (ValueError, KeyError, TypeError, AttributeError):
                    sys.exit(f"recall_interval: {path}:{n} is not a line of `mmsearch eval "
                             "--ranks` (direction, text or image, rank)")
                ranks.append(r)
    except OSError as e:
        sys.exit(f"recall_interval: cannot read {path}: {e.strerror}")
    return ranks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", required=True, help="mmsearch eval --ranks output")
    ap.add_argument("--manifest", required=True, help="the manifest that was evaluated")
    ap.add_argument("--split", default="test")
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--level", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", help="another model's --ranks on the same split")
    a = ap.parse_args(argv)
    if a.samples < 1 or not 0 < a.level < 1:
        sys.exit("recall_interval: --samples must be 1 or more and --level within (0, 1)")
    ranks = read_ranks(a.ranks)
    try:
        texts, images = query_groups(a.manifest, a.split)
    except OSError as e:
        sys.exit(f"recall_interval: cannot read {a.manifest}: {e.strerror}")
    except (ValueError, KeyError, TypeError, AttributeError):
        sys.exit(f"recall_interval: {a.manifest} is not a manifest (JSON lines with image, "
                 "caption, split)")
    by = grouped(ranks, texts, images)
    if not by:
        sys.exit(f"recall_interval: no ranks in {a.ranks}")
    ungrouped = sum(query_key(r)[1] not in (texts if r["direction"] == "t2i" else images)
                    for r in ranks)
    if ungrouped:
        print(f"recall_interval: {ungrouped} of {len(ranks)} queries are not in the "
              f"{a.split} split of {a.manifest}; each counts as its own group", file=sys.stderr)
    rng = random.Random(a.seed)
    for direction, groups in by.items():
        n = sum(len(g) for g in groups)
        parts = []
        for k in (1, 5, 10):
            lo, hi = interval(groups, lambda g: recall(g, k), a.samples, a.level, rng)
            parts.append(f"R@{k} {recall(groups, k):.1f} [{lo:.1f}, {hi:.1f}]")
        print(f"{direction}: {n} queries in {len(groups)} groups; " + ", ".join(parts) +
              f" ({100 * a.level:g}% intervals)")
    if a.baseline:
        pairs = grouped_pairs(ranks, read_ranks(a.baseline), texts, images)
        for direction, groups in pairs.items():
            lo, hi = interval(groups, lambda g: difference(g, 10), a.samples, a.level, rng)
            print(f"{direction}: R@10 minus the baseline's over {sum(map(len, groups))} shared "
                  f"queries: {difference(groups, 10):+.1f} [{lo:+.1f}, {hi:+.1f}]")


if __name__ == "__main__":
    main()
