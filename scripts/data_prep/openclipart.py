"""Open Clip Art Library 0.18 (Debian openclipart-png + openclipart-svg).

Every PNG is matched to the SVG at the same relative path; the SVG's RDF metadata
(cc:Work -> dc:title, dc:description, dc:subject/rdf:Bag/rdf:li) gives the caption.
See data/README.md for the caption and grouping rules.
"""

import collections
import os
import re
import unicodedata
import xml.etree.ElementTree as ET

from . import common

NS_DC = "http://purl.org/dc/elements/1.1/"
NS_CC = "http://web.resource.org/cc/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

PNG_SUBDIR = os.path.join("openclipart-png", "usr", "share", "openclipart", "png")
SVG_SUBDIR = os.path.join("openclipart-svg", "usr", "share", "openclipart", "svg")

MAX_DESCRIPTION = 200   # characters of description kept in a caption
MAX_KEYWORDS = 12
# A title shared by at least this many images whose file names name at least
# COLLECTION_MIN_STEMS different things is a collection name ("Etiquette Icons",
# "Part of the Flat Icon Collection (...)"), not a description of each picture.
COLLECTION_MIN_IMAGES = 8
COLLECTION_MIN_STEMS = 4
# Groups larger than this always go to train (e.g. 1,375 generated "gramastar" stars).
MAX_EVAL_GROUP = 50

_JUNK_KEYWORDS = {"", "hash", "unsorted", "none", "untitled", "clipart", "clip art", "svg",
                  "openclipart", "image", "inkscape"}
_HASH_RE = re.compile(r"^(?:hash\()?0x[0-9a-f]+\)?$", re.I)
_BOILERPLATE_RES = [
    re.compile(r"creative\s*commons", re.I),
    re.compile(r"(dedicated|released|dedicate|release)\b.{0,40}\b(public domain|licen[cs]e)", re.I),
    re.compile(r"^(made|created?|drawn|done)\s+(with|in|using)\s+(the\s+)?(inkscape|sodipodi)\W*$", re.I),
    re.compile(r"\b(from|at|visit|see|by|on|email|e-mail|url|web ?site)\s*:?\s*\W*$", re.I),
]
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+")
_CLIPART_BY_RE = re.compile(r"^clip\s*art\s+by\s+[^-–:]+[-–:]\s*", re.I)
_CAMEL_RE = re.compile(r"(?<=[a-z])(?=[A-Z])")
_TIMESTAMP_RE = re.compile(r"\s*\((?:mon|tue|wed|thu|fri|sat|sun)\w*\s[^()]*\d{4}\)", re.I)
_HASH_TEXT_RE = re.compile(r"\bhash\(0x[0-9a-f]+\)", re.I)

# File names that encode what they show better than their shared title does.
_STAR_RE = re.compile(r"^star_(\d+)pt(\d+)step$")            # "gramastar" star polygons
_CARD_RE = re.compile(r"^([a-z]+)_(?:([cdhs])_(10|[2-9]|[ajkq])|jk_([br]))$")  # playing cards
_SUITS = {"c": "clubs", "d": "diamonds", "h": "hearts", "s": "spades"}
_RANKS = {"a": "ace", "j": "jack", "q": "queen", "k": "king", "2": "two", "3": "three",
          "4": "four", "5": "five", "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten"}


# --------------------------------------------------------------------------- metadata

def _text(elem):
    return "".join(elem.itertext()) if elem is not None else ""


