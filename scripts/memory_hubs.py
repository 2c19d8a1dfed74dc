#!/usr/bin/python3
"""How the memory's recall step treats held-out images, and what scoring in two spaces would
change: a simulation on one manifest's validation split.

The memory (encoders/memory.h) moves an image it recognises as one of its own (nearest memory
image at a similarity within the recall gate) toward that image's texts. Over a collection of
training images that is what finds them by their words; a held-out image that happens to be
a near-copy of a training image is recognised too, and then sits nearer every query than the
other held-out images. This script measures that and compares, by natural-query precision@10
over the whole collection and over the validation images alone:

  raw        the encoders' own embeddings, no memory
  shipped    the memory as `mmsearch` applies it (query and images augmented)
  hybrid d   recognised images scored in the memory's space minus d, the others in the
             encoders' own space against the encoders' own query embedding

It applies the memory with scripts/python/mmsearch_model.py's Memory (the PyTorch reference,
which agrees with `mmsearch`) to the encoders' own embeddings (`mmsearch embed
--no-memory`), so its figures approximate `mmsearch eval --queries` (queries: "a {kw}", "{kw}", "a picture of {kw}" for keywords with at least 8
images in the collection and 2 in the split; relevant: the keyword among the image's
keywords, not its title words). Use it to rank ideas, not to report the model's figures.

  /usr/bin/python3 scripts/memory_hubs.py --model data/models/default \
      --manifest data/manifests/openclipart.jsonl [--mmsearch build/mmsearch]
"""
import argparse
import collections
import json
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))
import mmsearch_model  # noqa: E402  (the memory in PyTorch, checked against mmsearch's)

IMAGE_BATCH = 400  # images per `mmsearch embed` call (bounds the command line)


def embed(mmsearch, model, flag, items):
    """Embeddings of items (image paths or texts); None for an image that cannot be loaded
    (`mmsearch embed` tells it on stderr, leaves it out and exits 1)."""
    out = []
    for i in range(0, len(items), IMAGE_BATCH):
        chunk = items[i:i + IMAGE_BATCH]
        args = [mmsearch, "embed", "--model", model, "--no-memory"]
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


def precision_at_10(scores, relevant):
    top = np.argsort(-scores, 1)[:, :10]
    return 100 * np.take_along_axis(relevant, top, 1).mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--mmsearch", default="build/mmsearch")
    ap.add_argument("--offsets", default="0,0.05,0.1,0.15,0.2")
    a = ap.parse_args()

    base = os.path.dirname(os.path.abspath(a.manifest))
    rows = [json.loads(l) for l in open(a.manifest)]
    paths = [os.path.join(base, r["image"]) for r in rows]
    images = embed(a.mmsearch, a.model, "--image", paths)
    rows = [r for r, e in zip(rows, images) if e is not None]
    raw = np.array([e for e in images if e is not None], np.float32)
    split = np.array([r["split"] for r in rows])
    kws = [set(k.lower() for k in r.get("keywords", [])) for r in rows]
    held = split == a.split
    in_all = collections.Counter(k for s in kws for k in s)
    in_split = collections.Counter(k for s, h in zip(kws, held) if h for k in s)
    words = sorted(k for k, c in in_all.items() if c >= 8 and in_split[k] >= 2)
    queries = [t.format(k) for t in ("a {}", "{}", "a picture of {}") for k in words]
    relevant = np.array([[k in s for s in kws] for k in words] * 3)
    q_raw = np.array(embed(a.mmsearch, a.model, "--text", queries), np.float32)

    memory = mmsearch_model.Memory(os.path.join(a.model, "memory.safetensors"), raw.shape[1])
    img_mem = memory.augment_images(torch.from_numpy(raw)).numpy()
    q_mem = memory.augment_texts(torch.from_numpy(q_raw)).numpy()
    # Recognised: the nearest memory image within the recall gate (what moves it toward its
    # look-alike's texts).
    nearest = (torch.from_numpy(raw) @ memory.image_keys.t()).max(1).values
    known = np.array([memory.recall_weight * memory.linear_gate(
        memory.recall_gate_low, memory.recall_gate_high, float(x)) > 0 for x in nearest])

    print(f"{a.manifest}: {len(rows)} images, {len(words)} keywords x 3 templates")
    for name in ("train", "val", "test"):
        n = int((split == name).sum())
        print(f"  {name}: {int(known[split == name].sum())} of {n} images recognised")

    def report(name, scores):
        slots = np.argsort(-scores[:, held], 1)[:, :10]
        share = 100 * known[held][slots].mean()
        print(f"{name:<22} {precision_at_10(scores, relevant):7.2f} "
              f"{precision_at_10(scores[:, held], relevant[:, held]):7.2f} {share:8.1f}")

    print(f"{'P@10':<22} {'coll.':>7} {a.split + ' img':>7} {'recog.%':>8}  "
          "(recog.%: top-10 slots over the split's images taken by recognised ones)")
    report("raw", q_raw @ raw.T)
    report("shipped", q_mem @ img_mem.T)
    for d in (float(x) for x in a.offsets.split(",")):
        report(f"hybrid d={d:g}",
               np.where(known[None, :], q_mem @ img_mem.T - d, q_raw @ raw.T))


if __name__ == "__main__":
    main()
