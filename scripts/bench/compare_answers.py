#!/usr/bin/env python3
"""Checks that two text-search services answer alike, so that a benchmark between them
compares the same work: sends the first N query texts of a file to POST /v1/search/text of
both and prints one JSON object: how many queries got the same top-k ids in the same order,
the mean overlap of the two id sets, the largest score difference between equal ranks with
equal ids, and the first query that differed.

    scripts/bench/compare_answers.py URL_A URL_B QUERIES_FILE [--n 20] [--k 10]

Used by scripts/bench_serve.sh on mmsearch and the Python peer (same model, same index
file): their embeddings agree to ~1e-7, so the lists should match up to ties. Python 3
standard library only.
"""
import argparse
import json
import sys
import urllib.request


def search(url, query, k):
    body = json.dumps({"query": query, "k": k, "target": "images"}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/v1/search/text", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return [(hit["id"], hit["score"]) for hit in json.load(r)["results"]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url_a")
    ap.add_argument("url_b")
    ap.add_argument("queries")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    a = ap.parse_args()
    with open(a.queries, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()][:a.n]
    same, overlap, max_score_diff, first_difference = 0, 0.0, 0.0, None
    for text in texts:
        hits_a, hits_b = search(a.url_a, text, a.k), search(a.url_b, text, a.k)
        ids_a, ids_b = [h[0] for h in hits_a], [h[0] for h in hits_b]
        same += ids_a == ids_b
        overlap += len(set(ids_a) & set(ids_b)) / max(1, len(set(ids_a) | set(ids_b)))
        for (id_a, score_a), (id_b, score_b) in zip(hits_a, hits_b):
            if id_a == id_b:
                max_score_diff = max(max_score_diff, abs(score_a - score_b))
        if ids_a != ids_b and first_difference is None:
            first_difference = {"query": text, "a": ids_a, "b": ids_b}
    json.dump({"queries": len(texts), "k": a.k, "same_ids": same,
               "mean_jaccard": round(overlap / max(1, len(texts)), 4),
               "max_score_diff": max_score_diff, "first_difference": first_difference},
              sys.stdout)
    print()


if __name__ == "__main__":
    main()
