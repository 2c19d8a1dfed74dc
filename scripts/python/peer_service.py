"""A Python peer of `mmsearch serve` for the benchmarks: Flask + the PyTorch reference model
(mmsearch_model.py) + FAISS over the same INDEX_DIR, answering text search the way the C++
service does. Run under gunicorn, 2 sync workers (each loads its own model and index):

    MMSEARCH_INDEX=/path/to/index MMSEARCH_MODEL=data/models/default \\
      gunicorn --workers 2 --worker-class sync --bind 127.0.0.1:8090 \\
        --pythonpath scripts/python 'peer_service:create_app()'

from the repository root. Start-up hashes the model (~3 s) and images.faiss (~60 ms a MB,
1 KB an image) in pure Python; past a few hundred thousand images that outlasts gunicorn's
default 30 s worker timeout: add --timeout 120.

Routes: `GET /healthz` -> {"status": "ok"}; `POST /v1/search/text` {"query": str, "k": int =
10} -> {"results": [{"id", "score", "path", "caption"?}], "took_ms"}, errors as
{"error": {"code", "message"}} with the C++ service's statuses. Target "images" only; no
filters, no auth, no metrics: the peer measures what the model and FAISS cost in Python.

The index is opened read-only and trusted only as far as mmsearch trusts it (index/
collection_search.cc): the catalog must record this model's fingerprint, and images.faiss
is read only when its size and FNV-1a hash match what the catalog recorded for the current
catalog generation (faiss.read_index trusts its input). Otherwise the peer builds a Flat
index from the catalog's vectors in memory, as mmsearch would (it never writes the index).
"""

import os
import sqlite3
import sys
import time
import warnings

import numpy as np
import torch
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

with warnings.catch_warnings():  # Debian's faiss 1.7.3 loader uses distutils' LooseVersion
    warnings.simplefilter("ignore", DeprecationWarning)
    import faiss

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmsearch_io  # noqa: E402
import mmsearch_model  # noqa: E402

MAX_K = 1000  # ServeLimits::max_k
MAX_TEXT_BYTES = 64 << 10  # ServeLimits::max_text_bytes
NPROBE, EF_SEARCH = 16, 64  # SearchParams defaults


class SetupError(RuntimeError):
    """The model or index cannot be served; gunicorn then stops ("Worker failed to boot")."""


class ApiError(Exception):
    """An error answered as {"error": {"code", "message"}} with `status`."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code = status, code


class ImageIndex:
    """images.faiss of an INDEX_DIR (an IndexIDMap of catalog ids, inner product) and the
    catalog's id -> path, caption lookup. One per worker; not thread-safe (sync workers)."""

    def __init__(self, index_dir, fingerprint, dim):
        path = os.path.join(index_dir, "catalog.sqlite")
        if not os.path.exists(path):
            raise SetupError("index '%s' has no catalog.sqlite" % index_dir)
        self.db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, check_same_thread=False)
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        if meta.get("model_fingerprint") != fingerprint or int(meta.get("dim", 0)) != dim:
            raise SetupError("index '%s' was built with model %s (dim %s), not this one "
                             "(%s, dim %d)" % (index_dir, meta.get("model_fingerprint"),
                                               meta.get("dim"), fingerprint, dim))
        self.index = self._read_verified(index_dir, meta, fingerprint, dim)
        self.source = "images.faiss"  # where the searched vectors came from
        if self.index is None:
            print("peer: images.faiss is missing or stale; searching a Flat index built from "
                  "the catalog", file=sys.stderr)
            self.index = self._build_from_catalog(dim)
            self.source = "catalog"
        self._set_search_params()
        # Hubness-aware scoring (encoders/memory.h): each image's h, as the catalog stores it
        # (schema 2; none in older catalogs).
        columns = [r[1] for r in self.db.execute("PRAGMA table_info(items)")]
        rows = self.db.execute("SELECT id, hub FROM items WHERE status = 'ok'").fetchall() \
            if "hub" in columns else []
        self.hubs = {r[0]: float(r[1] or 0) for r in rows}
        inner = faiss.downcast_index(faiss.downcast_index(self.index).index)
        self.exact = isinstance(inner, faiss.IndexFlat) and self.index.ntotal > 0
        if self.exact:  # the stored vectors (a view, not a copy) and their h, in storage order
            self.xb = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d).reshape(
                inner.ntotal, inner.d)
            self.row_ids = faiss.vector_to_array(faiss.downcast_index(self.index).id_map)
            self.row_hubs = np.array([self.hubs.get(int(i), 0.0) for i in self.row_ids],
                                     np.float32)
        self.min_hub = min(self.hubs.values(), default=0.0)

    def _read_verified(self, index_dir, meta, fingerprint, dim):
        """images.faiss when the catalog vouches for its bytes, else None."""
        row = self.db.execute("SELECT generation, count, model_fingerprint, dim, size, hash "
                              "FROM faiss_files WHERE target = 'images'").fetchone()
        if row is None:
            return None
        generation, count, model, row_dim, size, stamp = row
        if generation != int(meta.get("images_generation", -1)) or model != fingerprint \
                or row_dim != dim:
            return None
        path = os.path.join(index_dir, "images.faiss")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        if len(data) != size or "%016x" % mmsearch_io.fnv1a64(data) != stamp:
            return None
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if index.d != dim or index.ntotal != count or \
                index.metric_type != faiss.METRIC_INNER_PRODUCT:
            return None
        return index

    def _build_from_catalog(self, dim):
        rows = self.db.execute(
            "SELECT id, vector FROM items WHERE status = 'ok' ORDER BY id").fetchall()
        index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
        if rows:
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vectors = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            index.add_with_ids(vectors, ids)
        return index

    def _set_search_params(self):
        """nprobe of an IVF, efSearch of an HNSW, under whatever wraps them (as mmsearch)."""
        inner = faiss.downcast_index(self.index)
        while True:
            if isinstance(inner, (faiss.IndexIDMap, faiss.IndexPreTransform)):
                inner = faiss.downcast_index(inner.index)
            elif isinstance(inner, faiss.IndexRefine):
                inner = faiss.downcast_index(inner.base_index)
            else:
                break
        if isinstance(inner, faiss.IndexIVF):
            inner.nprobe = min(NPROBE, inner.nlist)
        elif isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efSearch = EF_SEARCH

    def _ranked(self, vector, k, hub_weight):
        """[(score, id)] best first, by inner product less hub_weight * h, as
        Collection::search ranks them: within a shortlist of the index's max(4k, 64) best, and on a Flat index exactly (a scan of every vector by its penalized score,
        where the shortlist's k-th could be beaten by one left out)."""
        query = vector.reshape(1, -1).astype(np.float32)
        total = self.index.ntotal
        if total == 0:
            return []
        n = min(total, max(4 * k, 64)) if hub_weight > 0 else k
        scores, ids = self.index.search(query, n)
        found = [(float(s) - hub_weight * self.hubs.get(int(i), 0.0), int(i))
                 for s, i in zip(scores[0], ids[0]) if i >= 0]
        found.sort(key=lambda x: -x[0])  # stable: ties keep the index's order
        found = found[:k]
        if hub_weight == 0 or not self.exact or n >= total or ids[0][-1] < 0 or (
                len(found) == k and found[-1][0] >= scores[0][-1] - hub_weight * self.min_hub):
            return found
        # Not proven: one scan of every stored vector by its penalized score.
        penalized = self.xb @ query[0] - hub_weight * self.row_hubs
        best = np.argpartition(-penalized, k - 1)[:k] if k < total else np.arange(total)
        best = best[np.argsort(-penalized[best], kind="stable")]
        return [(float(penalized[r]), int(self.row_ids[r])) for r in best]

    def search(self, vector, k, hub_weight=0.0):
        """vector [dim] unit norm -> up to k results, best first."""
        results = []
        for score, item_id in self._ranked(vector, k, hub_weight):
            row = self.db.execute("SELECT path, caption FROM items WHERE id = ? AND status = 'ok'",
                                  (int(item_id),)).fetchone()
            if row is None:
                continue  # removed since the index was written
            result = {"id": int(item_id), "score": float(score), "path": row[0]}
            if row[1]:
                result["caption"] = row[1]
            results.append(result)
        return results


