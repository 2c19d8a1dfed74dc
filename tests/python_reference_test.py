#!/usr/bin/python3
"""The PyTorch reference of the model (scripts/python/) against the C++ program:

* embeddings of fixture images (PNG and JPEG with and without alpha, 16-bit, palette, EXIF
  orientation, WebP, TIFF, non-square, shrunk and enlarged) and of texts (short, ~40 tokens,
  at and around the attention window, > 600 tokens, Unicode) agree with `mmsearch embed`
  within 1e-4, with the memory and without it, and with a memory that recalls some of the
  fixtures as its own images;
* the safetensors writer reproduces the shipped weights and memory byte for byte;
* each document's h for hubness-aware scoring agrees with `mmsearch embed`'s;
* the Python peer (peer_service.py) reads an index `mmsearch index` built and answers a
  text search as `mmsearch search` does (hub penalty included).

    /usr/bin/python3 tests/python_reference_test.py      (from the repository root; ~20 s)

Runs build/mmsearch, or the program $MMSEARCH names. Needs Debian's python3-torch,
python3-numpy, python3-opencv, python3-sentencepiece, python3-faiss and python3-flask
(scripts/setup.sh installs them); exits 77, which ctest reports as skipped, when
python3-torch is missing.
"""

import contextlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest

try:
    import torch
except ImportError:
    print("SKIP: python3-torch is not installed (scripts/setup.sh installs it)")
    sys.exit(77)

import cv2
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts", "python"))
import mmsearch_io  # noqa: E402
import mmsearch_model  # noqa: E402

MODEL_DIR = os.path.join(REPO_ROOT, "data", "models", "default")
FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "images")
TOLERANCE = 1e-4

FIXTURE_IMAGES = [
    "rgba.png",               # alpha, 4x3
    "quadrants.png",          # no alpha, 8x6
    "rgb16.png",              # 16-bit samples
    "palette.png",            # palette, 4x1
    "gray.png",               # grayscale
    "orientation6.png",       # EXIF orientation in an eXIf chunk
    "quadrants.jpg",          # 32x24
    "gradient_256x192.jpg",   # decoded at 1/2 scale, then shrunk
    "exif_orientation6.jpg",  # EXIF orientation in APP1
    "rgba.webp",
    "rgba.tiff",              # premultiplied alpha
    "orientation6.tiff",      # orientation applied by libtiff
]

WORDS = ("the quick brown fox jumps over a lazy dog while red apples fall from green trees near "
         "the old stone bridge where children play with a yellow kite and a small cat sleeps on "
         "a warm blue blanket under the bright summer sun beside a quiet river full of silver "
         "fish").split()


def program():
    return os.environ.get("MMSEARCH") or os.path.join(REPO_ROOT, "build", "mmsearch")


