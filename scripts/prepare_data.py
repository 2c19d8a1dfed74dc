#!/usr/bin/python3
"""Build the JSONL manifests of mmsearch's training / evaluation data from the cache that
scripts/fetch_data.sh fills (standard library only).

    /usr/bin/python3 scripts/prepare_data.py [--cache DIR] [--out DIR] [--only SET ...] [--force]

Writes OUT/<set>.jsonl for every set in SETS and OUT/all.jsonl (their concatenation), one
{"image", "caption", "split", "group"[, "label"][, "title"][, "keywords"][, "names"]} object
per line, image paths relative to OUT (see data/README.md).
Every file is written through a temp file + rename. A set whose inputs and code did not change
since its manifest was written is not rebuilt (--force rebuilds). Prints counts per split.
"""

import argparse
import hashlib
import importlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from data_prep import common  # noqa: E402

REPO_ROOT = os.path.dirname(HERE)
SETS = ("openclipart", "emoji", "fashion_mnist", "tuxpaint", "openmoji", "icons", "emoji_styles")
# Cache folders (each with a .complete marker written by fetch_data.sh) that a set reads.
INPUTS = {
    "openclipart": ["openclipart-png", "openclipart-svg"],
    "emoji": ["emoji-datasource-google", "emoji-datasource-twitter", "emojibase-data", "emojilib"],
    "fashion_mnist": ["dataset-fashion-mnist"],
    "tuxpaint": ["tuxpaint-stamps-default"],
    "openmoji": ["openmoji", "emoji-datasource-google", "emoji-datasource-twitter", "emojibase-data",
                 "emojilib"],
}
from data_prep import emoji_styles as _emoji_styles, icons as _icons  # noqa: E402
INPUTS["icons"] = ["iconify-json-" + name for name, _version, _licence in _icons.ICON_SETS]
INPUTS["emoji_styles"] = (["iconify-json-" + name for name, _v, _l in _emoji_styles.EMOJI_STYLE_SETS]
                          + INPUTS["emoji"])
# Files that must exist for a skipped set to still be usable (built by this script).
OUTPUT_MARKERS = {"fashion_mnist": [os.path.join("fashion_mnist", "png", ".complete")],
                  "tuxpaint": [os.path.join("tuxpaint", "png", ".complete")],
                  "openmoji": [os.path.join("openmoji-png", ".complete")],
                  "icons": [os.path.join("icons", "png", ".complete")],
                  "emoji_styles": [os.path.join("icons", "png", _emoji_styles.MARKER)]}


def builder(name):
    module = importlib.import_module("data_prep." + name)
    return module.build


def stamp_for(name, cache_dir):
    """Fingerprint of a set's inputs (cache markers) and of the code that builds it."""
    h = hashlib.sha1()
    code = [os.path.abspath(__file__)] + sorted(
        os.path.join(HERE, "data_prep", f) for f in os.listdir(os.path.join(HERE, "data_prep"))
        if f.endswith(".py"))
    for path in code:
        with open(path, "rb") as f:
            h.update(path.encode() + b"\0" + f.read())
    for folder in INPUTS[name]:
        marker = os.path.join(cache_dir, folder, ".complete")
        try:
            with open(marker, "rb") as f:
                h.update(folder.encode() + b"\0" + f.read())
        except FileNotFoundError:
            h.update(folder.encode() + b"\0missing")
    h.update(os.path.abspath(cache_dir).encode())
    return h.hexdigest()


def print_table(counts, out=None):
    out = out or sys.stdout
    header = ("set", "train", "val", "test", "total", "groups")
    rows = []
    total = {s: 0 for s in common.SPLITS}
    total_groups = 0
    for name, (c, groups) in counts.items():
        rows.append((name, c["train"], c["val"], c["test"], sum(c.values()), groups))
        for s in common.SPLITS:
            total[s] += c[s]
        total_groups += groups
    rows.append(("all", total["train"], total["val"], total["test"], sum(total.values()), total_groups))
    def cell(i, v):
        return str(v) if i == 0 or not isinstance(v, int) else "{:,}".format(v)

    widths = [max(len(cell(i, r[i])) for r in rows + [header]) for i in range(len(header))]

    def fmt(r):
        return "  ".join(cell(i, v).ljust(widths[i]) if i == 0 else cell(i, v).rjust(widths[i])
                         for i, v in enumerate(r))

    print(fmt(header), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        if r[0] == "all":
            print("  ".join("-" * w for w in widths), file=out)
        print(fmt(r), file=out)


def shown(path):
    """path relative to the repository when inside it (for messages)."""
    rel = os.path.relpath(os.path.abspath(path), REPO_ROOT)
    return path if rel.startswith(os.pardir) else rel


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default=os.path.join(REPO_ROOT, "data", "cache"),
                        help="cache folder filled by fetch_data.sh (default: data/cache)")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "data", "manifests"),
                        help="manifest folder (default: data/manifests)")
    parser.add_argument("--only", action="append", choices=SETS,
                        help="build only this set (repeatable); all.jsonl still gathers every "
                             "manifest present")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    selected = args.only or list(SETS)
    for name in selected:
        path = os.path.join(args.out, name + ".jsonl")
        stamp_path = os.path.join(args.out, "." + name + ".stamp")
        stamp = stamp_for(name, args.cache)
        outputs_ok = all(os.path.exists(os.path.join(args.cache, p)) for p in OUTPUT_MARKERS.get(name, []))
        try:
            with open(stamp_path) as f:
                up_to_date = f.read().strip() == stamp and os.path.exists(path) and outputs_ok
        except FileNotFoundError:
            up_to_date = False
        if up_to_date and not args.force:
            print("%s: manifest up to date (%s)" % (name, shown(path)))
            continue
        start = time.time()
        try:
            records = builder(name)(args.cache, log=print)
        except (FileNotFoundError, ValueError) as e:
            print("error: %s: %s" % (name, e), file=sys.stderr)
            return 1
        if not records:
            print("error: %s: no images found in %s" % (name, args.cache), file=sys.stderr)
            return 1
        changed = common.write_manifest(path, records, args.out)
        common.write_atomic(stamp_path, (stamp + "\n").encode())
        print("%s: %s %s (%d lines, %.1f s)" % (name, "wrote" if changed else "unchanged",
                                               shown(path), len(records), time.time() - start))

    # all.jsonl: byte concatenation (every manifest's paths are relative to the same folder).
    parts, counts, missing = [], {}, []
    for name in SETS:
        path = os.path.join(args.out, name + ".jsonl")
        if not os.path.exists(path):
            missing.append(name)
            continue
        with open(path, "rb") as f:
            data = f.read()
        parts.append(data)
        rows = common.read_manifest(path)
        counts[name] = (common.count_splits(rows), len({r["group"] for r in rows}))
    if missing:
        print("warning: all.jsonl lacks %s (no manifest yet; run without --only)" % ", ".join(missing),
              file=sys.stderr)
    all_path = os.path.join(args.out, "all.jsonl")
    changed = common.write_atomic(all_path, b"".join(parts))
    print("all: %s %s" % ("wrote" if changed else "unchanged", shown(all_path)))
    print()
    print_table(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
