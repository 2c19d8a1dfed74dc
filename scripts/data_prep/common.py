"""Shared helpers: deterministic grouped splits, caption text cleaning, manifest I/O."""

import hashlib
import html
import json
import os
import re
import unicodedata

SPLITS = ("train", "val", "test")

# bucket = sha1(group) mod 100; < TRAIN_BUCKETS -> train, < VAL_BUCKETS -> val, else test.
TRAIN_BUCKETS = 80
VAL_BUCKETS = 90


def bucket(key, buckets=100):
    """Stable bucket in [0, buckets) of a string (sha1 of its UTF-8 bytes).

    Unlike hash(), it does not depend on PYTHONHASHSEED, the platform or the Python version.
    """
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def split_for_group(group, train=TRAIN_BUCKETS, val=VAL_BUCKETS):
    """train / val / test for a group id: every item of one group lands in the same split."""
    b = bucket(group)
    if b < train:
        return "train"
    if b < val:
        return "val"
    return "test"


def assign_splits(records, max_eval_group=None):
    """Set record["split"] from record["group"] (in place) and return the records.

    Groups with more than max_eval_group records go to train: very large families
    (procedurally generated shapes, whole icon themes) would otherwise swamp a val/test split
    that should hold many distinct concepts.
    """
    sizes = {}
    for r in records:
        sizes[r["group"]] = sizes.get(r["group"], 0) + 1
    for r in records:
        g = r["group"]
        if max_eval_group is not None and sizes[g] > max_eval_group:
            r["split"] = "train"
        else:
            r["split"] = split_for_group(g)
    return records


def merge_groups_by_content(records, key=None):
    """Give byte-identical images one group (in place): union of their groups, named after
    the smallest group id of the union. Returns the number of groups merged away.

    Some sources reuse one picture under several names (Noto draws every "family: ..."
    emoji as the same silhouette), and a picture must not sit in two splits."""
    key = key or (lambda r: file_digest(r["image"]))
    parent = {}

    def find(g):
        parent.setdefault(g, g)
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    first_by_digest = {}
    for r in records:
        find(r["group"])
        digest = key(r)
        other = first_by_digest.setdefault(digest, r["group"])
        a, b = find(other), find(r["group"])
        if a != b:
            parent[max(a, b)] = min(a, b)
    merged = sum(1 for g in parent if find(g) != g)
    for r in records:
        r["group"] = find(r["group"])
    return merged


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).digest()


# --------------------------------------------------------------------------- text cleaning

_COMMENT_RE = re.compile(r"<!--.*?(?:-->|$)", re.S)
_CDATA_RE = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.S)
_TAG_RE = re.compile(r"</?[A-Za-z][^<>]*>|<[A-Za-z][^<>]*/>")
_BR_RE = re.compile(r"<\s*(?:br|p|/p|li|div|/div)\b[^<>]*>", re.I)
_URL_RE = re.compile(r"(?:https?|ftp)://\S+|\bwww\.[^\s,;]+", re.I)
_EMAIL_RE = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_WS_RE = re.compile(r"\s+")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def unescape_entities(text, rounds=3):
    """html.unescape until stable: metadata is often escaped twice (&amp;quot; -> &quot; -> ")."""
    for _ in range(rounds):
        new = html.unescape(text)
        if new == text:
            break
        text = new
    return text


def repair_mojibake(text):
    """UTF-8 that was once read as Latin-1 / Windows-1252 ("LÃ©zard") back to what it was
    ("Lézard"). Only a text whose every character maps back to one byte, and whose bytes
    then decode as UTF-8 with at least one multi-byte character, is changed: correct
    Latin-1 text ("café", "Ã  la") never decodes that way, so it is left alone."""
    if text.isascii():
        return text
    for codec in ("latin-1", "cp1252"):
        try:
            fixed = text.encode(codec).decode("utf-8")
        except UnicodeError:
            continue
        if fixed != text:
            return fixed
    return text


