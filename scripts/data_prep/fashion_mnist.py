"""Fashion-MNIST: IDX (gzip) -> 28x28 grayscale PNG files + template captions.

Splits: the official 60k train / 10k test are kept; 10% of the official train images
(bucket(group) < 10, group = "fmnist-train-<index>") become the validation split.
"""

import gzip
import json
import os
import struct

from . import common
from .png import encode_png

SOURCE_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
EXPECTED_COUNTS = {"train": 60000, "test": 10000}
VAL_PERCENT = 10

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

# Natural noun phrases per class (with article); the first one is the canonical name.
CLASS_PHRASES = [
    ["a t-shirt", "a top", "a short-sleeved t-shirt"],
    ["a pair of trousers", "trousers", "a pair of pants"],
    ["a pullover", "a sweater", "a long-sleeved pullover"],
    ["a dress", "a woman's dress"],
    ["a coat", "a jacket"],
    ["a sandal", "a summer sandal"],
    ["a shirt", "a button-up shirt"],
    ["a sneaker", "a sports shoe", "a trainer shoe"],
    ["a bag", "a handbag"],
    ["an ankle boot", "a boot"],
]

TEMPLATES = [
    "a photo of {}",
    "a black and white picture of {}",
    "a product photo of {}",
    "a low-resolution grayscale image of {}",
    "a small picture of {} on a black background",
]


def caption_for(label, group):
    """Deterministic caption for an image of class `label` (picked from its group id)."""
    phrases = CLASS_PHRASES[label]
    template = TEMPLATES[common.bucket("template:" + group, len(TEMPLATES))]
    phrase = phrases[common.bucket("phrase:" + group, len(phrases))]
    return template.format(phrase)


def group_for(official_split, index):
    return "fmnist-%s-%d" % (official_split, index)


def split_for(official_split, index):
    if official_split == "test":
        return "test"
    return "val" if common.bucket(group_for(official_split, index)) < VAL_PERCENT else "train"


def read_idx(path):
    """(dims, payload bytes) of an IDX file of unsigned bytes (gzip-compressed or not)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError("%s: too short for an IDX file" % path)
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError("%s: not an unsigned-byte IDX file (magic %r)" % (path, data[:4]))
    dims = struct.unpack(">%dI" % ndim, data[4:4 + 4 * ndim])
    payload = data[4 + 4 * ndim:]
    expected = 1
    for d in dims:
        expected *= d
    if len(payload) != expected:
        raise ValueError("%s: %d bytes of data, expected %d" % (path, len(payload), expected))
    return dims, payload


def png_path(png_root, official_split, index):
    return os.path.join(png_root, official_split, "%05d.png" % index)


def convert(source_dir, png_root, log=print, expected=EXPECTED_COUNTS):
    """Write every image as PNG under png_root/{train,test}/NNNNN.png (skipped when the
    .complete marker says it is done; files already present are kept, since each one is
    written atomically). Returns {split: [labels]}."""
    labels = {}
    marker = os.path.join(png_root, ".complete")
    done = None
    if os.path.exists(marker):
        with open(marker) as f:
            done = json.load(f)
    for split, (images_name, labels_name) in SOURCE_FILES.items():
        (n,), label_bytes = read_idx(os.path.join(source_dir, labels_name))
        labels[split] = list(label_bytes)
        if expected is not None and n != expected[split]:
            raise ValueError("Fashion-MNIST %s: %d labels, expected %d" % (split, n, expected[split]))
    if done == {s: len(v) for s, v in labels.items()} and all(
            os.path.exists(png_path(png_root, s, len(v) - 1)) for s, v in labels.items()):
        return labels
    for split, (images_name, _) in SOURCE_FILES.items():
        dims, pixels = read_idx(os.path.join(source_dir, images_name))
        n, h, w = dims
        if n != len(labels[split]):
            raise ValueError("Fashion-MNIST %s: %d images but %d labels" % (split, n, len(labels[split])))
        out_dir = os.path.join(png_root, split)
        os.makedirs(out_dir, exist_ok=True)
        existing = set(os.listdir(out_dir))
        size = h * w
        new = 0
        for i in range(n):
            name = "%05d.png" % i
            if name in existing:
                continue
            path = os.path.join(out_dir, name)
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(encode_png(pixels[i * size:(i + 1) * size], w, h, 1))
            os.replace(tmp, path)
            new += 1
        log("fashion_mnist: %s: %d PNG files (%d written now)" % (split, n, new))
    common.write_atomic(marker, json.dumps({s: len(v) for s, v in labels.items()}).encode())
    return labels


def build(cache_dir, log=print):
    """Manifest records (image paths absolute) for Fashion-MNIST."""
    source_dir = os.path.join(cache_dir, "dataset-fashion-mnist", "usr", "share", "datasets",
                              "fashion-mnist")
    if not os.path.isdir(source_dir):
        raise FileNotFoundError("Fashion-MNIST not found in %s (run scripts/fetch_data.sh)" % source_dir)
    png_root = os.path.join(cache_dir, "fashion_mnist", "png")
    labels = convert(source_dir, png_root, log=log)
    records = []
    for official in ("train", "test"):
        for i, label in enumerate(labels[official]):
            group = group_for(official, i)
            records.append({"image": png_path(png_root, official, i),
                            "caption": caption_for(label, group),
                            "split": split_for(official, i),
                            "group": group,
                            # The class as a noun phrase: zero-shot evaluation prompts with it.
                            "label": CLASS_PHRASES[label][0]})
    return records
