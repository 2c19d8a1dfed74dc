#!/usr/bin/python3
"""What hubness-aware scoring would change: a simulation on the validation splits.

A "hub" is a document (an image for text queries, a text for image queries) that sits near
many queries whatever they ask: the memory's recognised near-copies are such images (see
scripts/memory_hubs.py), and generic captions are such texts. Query-bank normalisation scores
a document d for a query q as

    score(q, d) = cos(q, d) - lam * h(d),   h(d) = mean of d's K highest cosines to a bank
                                                   of training queries of q's modality

so a document pays for being close to every query, and the per-document term h(d) is
computed once, at indexing time, from a bank drawn from the training splits only. This
script measures it on `mmsearch embed`'s embeddings (the memory applied, as search sees
them) with banks of up to 1000 training pairs per source (their captions, "a {keyword}"
queries of their first two keywords, and their images), for Open Clip Art, emoji, Tux Paint
and OpenMoji caption recall@10 (text->image / image->text), Open Clip Art natural-query
precision@10 (keywords only, as scripts/memory_hubs.py: over the collection / over the
validation images) and Fashion-MNIST zero-shot accuracy with "a photo of {}". It is the
sketch that ranked the idea: `mmsearch` now scores this way with banks drawn from the
memory's own keys (encoders/memory.h; `mmsearch eval --memory-hub-weight W` measures it);
this script's banks are its own, so its figures are not the model's.

  /usr/bin/python3 scripts/hubness.py --model data/models/default [--mmsearch build/mmsearch]
      [--cache DIR] [--k 10,25] [--lams 0.2,0.3,0.5,0.7]
"""
import argparse
import json
import os
import random

import numpy as np

from embed_analysis import embed, keyword_queries, precision_at_10

SOURCES = ("openclipart", "emoji", "tuxpaint", "openmoji")  # caption recall columns
BANK_SOURCES = SOURCES + ("icons", "emoji_styles")
BANK_PER_SOURCE = 1000


class CachedEmbeddings:
    def __init__(self, mmsearch, model, cache):
        self.mmsearch, self.model, self.cache = mmsearch, model, cache
        if cache:
            os.makedirs(cache, exist_ok=True)

    def __call__(self, flag, items, tag):
        """[len(items), dim] embeddings; NaN rows for images `mmsearch embed` left out."""
        path = os.path.join(self.cache, tag + ".npy") if self.cache else None
        if path and os.path.exists(path):
            return np.load(path)
        rows = embed(self.mmsearch, self.model, flag, items)
        dim = len(next(r for r in rows if r is not None))
        out = np.array([[np.nan] * dim if r is None else r for r in rows], np.float32)
        if path:
            np.save(path, out)
        return out


def load(manifest):
    base = os.path.dirname(os.path.abspath(manifest))
    rows = [json.loads(line) for line in open(manifest)]
    for r in rows:
        r["path"] = os.path.join(base, r["image"])
    return rows


def hub(docs, bank, k):
    return np.sort(docs @ bank.T, 1)[:, -k:].mean(1)


def recall_at_10(scores, relevant):
    """scores [queries, gallery]; relevant: per query, the set of its gallery columns. Ties
    count against the query, as `mmsearch eval` counts them."""
    hits = 0
    for row, rel in zip(scores, relevant):
        best = max(row[j] for j in rel)
        hits += (row >= best).sum() - sum(row[j] >= best for j in rel) + 1 <= 10
    return 100 * hits / len(relevant)