def _search_request(body):
    """(query, k) from a JSON body, checked as the C++ service checks them."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_argument", "the body must be a JSON object")
    query = body.get("query")
    if query is None:
        raise ApiError(400, "invalid_argument", 'missing field "query"')
    if not isinstance(query, str):
        raise ApiError(400, "invalid_argument", '"query" must be a string')
    if not query.strip(" \t\r\n"):
        raise ApiError(400, "invalid_argument", '"query" is empty')
    if len(query.encode("utf-8")) > MAX_TEXT_BYTES:
        raise ApiError(413, "too_large", '"query" is over %d bytes' % MAX_TEXT_BYTES)
    k = body.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int):
        raise ApiError(400, "invalid_argument", '"k" must be an integer')
    if not 1 <= k <= MAX_K:
        raise ApiError(400, "invalid_argument", "k = %d is outside 1..%d" % (k, MAX_K))
    if body.get("target", "images") != "images":
        raise ApiError(400, "invalid_argument", 'the peer searches "target": "images" only')
    return query, k


def create_app(model_dir=None, index_dir=None):
    """The Flask app over MODEL_DIR (default $MMSEARCH_MODEL, else the shipped model) and
    INDEX_DIR (default $MMSEARCH_INDEX, required). Loads both before returning."""
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    model_dir = model_dir or os.environ.get("MMSEARCH_MODEL") or \
        os.path.join(mmsearch_io.repo_root(), "data", "models", "default")
    index_dir = index_dir or os.environ.get("MMSEARCH_INDEX")
    if not index_dir:
        raise SetupError("set MMSEARCH_INDEX to an index directory")
    model = mmsearch_model.load(model_dir)
    index = ImageIndex(index_dir, model.fingerprint(), model.dim)
    app = Flask("mmsearch-peer")
    app.config["INDEX_SOURCE"] = index.source

    @app.errorhandler(ApiError)
    def api_error(e):
        return jsonify({"error": {"code": e.code, "message": str(e)}}), e.status

    @app.errorhandler(HTTPException)
    def http_error(e):  # unknown route, wrong method: JSON like every other error
        code = "not_found" if e.code == 404 else e.name.lower().replace(" ", "_")
        return jsonify({"error": {"code": code, "message": e.description}}), e.code

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.post("/v1/search/text")
    def search_text():
        t0 = time.perf_counter()
        body = request.get_json(force=True, silent=True)
        query, k = _search_request(body)
        results = index.search(model.embed_texts([query])[0], k, model.hub_weight)
        return jsonify({"results": results, "took_ms": (time.perf_counter() - t0) * 1000.0})

    return app