def parse_svg_metadata(source):
    """{'title', 'description', 'keywords'} (raw strings, possibly empty) of an SVG file
    path or bytes. Only the cc:Work's own dc:title counts (publisher / creator agents
    carry dc:title too)."""
    try:
        if isinstance(source, (bytes, bytearray)):
            root = ET.fromstring(source)
        else:
            root = ET.parse(source).getroot()
    except ET.ParseError:
        data = source if isinstance(source, (bytes, bytearray)) else open(source, "rb").read()
        return _parse_metadata_regex(data.decode("utf-8", "replace"))
    works = list(root.iter("{%s}Work" % NS_CC))
    best = {"title": "", "description": "", "keywords": []}
    for work in works:
        title = _text(work.find("{%s}title" % NS_DC))
        description = _text(work.find("{%s}description" % NS_DC))
        keywords = []
        for subject in work.findall("{%s}subject" % NS_DC):
            items = subject.findall(".//{%s}li" % NS_RDF)
            if items:
                keywords.extend(_text(li) for li in items)
            elif _text(subject).strip():
                keywords.extend(re.split(r"[,;]\s*|\s+", _text(subject).strip()))
        meta = {"title": title, "description": description, "keywords": keywords}
        if title.strip() or not best["title"].strip():
            if title.strip() or description.strip() or any(k.strip() for k in keywords):
                best = meta
        if best["title"].strip():
            break
    return best


def _parse_metadata_regex(text):
    """Fallback for SVGs expat rejects: the same fields, read with regular expressions."""
    work = re.search(r"<cc:Work\b.*?</cc:Work>", text, re.S)
    work = work.group(0) if work else ""
    work_top = re.sub(r"<dc:(publisher|creator|rights|contributor)\b.*?</dc:\1>", "", work, flags=re.S)
    title = re.search(r"<dc:title>(.*?)</dc:title>", work_top, re.S)
    description = re.search(r"<dc:description>(.*?)</dc:description>", work_top, re.S)
    keywords = re.findall(r"<rdf:li>(.*?)</rdf:li>", "".join(
        re.findall(r"<dc:subject>(.*?)</dc:subject>", work_top, re.S)), re.S)
    return {"title": title.group(1) if title else "",
            "description": description.group(1) if description else "",
            "keywords": keywords}


# --------------------------------------------------------------------------- normalization

def group_key(text, strip_all_digits=False):
    """Grouping key: NFKC casefold, punctuation and '_' to spaces, trailing variant numbers
    ('_01', ' 2', '-03b') stripped; strip_all_digits also drops digits inside words
    ('home13' -> 'home', 'arrow02_4' -> 'arrow') and one-letter leftovers (for file stems)."""
    text = unicodedata.normalize("NFKC", _CAMEL_RE.sub(" ", text)).casefold()
    text = re.sub(r"[\W_]+", " ", text).strip()
    if strip_all_digits:
        text = re.sub(r"\d+", " ", text)
        text = " ".join(t for t in text.split() if len(t) > 1)
    else:
        tokens = text.split()
        while len(tokens) > 1 and re.fullmatch(r"\d+[a-z]?|v\d+", tokens[-1]):
            tokens.pop()
        if tokens:  # glued variant number: "aircraft1", "home13"
            tokens[-1] = re.sub(r"(?<=[^\W\d]{3})\d+$", "", tokens[-1])
        text = " ".join(tokens)
    return text


def humanize_stem(stem):
    """Caption text from a file name: camelCase split, '_' / '-' to spaces, trailing numbers
    stripped ('navigation_display_panel_01' -> 'navigation display panel')."""
    special = _special_stem_name(stem)
    if special:
        return special
    text = _CAMEL_RE.sub(" ", stem)
    text = re.sub(r"[_\s]+|(?<=\w)-(?=\w)|(?<=\w)-$", " ", text).strip(" -")
    tokens = text.split()
    while len(tokens) > 1 and re.fullmatch(r"\d+[a-zA-Z]?|[vV]\d+(\.\d+)*", tokens[-1]):
        tokens.pop()
    if tokens:
        tokens[-1] = re.sub(r"(?<=[A-Za-z])\d+$", "", tokens[-1]) or tokens[-1]
    text = " ".join(tokens)
    return text.lower() if text.isupper() else text


def _special_stem_name(stem):
    m = _STAR_RE.match(stem)
    if m:
        return "star polygon with %d points, step %d" % (int(m.group(1)), int(m.group(2)))
    m = _CARD_RE.match(stem.lower())
    if m:
        style, suit, rank, joker = m.groups()
        if joker:
            return "%s joker playing card, %s style" % ("black" if joker == "b" else "red", style)
        return "%s of %s playing card, %s style" % (_RANKS[rank], _SUITS[suit], style)
    return ""