def caption_gallery(embed_cached, rows, split, name):
    held = [r for r in rows if r["split"] == split]
    images = sorted({r["path"] for r in held})
    emb = embed_cached("--image", images, name + "_img")
    ok = {p for p, e in zip(images, emb) if not np.isnan(e[0])}
    images, emb = [p for p in images if p in ok], emb[~np.isnan(emb[:, 0])]
    held = [r for r in held if r["path"] in ok]
    texts = sorted({r["caption"] for r in held})
    ii = {p: i for i, p in enumerate(images)}
    ti = {t: i for i, t in enumerate(texts)}
    t2i, i2t = [set() for _ in texts], [set() for _ in images]
    for r in held:
        t2i[ti[r["caption"]]].add(ii[r["path"]])
        i2t[ii[r["path"]]].add(ti[r["caption"]])
    return emb, embed_cached("--text", texts, name + "_txt"), t2i, i2t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifests", default="data/manifests")
    ap.add_argument("--split", default="val")
    ap.add_argument("--mmsearch", default="build/mmsearch")
    ap.add_argument("--cache", default="", help="keep embeddings here between runs")
    ap.add_argument("--k", default="10,25")
    ap.add_argument("--lams", default="0.2,0.3,0.5,0.7")
    a = ap.parse_args()
    embed_cached = CachedEmbeddings(a.mmsearch, a.model, a.cache)
    man = lambda name: load(os.path.join(a.manifests, name + ".jsonl"))

    rng = random.Random(0)
    bank_rows = []
    for name in BANK_SOURCES:
        train = [r for r in man(name) if r["split"] == "train"]
        rng.shuffle(train)
        bank_rows += train[:BANK_PER_SOURCE]
    bank_queries = sorted({"a " + k.lower() for r in bank_rows for k in r.get("keywords", [])[:2]})
    rng.shuffle(bank_queries)
    bank_texts = np.concatenate([
        embed_cached("--text", [r["caption"] for r in bank_rows], "bank_captions"),
        embed_cached("--text", bank_queries[:4000], "bank_queries")])
    bank_images = embed_cached("--image", [r["path"] for r in bank_rows], "bank_images")
    bank_images = bank_images[~np.isnan(bank_images[:, 0])]
    print(f"banks: {len(bank_texts)} training texts, {len(bank_images)} training images")

    galleries = {name: caption_gallery(embed_cached, man(name), a.split, name) for name in SOURCES}
    coll = man("openclipart")
    coll_emb = embed_cached("--image", [r["path"] for r in coll], "openclipart_all_img")
    ok = ~np.isnan(coll_emb[:, 0])
    coll, coll_emb = [r for r, g in zip(coll, ok) if g], coll_emb[ok]
    held = np.array([r["split"] == a.split for r in coll])
    queries, relevant = keyword_queries(
        [set(k.lower() for k in r.get("keywords", [])) for r in coll], held)
    query_emb = embed_cached("--text", queries, "openclipart_queries")
    fm = [r for r in man("fashion_mnist") if r["split"] == a.split][:2000]
    fm_emb = embed_cached("--image", [r["path"] for r in fm], "fashion_mnist_img")
    classes = sorted({r["label"] for r in fm})
    labels = np.array([classes.index(r["label"]) for r in fm])
    prompt_emb = embed_cached("--text", ["a photo of " + c for c in classes], "fashion_mnist_prompts")

    head = " ".join(f"{n[:5]:>11}" for n in SOURCES)
    print(f"{'':<16}{head}   OCA queries   FM   (t->i / i->t R@10; P@10 coll. / {a.split})")
    for k in (int(x) for x in a.k.split(",")):
        image_hub = {n: hub(g[0], bank_texts, k) for n, g in galleries.items()}
        text_hub = {n: hub(g[1], bank_images, k) for n, g in galleries.items()}
        coll_hub, prompt_hub = hub(coll_emb, bank_texts, k), hub(prompt_emb, bank_images, k)
        for lam in [0.0] + [float(x) for x in a.lams.split(",")]:
            if lam == 0 and k != int(a.k.split(",")[0]):
                continue
            out = []
            for n, (images, texts, t2i, i2t) in galleries.items():
                s = texts @ images.T
                out += [recall_at_10(s - lam * image_hub[n][None], t2i),
                        recall_at_10(s.T - lam * text_hub[n][None], i2t)]
            s = query_emb @ coll_emb.T - lam * coll_hub[None]
            out += [precision_at_10(s, relevant), precision_at_10(s[:, held], relevant[:, held])]
            out += [100 * ((fm_emb @ prompt_emb.T - lam * prompt_hub[None]).argmax(1) == labels).mean()]
            name = "cosine" if lam == 0 else f"K {k} lam {lam:g}"
            print(f"{name:<16}" + " ".join(f"{x:5.1f}" for x in out), flush=True)


if __name__ == "__main__":
    main()
