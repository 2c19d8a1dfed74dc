"""What the analysis scripts (scripts/memory_hubs.py, scripts/hubness.py) share: embeddings
from `mmsearch embed`, and the keyword queries they score as `mmsearch eval --queries` does
(keywords only, not title words)."""
import collections
import json
import subprocess
import sys

import numpy as np

BATCH = 400  # inputs per `mmsearch embed` call (bounds the command line)
TEMPLATES = ("a {}", "{}", "a picture of {}")


def embed(mmsearch, model, flag, items, memory=True):
    """Embeddings of items (image paths with flag "--image", texts with "--text"), the
    memory applied unless memory=False; None for an image that cannot be loaded (`mmsearch
    embed` tells it on stderr, leaves it out and exits 1). Exits with `embed`'s error for
    anything else."""
    out = []
    for i in range(0, len(items), BATCH):
        chunk = items[i:i + BATCH]
        args = [mmsearch, "embed", "--model", model] + ([] if memory else ["--no-memory"])
        for x in chunk:
            args += [flag, x]
        run = subprocess.run(args, capture_output=True, text=True)
        rows = {}
        for line in run.stdout.splitlines():
            row = json.loads(line)
            rows[row["input"]] = row["embedding"]
        if run.returncode != 0 and (flag != "--image" or not rows):
            sys.exit(run.stderr)
        out += [rows.get(x) for x in chunk]
    return out


def keyword_queries(keywords, held):
    """keywords: each image's set of lowercase keywords; held: bool array, the images of the
    split. Keywords of at least 8 images, 2 of them held, each asked with every template.
    Returns (queries, relevant [len(queries), len(keywords)] bool)."""
    in_all = collections.Counter(k for s in keywords for k in s)
    in_split = collections.Counter(k for s, h in zip(keywords, held) if h for k in s)
    words = sorted(k for k, c in in_all.items() if c >= 8 and in_split[k] >= 2)
    queries = [t.format(w) for t in TEMPLATES for w in words]
    relevant = np.array([[w in s for s in keywords] for w in words] * len(TEMPLATES))
    return queries, relevant


def precision_at_10(scores, relevant):
    top = np.argsort(-scores, 1)[:, :10]
    return 100 * np.take_along_axis(relevant, top, 1).mean()