def clean_text(text, drop_urls=True):
    """Markup-free, single-line text: comments / tags stripped, entities unescaped,
    URLs and e-mail addresses dropped (optional), whitespace collapsed, mojibake repaired,
    NFC-normalized."""
    if not text:
        return ""
    text = unescape_entities(text)  # first, so that escaped markup (&lt;a href=...&gt;) is seen
    text = _CDATA_RE.sub(r"\1", text)
    text = _COMMENT_RE.sub(" ", text)
    text = _BR_RE.sub(" ", text)
    text = _TAG_RE.sub(" ", text)
    text = unescape_entities(text)
    if drop_urls:
        text = _URL_RE.sub(" ", text)
        text = _EMAIL_RE.sub(" ", text)
    text = _CONTROL_RE.sub(" ", text)
    text = repair_mojibake(text)
    text = unicodedata.normalize("NFC", text)
    text = _WS_RE.sub(" ", text).strip()
    # Leftovers of removed URLs / tags: empty brackets, dangling separators.
    text = re.sub(r"\(\s*\)|\[\s*\]", "", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = _WS_RE.sub(" ", text).strip(" ,;:-")
    return text


def has_letters(text):
    return any(ch.isalpha() for ch in text)


def comparable(text):
    """Lowercase alphanumeric skeleton, to detect a description that repeats the title."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def truncate(text, limit):
    """At most limit characters, cut at a sentence end if one is near, else at a word."""
    if len(text) <= limit:
        return text
    head = text[:limit + 1]
    cut = max(head.rfind(". "), head.rfind("! "), head.rfind("? "))
    if cut >= limit // 3:
        return head[:cut + 1].strip()
    cut = head.rfind(" ")
    if cut <= 0:
        cut = limit
    return head[:cut].rstrip(" ,;:-") + "..."


def sentence(text):
    """Text ending with sentence punctuation (for joining caption parts with spaces)."""
    text = text.strip()
    if not text:
        return text
    if text[-1] in ".!?…":
        return text
    if text.endswith((".)", '."', "!)", "?)")):
        return text
    return text + "."


def capitalize_first(text):
    return text[:1].upper() + text[1:] if text else text


# --------------------------------------------------------------------------- title / keywords / names

MAX_KEYWORDS = 16
MAX_NAMES = 12
MAX_NAME_CHARS = 80
# Tags that say nothing about what is shown: file formats, sources, drawing styles, weights.
JUNK_KEYWORDS = frozenset("""
clip art|clipart|clip-art|icon|icons|symbol|symbols|openclipart|open clip art|png|svg|image|images
|picture|pictures|graphic|graphics|drawing|illustration|inkscape|unsorted|untitled|none|hash|emoji
|outline|outlined|fill|filled|bold|line|lines|solid|regular|thin|duotone|twotone
|rounded|stroke|glyph|color|colour|colored|coloured|mono|monochrome|black and white|vector
|remix|misc|other|uncategorized|uncategorised|general|default|openmoji|extras openmoji
|extras unicode|iconify|material|material design|game icons|lucide|tabler|font awesome
""".replace("\n", "").split("|"))


def unique_cleaned(items, exclude, limit, clean, keep):
    """The first `limit` items, each passed through clean(), that keep(item, key) accepts and
    whose comparable() key is new (and not that of an exclude text)."""
    out, seen = [], {comparable(x) for x in exclude if x}
    for item in items or ():
        item = clean(item)
        key = comparable(item)
        if key in seen or not keep(item, key):
            continue
        seen.add(key)
        out.append(item)
        if len(out) >= limit:
            break
    return out


def clean_keywords(words, exclude=(), limit=MAX_KEYWORDS):
    """Lowercase, de-duplicated keywords: '_' to spaces, markup and junk tags (JUNK_KEYWORDS),
    numbers-only and over-long ones dropped, those equal to an exclude text dropped."""
    def clean(word):
        word = clean_text(str(word)).replace("_", " ").lower()
        return _WS_RE.sub(" ", word).strip(" .,;:!?\"'()[]{}#*-")

    def keep(word, key):
        return not (len(word) < 2 or not has_letters(word) or word in JUNK_KEYWORDS
                    or len(word) > 40 or word.startswith(("hash(", "0x")))

    return unique_cleaned(words, exclude, limit, clean, keep)


def clean_names(names, exclude=(), limit=MAX_NAMES, max_chars=MAX_NAME_CHARS):
    """Other names (aliases, translations): cleaned, de-duplicated (ignoring case and
    punctuation, and against exclude), at most limit, each at most max_chars long."""
    return unique_cleaned(names, exclude, limit, lambda name: clean_text(str(name)).strip(" ,;:"),
                   lambda name, key: bool(name) and bool(key) and len(name) <= max_chars)


def clean_title(text):
    """A title as a person would say it: cleaned, single line, no trailing period."""
    text = clean_text(text)
    while text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    return text


# --------------------------------------------------------------------------- manifests

def manifest_line(image, caption, split, group, label=None, title=None, keywords=None, names=None):
    """One JSONL line: image, caption, split, group, then the optional label, title,
    keywords and names (each left out when empty)."""
    record = {"image": image, "caption": caption, "split": split, "group": group}
    if label is not None:
        record["label"] = label  # a class name, for zero-shot evaluation
    if title:
        record["title"] = title
    if keywords:
        record["keywords"] = list(keywords)
    if names:
        record["names"] = list(names)
    return json.dumps(record, ensure_ascii=False)


def relative_image_path(image_path, manifest_dir):
    """Path of image_path relative to manifest_dir, with forward slashes."""
    rel = os.path.relpath(os.path.abspath(image_path), os.path.abspath(manifest_dir))
    return rel.replace(os.sep, "/")


def write_atomic(path, data):
    """Write bytes to path via a temp file in the same directory + rename: a reader (or an
    interrupted run) never sees a half-written file. Returns False if path already held data."""
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".%s.tmp.%d" % (os.path.basename(path), os.getpid()))
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def write_manifest(path, records, manifest_dir=None):
    """records: dicts with image (absolute or cwd-relative path), caption, split, group and
    optionally label, title, keywords, names. Writes JSONL with image paths relative to the manifest's folder. Returns True if changed."""
    manifest_dir = manifest_dir or os.path.dirname(os.path.abspath(path))
    lines = [manifest_line(relative_image_path(r["image"], manifest_dir), r["caption"],
                           r["split"], r["group"], r.get("label"), r.get("title"),
                           r.get("keywords"), r.get("names")) for r in records]
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    return write_atomic(path, data)


def read_manifest(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def count_splits(rows):
    counts = {s: 0 for s in SPLITS}
    for r in rows:
        counts[r["split"]] = counts.get(r["split"], 0) + 1
    return counts