def run_program(*args):
    """Runs the C++ program (one thread); returns its stdout, fails the test on an error."""
    done = subprocess.run([program(), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError("%s %s failed (exit %d): %s"
                             % (program(), " ".join(args[:2]), done.returncode, done.stderr))
    return done.stdout


def cpp_embeddings(texts, images, use_memory, model_dir=MODEL_DIR):
    """{(kind, input): np.ndarray [dim]} from `mmsearch embed`."""
    args = ["embed", "--model", model_dir, "--threads", "1"]
    args += ["--text=" + t for t in texts] + ["--image=" + p for p in images]
    if not use_memory:
        args.append("--no-memory")
    out = {}
    for line in run_program(*args).splitlines():
        row = json.loads(line)
        out[(row["kind"], row["input"])] = np.array(row["embedding"], dtype=np.float32)
    return out


def cpp_hubs(texts, images, model_dir=MODEL_DIR):
    """{(kind, input): h} from `mmsearch embed` (each input's h as a document; absent where
    the model has no hub banks)."""
    args = ["embed", "--model", model_dir, "--threads", "1"]
    args += ["--text=" + t for t in texts] + ["--image=" + p for p in images]
    return {(row["kind"], row["input"]): row.get("hub")
            for row in map(json.loads, run_program(*args).splitlines())}


def write_generated_images(folder):
    """Larger images than the fixtures, photo-like (smooth noise), in the paths that only
    larger images take: a 320x200 RGBA PNG (alpha composited, area-shrunk) and a 500x333 JPEG
    (decoded at 1/4 scale)."""
    rng = np.random.RandomState(0)
    smooth = cv2.resize(rng.randint(0, 256, (20, 32, 3)).astype(np.uint8), (320, 200),
                        interpolation=cv2.INTER_CUBIC)
    alpha = np.tile(np.linspace(0, 255, 320).astype(np.uint8), (200, 1))[:, :, None]
    png = os.path.join(folder, "generated_rgba_320x200.png")
    cv2.imwrite(png, np.concatenate([smooth, alpha], axis=2))
    jpg = os.path.join(folder, "generated_500x333.jpg")
    cv2.imwrite(jpg, cv2.resize(smooth, (500, 333), interpolation=cv2.INTER_LINEAR),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    return [png, jpg]


def make_texts(model):
    """{label: text}: short, ~40 tokens, Unicode, window edges and a text over 600 tokens."""
    rng = random.Random(7)
    words = [rng.choice(WORDS) for _ in range(800)]
    texts = {
        "short": "a cat",
        "sentence": "A photograph of a small orange cat sitting on a wooden windowsill next to a "
                    "potted green plant, with soft morning light coming through the glass and a "
                    "red bicycle leaning outside",
        "unicode": "ÉMOJI: Ｆｕｌｌ-width ＴＥＸＴ  with   spaces and an apple 🍎",
        "long": " ".join(words),
    }
    # Prefixes whose length n (BOS and EOS included) brackets the window: n = window + 1 is
    # still one dense block; just over it, the blockwise kernel runs with a ragged last block.
    # (A word may add two tokens, so "just over" is window + 2 or + 3.)
    window = model.config["text"]["window"]
    for label, lengths in (("window+1", {window + 1}), ("window+2", {window + 2, window + 3}),
                           ("2*window+1", {2 * window + 1})):
        for count in range(1, len(words)):
            prefix = " ".join(words[:count])
            if len(model.tokenize(prefix)) in lengths:
                texts[label] = prefix
                break
    return texts


def max_abs_diff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


class EmbeddingsTest(unittest.TestCase):
    """Python and C++ embeddings of the same inputs, with and without the memory."""

    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        cls.tmp = tempfile.TemporaryDirectory()
        cls.models = {True: mmsearch_model.load(MODEL_DIR),
                      False: mmsearch_model.load(MODEL_DIR, use_memory=False)}
        cls.texts = make_texts(cls.models[True])
        cls.images = [os.path.join(FIXTURES, f) for f in FIXTURE_IMAGES]
        cls.images += write_generated_images(cls.tmp.name)
        cls.cpp = {m: cpp_embeddings(list(cls.texts.values()), cls.images, m) for m in (True, False)}
        cls.report = []

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        print("\nmax abs difference, Python vs C++ (memory / no memory):")
        for line in cls.report:
            print("  " + line)

    def check(self, label, kind, key, python_rows):
        diffs = []
        for use_memory, row in zip((True, False), python_rows):
            self.assertIn((kind, key), self.cpp[use_memory], "mmsearch embed gave no %s" % label)
            diffs.append(max_abs_diff(row, self.cpp[use_memory][(kind, key)]))
        self.report.append("%-28s %.1e / %.1e" % (label, *diffs))
        for d in diffs:
            self.assertLessEqual(d, TOLERANCE, label)

    def test_texts(self):
        labels, texts = list(self.texts), list(self.texts.values())
        batched = {m: self.models[m].embed_texts(texts) for m in (True, False)}
        for i, (label, text) in enumerate(zip(labels, texts)):
            n = len(self.models[True].tokenize(text))
            self.check("text %s (%d tokens)" % (label, n), "text", text,
                       [batched[True][i], batched[False][i]])
            # Alone, unpadded, as a single query is embedded.
            alone = [self.models[m].embed_texts([text])[0] for m in (True, False)]
            self.check("text %s, alone" % label, "text", text, alone)

    def test_long_text_spans_many_windows(self):
        n = len(self.models[True].tokenize(self.texts["long"]))
        self.assertGreater(n, 600)
        self.assertGreater(n, 10 * self.models[True].config["text"]["window"])
        for label in ("window+1", "window+2", "2*window+1"):
            self.assertIn(label, self.texts)

    def test_images(self):
        rows = {m: self.models[m].embed_images(self.images) for m in (True, False)}
        for i, path in enumerate(self.images):
            self.check("image " + os.path.basename(path), "image", path,
                       [rows[True][i], rows[False][i]])

    def test_memory_is_exercised(self):
        # The memory must move some embeddings, or the comparison with it would prove nothing
        # about Memory.augment.
        moved = {kind: max(max_abs_diff(self.cpp[True][key], self.cpp[False][key])
                           for key in self.cpp[True] if key[0] == kind)
                 for kind in ("text", "image")}
        self.assertGreater(moved["text"], 1e-3)
        self.assertGreater(moved["image"], 1e-3)


    def test_hubs_agree_with_cpp(self):
        # Hubness-aware scoring: each document's h (encoders/memory.h), computed by the
        # reference from its own embeddings and the memory's banks, against C++'s.
        model = self.models[True]
        self.assertGreater(model.hub_weight, 0, "the shipped memory has no hub banks")
        texts = list(self.texts.values())
        cpp = cpp_hubs(texts, self.images)
        python = {("text", t): h for t, h in zip(texts, model.text_hubs(model.embed_texts(texts)))}
        python.update({("image", p): h for p, h in
                       zip(self.images, model.image_hubs(model.embed_images(self.images)))})
        spread = max(python.values()) - min(python.values())
        self.assertGreater(spread, 1e-3, "every h alike: the comparison would prove little")
        for key, h in python.items():
            self.assertIsNotNone(cpp[key], "mmsearch embed gave no hub for %s" % (key,))
            self.assertAlmostEqual(float(h), cpp[key], delta=TOLERANCE, msg=str(key))
        self.report.append("%-28s %.1e" % ("hub h", max(abs(float(h) - cpp[k])
                                                       for k, h in python.items())))


class RecallTest(unittest.TestCase):
    """A memory whose image keys are fixtures' own embeddings: those images (and their
    re-encoded copies) are recalled, moved toward their texts, alike in Python and C++."""

    MEMORY_IMAGES = ["rgba.png", "quadrants.png", "gray.png"]
    MEMORY_TEXTS = ["a transparent sketch", "a faded drawing", "four coloured quadrants",
                    "a plain grey square"]
    PAIRS = [(0, 0), (0, 1), (1, 2), (2, 3)]
    # rgba.webp is rgba.png re-encoded (similarity ~1); quadrants.jpg resembles quadrants.png
    # (~0.99, below the recall gate) and gradient_256x192.jpg nothing in the memory.
    IMAGES = ["rgba.png", "rgba.webp", "quadrants.png", "gray.png", "quadrants.jpg",
              "gradient_256x192.jpg"]
    RECALLED = {"rgba.png", "rgba.webp", "quadrants.png", "gray.png"}

    def test_recall_agrees_with_cpp(self):
        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory() as model_dir:
            for name in ("config.json", "model.safetensors", "tokenizer.model"):
                shutil.copy(os.path.join(MODEL_DIR, name), model_dir)
            plain = mmsearch_model.load(model_dir)  # no memory.safetensors yet
            self.assertIsNone(plain.memory)
            keys = {"image_keys": plain.embed_images(
                        [os.path.join(FIXTURES, f) for f in self.MEMORY_IMAGES]),
                    "text_keys": plain.embed_texts(self.MEMORY_TEXTS)}
            tensors = {n: torch.from_numpy(k).half() for n, k in keys.items()}
            tensors["pairs"] = torch.tensor(self.PAIRS, dtype=torch.int32)
            settings = {"k": 3, "temperature": 0.05, "weight": 0.5, "gate_low": 0.75,
                        "gate_high": 0.9, "recall_weight": 4, "recall_gate_low": 0.995,
                        "recall_gate_high": 0.999}
            # As C++ write_memory formats them (std::to_string).
            metadata = {n: str(v) if n == "k" else "%f" % v for n, v in settings.items()}
            metadata["format"] = "mmsearch-memory-1"
            mmsearch_io.write_safetensors(os.path.join(model_dir, "memory.safetensors"),
                                          tensors, metadata)
            model = mmsearch_model.load(model_dir)
            self.assertEqual(model.memory.recall_weight, 4)
            images = [os.path.join(FIXTURES, f) for f in self.IMAGES]
            texts = self.MEMORY_TEXTS + ["a cat"]
            python = {("image", p): e for p, e in zip(images, model.embed_images(images))}
            python.update({("text", t): e for t, e in zip(texts, model.embed_texts(texts))})
            before = {("image", p): e for p, e in zip(images, plain.embed_images(images))}
            model.memory.recall_weight = 0
            unrecalled = {("image", p): e for p, e in zip(images, model.embed_images(images))}
            # All at once (similarities by matrix product), and two images alone (by the
            # nearest-key search that a few rows take).
            cpp = cpp_embeddings(texts, images, True, model_dir)
            cpp_few = cpp_embeddings([], images[1:5:3], True, model_dir)
        diffs = [max_abs_diff(python[key], cpp[key]) for key in python]
        diffs += [max_abs_diff(python[key], cpp_few[key]) for key in cpp_few]
        print("\nrecall: max abs difference, Python vs C++: %.1e" % max(diffs))
        self.assertLessEqual(max(diffs), TOLERANCE)
        for path in images:
            key = ("image", path)
            if os.path.basename(path) in self.RECALLED:
                # Moved far, and by recall itself (not only by the memory's pull), so that
                # ignoring recall would fail the comparison above: cosines ~0.85-0.9 and
                # ~0.89-0.96 here.
                self.assertLess(float(np.dot(cpp[key], before[key])), 0.95, path)
                self.assertLess(float(np.dot(cpp[key], unrecalled[key])), 0.98, path)
            else:
                self.assertLessEqual(max_abs_diff(cpp[key], unrecalled[key]), TOLERANCE, path)


class ViewsTest(unittest.TestCase):
    """A model that embeds an image from several views (config.json image.views): the whole
    input and corner crops, averaged, alike in Python and C++."""

    def test_views_agree_with_cpp(self):
        torch.set_num_threads(1)
        images = [os.path.join(FIXTURES, f) for f in ("quadrants.png", "rgba.png", "gray.png")]
        python = {}
        with tempfile.TemporaryDirectory() as model_dir:
            for name in ("model.safetensors", "tokenizer.model"):
                shutil.copy(os.path.join(MODEL_DIR, name), model_dir)
            for views, crop in ((1, 0.85), (3, 0.8), (5, 0.85)):
                with open(os.path.join(MODEL_DIR, "config.json"), encoding="utf-8") as f:
                    config = json.load(f)
                config["image"].update(views=views, view_crop=crop)
                with open(os.path.join(model_dir, "config.json"), "w", encoding="utf-8") as f:
                    json.dump(config, f)
                python[views] = mmsearch_model.load(model_dir, use_memory=False).embed_images(images)
                cpp = cpp_embeddings([], images, False, model_dir)
                for path, row in zip(images, python[views]):
                    self.assertLessEqual(max_abs_diff(row, cpp[("image", path)]), TOLERANCE,
                                         "%d views: %s" % (views, path))
        # The views move the embeddings, or the comparison would prove nothing.
        self.assertGreater(max_abs_diff(python[3], python[1]), 1e-3)
        self.assertGreater(max_abs_diff(python[5], python[3]), 1e-3)


class SafetensorsTest(unittest.TestCase):
    def test_writer_reproduces_the_shipped_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("model.safetensors", "memory.safetensors"):
                original = os.path.join(MODEL_DIR, name)
                tensors, metadata = mmsearch_io.read_safetensors(original)
                copy = os.path.join(tmp, name)
                mmsearch_io.write_safetensors(copy, tensors, metadata)
                with open(original, "rb") as a, open(copy, "rb") as b:
                    self.assertTrue(a.read() == b.read(), name + " differs when rewritten")

    def test_model_weights_are_the_state_dict(self):
        model = mmsearch_model.load(MODEL_DIR, use_memory=False)
        tensors, _ = mmsearch_io.read_safetensors(os.path.join(MODEL_DIR, "model.safetensors"))
        state = model.encoder.state_dict()
        self.assertEqual(set(state), set(tensors))
        for name, t in tensors.items():
            self.assertTrue(torch.equal(state[name], t), name)


class PeerTest(unittest.TestCase):
    """peer_service.py over an index the C++ program built, against `mmsearch search`."""

    @classmethod
    def setUpClass(cls):
        import peer_service
        cls.tmp = tempfile.TemporaryDirectory()
        images = os.path.join(cls.tmp.name, "images")
        os.mkdir(images)
        for name in FIXTURE_IMAGES:
            shutil.copy(os.path.join(FIXTURES, name), images)
        write_generated_images(images)
        cls.index = os.path.join(cls.tmp.name, "index")
        run_program("index", "--index", cls.index, "--model", MODEL_DIR, "--threads", "1", images)
        cls.app = peer_service.create_app(MODEL_DIR, cls.index)
        cls.client = cls.app.test_client()
        cls.count = len(FIXTURE_IMAGES) + 2

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_search_answers_as_mmsearch_search(self):
        for query in ("a cat", "a red apple on a table"):
            cpp = json.loads(run_program("search", "--index", self.index, "--model", MODEL_DIR,
                                         "--text", query, "-k", str(self.count), "--json",
                                         "--threads", "1"))
            res = self.client.post("/v1/search/text", json={"query": query, "k": self.count})
            self.assertEqual(res.status_code, 200)
            peer = res.get_json()
            self.assertIn("took_ms", peer)
            # Every item, so ties at the cut cannot make the sets differ; ties may swap
            # places, so compare each id's score and the score sequence.
            cpp_scores = {r["id"]: r["score"] for r in cpp["results"]}
            peer_scores = {r["id"]: r["score"] for r in peer["results"]}
            self.assertEqual(set(cpp_scores), set(peer_scores))
            for item_id, score in cpp_scores.items():
                self.assertAlmostEqual(peer_scores[item_id], score, delta=TOLERANCE)
            cpp_paths = {r["id"]: r["path"] for r in cpp["results"]}
            for r in peer["results"]:
                self.assertEqual(r["path"], cpp_paths[r["id"]])
            ordered = [r["score"] for r in peer["results"]]
            self.assertEqual(ordered, sorted(ordered, reverse=True))

    def test_tampered_faiss_file_is_not_read(self):
        # images.faiss whose bytes no longer match the catalog's stamp: the peer must not
        # parse it, and answers from the catalog's vectors instead, the same results.
        import peer_service
        copy = os.path.join(self.tmp.name, "tampered")
        shutil.copytree(self.index, copy)
        with open(os.path.join(copy, "images.faiss"), "ab") as f:
            f.write(b"\0")
        with contextlib.redirect_stderr(io.StringIO()):
            app = peer_service.create_app(MODEL_DIR, copy)
        self.assertEqual(self.app.config["INDEX_SOURCE"], "images.faiss")
        self.assertEqual(app.config["INDEX_SOURCE"], "catalog")
        client = app.test_client()
        body = {"query": "a cat", "k": self.count}
        want = self.client.post("/v1/search/text", json=body).get_json()["results"]
        got = client.post("/v1/search/text", json=body).get_json()["results"]
        self.assertEqual({r["id"]: round(r["score"], 5) for r in got},
                         {r["id"]: round(r["score"], 5) for r in want})

    def test_health_and_errors(self):
        self.assertEqual(self.client.get("/healthz").get_json(), {"status": "ok"})
        for body, status in (({"query": " "}, 400), ({"query": "x", "k": 0}, 400),
                             ({"query": "x", "k": "3"}, 400), ({"k": 3}, 400),
                             ({"query": "x" * (65 << 10)}, 413)):
            res = self.client.post("/v1/search/text", json=body)
            self.assertEqual(res.status_code, status, body)
            self.assertIn("code", res.get_json()["error"])
        self.assertEqual(self.client.get("/v1/search/text").status_code, 405)


if __name__ == "__main__":
    if not os.access(program(), os.X_OK):
        sys.exit("%s is not built (scripts/setup.sh builds it; $MMSEARCH names another)" % program())
    unittest.main(verbosity=1)