def clean_title(title):
    title = _TIMESTAMP_RE.sub("", common.clean_text(title.replace("_", " ")))
    return common.clean_text(_HASH_TEXT_RE.sub(" ", title))


def clean_description(description, title):
    text = common.clean_text(_HASH_TEXT_RE.sub(" ", common.clean_text(description)))
    kept = []
    for sent in _SENTENCE_SPLIT_RE.split(text):
        sent = sent.strip()
        if not common.has_letters(sent) or any(r.search(sent) for r in _BOILERPLATE_RES):
            continue
        kept.append(sent)
    text = " ".join(kept)
    if not common.has_letters(text) or common.comparable(text) == common.comparable(title):
        return ""
    return common.truncate(text, MAX_DESCRIPTION)


def clean_keywords(keywords, exclude=()):
    def clean(kw):
        return re.sub(r"\s+", " ", common.clean_text(kw).replace("_", " ").strip(" .,;"))

    def keep(kw, key):
        return not (kw.casefold() in _JUNK_KEYWORDS or _HASH_RE.match(kw)
                    or not common.has_letters(kw) or len(kw) > 40)

    return common.unique_cleaned(keywords, exclude, MAX_KEYWORDS, clean, keep)


def compose_caption(name, title, description, keywords):
    """'Name. Title. Description. Keywords: a, b, c.' with empty parts left out."""
    parts = []
    for part in (name, title, description):
        if part and common.comparable(part) not in {common.comparable(p) for p in parts}:
            parts.append(common.sentence(common.capitalize_first(part)))
    if keywords:
        parts.append("Keywords: " + ", ".join(keywords) + ".")
    return " ".join(parts)


# --------------------------------------------------------------------------- building

