"""Tux Paint stamps (Debian tuxpaint-stamps-default, GPL-2).

Every stamp is an image (PNG, or SVG rendered to a 128 px PNG) next to a .txt description:
the first line is English ("A red apple."), the others are translations
("it.utf8=Una mela rossa."). Caption = the English text; title = its first sentence without
the leading article and the final period; keywords = the title's content words plus the
stamp's category folders; names = the translations. Group = "tuxpaint:" + the stamp's base
name without variant suffixes (_mirror, _filled, trailing numbers), so variants share a split.
"""

import collections
import os
import re

from . import common, render

STAMPS_SUBDIR = os.path.join("tuxpaint-stamps-default", "usr", "share", "tuxpaint", "stamps")
PNG_OUT = os.path.join("tuxpaint", "png")
RENDER_SIZE = 128
# Translations shown first in "names" (then the others, alphabetically by language code).
PREFERRED_LANGS = ("it", "de", "fr", "es", "pt", "nl", "pl", "sv", "da", "fi", "ca", "cs",
                   "ru", "ja", "zh_CN", "ko", "el", "tr", "hu")

_LOCALE_LINE_RE = re.compile(r"^([A-Za-z]{2,3}(?:_[A-Za-z]{2})?(?:@\w+)?)\.utf-?8\s*=\s*(.*)$", re.I)
_ARTICLE_RE = re.compile(r"^(?:a|an|the|some)\s+", re.I)
_VARIANT_RE = re.compile(r"(?:[_-](?:mirror|flip|filled|outlined|outline|cartoon|\d+[a-z]?))+$", re.I)
# Folders that describe a drawing style or a layout rather than what is shown.
_FOLDER_JUNK = {"cartoon", "plastic", "filled", "outlined", "uppercase", "lowercase", "00_symbols",
                "us", "euro", "canadian", "japanese", "misc", "other", "stamps"}
_STOPWORDS = set("""a an the of and or in on at to for with from by is it its it's this that
these those your my our their his her some any one two three very old new called as be are
make makes made up out into over under about""".split())


def parse_description(text):
    """(English text, {language code: text}) of a stamp's .txt file."""
    english, translations = [], collections.OrderedDict()
    for line in text.splitlines():
        line = line.strip().lstrip("\ufeff")
        if not line:
            continue
        m = _LOCALE_LINE_RE.match(line)
        if m:
            lang, value = m.group(1), m.group(2).strip()
            if value and lang not in translations:
                translations[lang] = value
        elif not translations:  # English comes first, before any localized line
            english.append(line)
    return " ".join(english), translations


def first_sentence(text):
    m = re.match(r"^(.+?[.!?])(?:\s|$)", text)
    return m.group(1) if m else text


def make_title(english, stem):
    """'A red apple.' -> 'red apple'; an exclamation ('Eat your bread!') or an empty text
    names the stamp after its file ('bread')."""
    sent = common.clean_text(first_sentence(english))
    if not sent or sent.endswith("!"):
        return humanize(stem)
    title = common.clean_title(_ARTICLE_RE.sub("", sent).rstrip("?"))
    first = title.split(" ", 1)[0]
    if first[:1].isupper() and first[1:].islower() and not _ARTICLE_RE.match(sent):
        title = title[:1].lower() + title[1:]  # "Dollar sign" -> "dollar sign"
    return title


def humanize(stem):
    text = _VARIANT_RE.sub("", stem) or stem
    text = re.sub(r"[_\s]+|(?<=[a-z])-(?=[a-z])", " ", text).strip()
    return text.lower() if not text.isupper() or len(text) > 1 else text


def base_name(stem):
    """Variant-free, lowercase base name: 'A_filled' -> 'a', 'tugboat_mirror' -> 'tugboat'."""
    base = _VARIANT_RE.sub("", stem) or stem
    return re.sub(r"[\W_]+", " ", base.casefold()).strip() or stem.casefold()


def make_keywords(title, rel_dir):
    words = [w for w in re.findall(r"[^\W\d_][\w'’-]*", title.casefold())
             if w not in _STOPWORDS and len(w) > 1]
    folders = [f.replace("_", " ") for f in rel_dir.split(os.sep)
               if f and f.casefold() not in _FOLDER_JUNK and not f[:1].isdigit()]
    return common.clean_keywords(words + folders[::-1])


def make_names(translations, english=""):
    order = [l for l in PREFERRED_LANGS if l in translations]
    order += sorted(l for l in translations if l not in order and not l.startswith("en"))
    texts = [common.clean_title(first_sentence(common.clean_text(translations[l]))) for l in order]
    return common.clean_names(texts, exclude=[english, common.clean_title(english)])


def scan(stamps_root):
    """[(relative dir, stem, image path, .txt path)] for every stamp with a description and an
    image (PNG preferred over SVG; mirrored variants left out)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(stamps_root):
        dirnames.sort()
        names = set(filenames)
        for name in sorted(filenames):
            if not name.endswith(".txt"):
                continue
            stem = name[:-4]
            image = next((stem + ext for ext in (".png", ".svg") if stem + ext in names), None)
            if image is None:
                continue
            found.append((os.path.relpath(dirpath, stamps_root), stem,
                          os.path.join(dirpath, image), os.path.join(dirpath, name)))
    return found


def build_records(stamps, png_root, stats=None):
    """Records for scan()'s stamps; SVG stamps point at png_root/<rel dir>/<stem>.png (to be
    rendered). Splits are not assigned here."""
    stats = stats if stats is not None else collections.Counter()
    records = []
    for rel_dir, stem, image, txt in stamps:
        with open(txt, encoding="utf-8", errors="replace") as f:
            english, translations = parse_description(f.read())
        english = common.clean_text(english)
        title = make_title(english, stem)
        caption = common.sentence(common.capitalize_first(english or title))
        record = {"caption": caption, "title": title, "keywords": make_keywords(title, rel_dir),
                  "names": make_names(translations, english), "rel": os.path.join(rel_dir, stem)}
        base = base_name(stem)
        if base.isdigit() or len(base) < 2 and not base.isalpha():
            base = rel_dir.replace(os.sep, "/").casefold() + "/" + base
        record["group"] = "tuxpaint:" + base
        if image.endswith(".svg"):
            record["svg"] = image
            record["image"] = os.path.join(png_root, rel_dir, stem + ".png")
            stats["svg"] += 1
        else:
            record["image"] = image
            stats["png"] += 1
        stats["no_english"] += not english
        records.append(record)
    return records


def build(cache_dir, log=print):
    root = os.path.join(cache_dir, STAMPS_SUBDIR)
    if not os.path.isdir(root):
        raise FileNotFoundError("tuxpaint-stamps-default not found in %s (run scripts/fetch_data.sh)" % root)
    stats = collections.Counter()
    records = build_records(scan(root), os.path.join(cache_dir, PNG_OUT), stats)
    records, errors = render.render_records(
        records, RENDER_SIZE, os.path.join(cache_dir, PNG_OUT, ".complete"), log=log,
        what="Tux Paint SVG stamps", prefix="tuxpaint")
    for r in records:
        r.pop("rel", None)
    merged = common.merge_groups_by_content(records)
    common.assign_splits(records)
    log("tuxpaint: %d stamps (%d PNG, %d SVG rendered to %d px, %d failed), %d groups (%d merged "
        "for byte-identical images); %d without English text; names for %d, keywords for %d"
        % (len(records), stats["png"], stats["svg"], RENDER_SIZE, len(errors),
           len({r["group"] for r in records}), merged, stats["no_english"],
           sum(1 for r in records if r["names"]), sum(1 for r in records if r["keywords"])))
    return records
