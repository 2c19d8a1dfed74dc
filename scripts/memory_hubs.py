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
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))
import mmsearch_model  # noqa: E402  (the memory in PyTorch, checked against mmsearch's)
from embed_analysis import TEMPLATES, embed, keyword_queries, precision_at_10  # noqa: E402


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
    images = embed(a.mmsearch, a.model, "--image", paths, memory=False)
    rows = [r for r, e in zip(rows, images) if e is not None]
    raw = np.array([e for e in images if e is not None], np.float32)
    split = np.array([r["split"] for r in rows])
    kws = [set(k.lower() for k in r.get("keywords", [])) for r in rows]
    held = split == a.split
    queries, relevant = keyword_queries(kws, held)
    q_raw = np.array(embed(a.mmsearch, a.model, "--text", queries, memory=False), np.float32)

    memory = mmsearch_model.Memory(os.path.join(a.model, "memory.safetensors"), raw.shape[1])
    img_mem = memory.augment_images(torch.from_numpy(raw)).numpy()
    q_mem = memory.augment_texts(torch.from_numpy(q_raw)).numpy()
    # Recognised: the nearest memory image within the recall gate (what moves it toward its
    # look-alike's texts).
    nearest = (torch.from_numpy(raw) @ memory.image_keys.t()).max(1).values
    known = np.array([memory.recall_weight * memory.linear_gate(
        memory.recall_gate_low, memory.recall_gate_high, float(x)) > 0 for x in nearest])

    print(f"{a.manifest}: {len(rows)} images, {len(queries) // len(TEMPLATES)} keywords x "
          f"{len(TEMPLATES)} templates")
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