def scan_pngs(png_root):
    """{real relative path: [relative paths of symlinks / the file itself]} for every PNG."""
    found = collections.OrderedDict()
    real_root = os.path.realpath(png_root)
    for dirpath, dirnames, filenames in os.walk(png_root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.lower().endswith(".png"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, png_root)
            real = os.path.realpath(path)
            if not os.path.isfile(real):
                continue  # dangling link
            real_rel = os.path.relpath(real, real_root)
            if real_rel.startswith(os.pardir):
                real_rel = rel
            found.setdefault(real_rel, []).append(rel)
    return found


def describe(items):
    """Fill caption and group of items (dicts with stem and cleaned title, description,
    keywords); marks collection members (see COLLECTION_MIN_*)."""
    by_title = collections.defaultdict(list)   # exact (case-folded) title -> items
    for it in items:
        if it["title"]:
            by_title[it["title"].casefold()].append(it)
    collections_found = set()
    for title, members in by_title.items():
        names = {humanize_stem(m["stem"]).casefold() for m in members}
        key = group_key(_CLIPART_BY_RE.sub("", members[0]["title"]) or members[0]["title"])
        # File names that repeat the title ("tasto_10_architetto_..." for "Tasto 10") say nothing more.
        named_after_title = sum(1 for m in members if " %s " % key in " %s " % group_key(m["stem"]))
        if _CLIPART_BY_RE.match(title) and len(names) >= 2:
            collections_found.add(title)
        elif (len(members) >= COLLECTION_MIN_IMAGES and len(names) >= COLLECTION_MIN_STEMS
              and named_after_title * 2 < len(members)):
            collections_found.add(title)
    for it in items:
        title = it["title"]
        short_title = _CLIPART_BY_RE.sub("", title) if title else ""
        if short_title != title:  # "Clipart by X - arrow08_4": the rest is a file name
            short_title = humanize_stem(short_title.replace(" ", "_")) or short_title
        tkey = group_key(short_title or title) if title else ""
        stem_name = humanize_stem(it["stem"])
        stem_key = group_key(it["stem"], strip_all_digits=True)
        if title and title.casefold() in collections_found:
            it["collection"] = True
            # The file name names the picture; the title names its collection. A
            # "Clipart by X - item" title names another item of the set: left out.
            name = stem_name if sum(ch.isalpha() for ch in stem_name) >= 3 else ""
            shown_title = "" if short_title != title and name else short_title
            it["caption"] = compose_caption(name, shown_title, it["description"], it["keywords"])
            it["display_title"] = name or shown_title
            it["group"] = "openclipart:" + (tkey + "/" + stem_key if stem_key and name else tkey)
        elif title:
            it["caption"] = compose_caption(short_title or title, "", it["description"], it["keywords"])
            it["display_title"] = short_title or title
            it["group"] = "openclipart:" + tkey
        else:
            it["caption"] = compose_caption(stem_name, "", it["description"], it["keywords"])
            it["display_title"] = stem_name
            it["group"] = "openclipart:" + (group_key(it["stem"]) or it["stem"].lower())
    return collections_found


def build(cache_dir, log=print):
    png_root = os.path.join(cache_dir, PNG_SUBDIR)
    svg_root = os.path.join(cache_dir, SVG_SUBDIR)
    for root, pkg in ((png_root, "openclipart-png"), (svg_root, "openclipart-svg")):
        if not os.path.isdir(root):
            raise FileNotFoundError("%s not found in %s (run scripts/fetch_data.sh)" % (pkg, root))
    pngs = scan_pngs(png_root)
    stats = collections.Counter()
    items = []
    for real_rel, aliases in pngs.items():
        stats["png_paths"] += len(aliases)
        svg = None
        for rel in [real_rel] + aliases:
            candidate = os.path.join(svg_root, os.path.splitext(rel)[0] + ".svg")
            if os.path.isfile(candidate):
                svg = candidate
                break
        meta = parse_svg_metadata(svg) if svg else {"title": "", "description": "", "keywords": []}
        if svg is None:
            stats["no_svg"] += 1
        title = clean_title(meta["title"])
        description = clean_description(meta["description"], title)
        keywords = clean_keywords(meta["keywords"], exclude=[title])
        stats["paths_with_title"] += len(aliases) * bool(title)
        stats["paths_with_keywords"] += len(aliases) * bool(keywords)
        stats["title"] += bool(title)
        stats["description"] += bool(description)
        stats["keywords"] += bool(keywords)
        stats["no_metadata"] += not (title or description or keywords)
        stats["no_title"] += not title
        items.append({"image": os.path.join(png_root, real_rel),
                      "stem": os.path.splitext(os.path.basename(real_rel))[0],
                      "title": title, "description": description, "keywords": keywords})
    found = describe(items)
    for it in items:  # manifest fields: the name the caption starts with, lowercase keywords
        it["title"] = common.clean_title(it.pop("display_title", "") or "")
        it["keywords"] = common.clean_keywords(it["keywords"])
    merged = common.merge_groups_by_content(items)
    common.assign_splits(items, max_eval_group=MAX_EVAL_GROUP)
    sizes = collections.Counter(it["group"] for it in items)
    log("openclipart: %d PNG paths -> %d distinct images (%d symlinked duplicates dropped); "
        "(paths with title %d, with keywords %d); images with title %d, description %d, keywords %d, no title %d (caption from file name), "
        "no metadata at all %d, no SVG %d; %d collection titles (%d images named after their "
        "file); %d groups (%d merged into others for byte-identical images), %d groups of > %d "
        "images sent to train (%d images)"
        % (stats["png_paths"], len(items), stats["png_paths"] - len(items),
           stats["paths_with_title"], stats["paths_with_keywords"], stats["title"],
           stats["description"], stats["keywords"], stats["no_title"], stats["no_metadata"],
           stats["no_svg"], len(found), sum(1 for it in items if it.get("collection")),
           len(sizes), merged, sum(1 for n in sizes.values() if n > MAX_EVAL_GROUP), MAX_EVAL_GROUP,
           sum(n for n in sizes.values() if n > MAX_EVAL_GROUP)))
    return items
