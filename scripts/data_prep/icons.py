"""Icon sets from npm @iconify-json/* (one npm package per set; versions pinned in
scripts/fetch_data.sh and ICON_SETS below).

icons.json holds {"icons": {name: {body, width?, height?, hidden?}}, "aliases": {alias:
{parent}}, "width", "height"}; metadata.json may hold {"categories": {category: [names]}}.
Each icon's body is wrapped in an <svg> (currentColor -> black) and rendered with
rsvg-convert to a 128 px PNG under data/cache/icons/png/<set>/<name>.png.

Weight / style variants (-outline, -filled, -bold, -flat, numbered -2 ...) collapse to one
concept: one image per concept per set (the base, else the outline one). Brand and logo
icons are left out. Caption "<title>. Keywords: <category words, aliases>."; names = the
aliases. Group = "icon:<concept>" across sets, so "apple" in two sets is one concept.
"""

import collections
import json
import os
import re

from . import common, render

# (set, npm version, licence), in priority order.
ICON_SETS = (
    ("game-icons", "1.2.4", "CC-BY-3.0"),
    ("icon-park", "1.2.4", "Apache-2.0"),
    ("mdi", "1.2.3", "Apache-2.0"),
    ("fa6-solid", "1.2.4", "CC-BY-4.0"),
    ("tabler", "1.2.41", "MIT"),
    ("lucide", "1.2.137", "ISC"),
    ("lucide-lab", "1.2.3", "ISC"),
    ("streamline-color", "1.2.2", "CC-BY-4.0"),
)
PNG_OUT = os.path.join("icons", "png")
RENDER_SIZE = 128

# Suffixes that name a weight / style / numbered variant ("-line", "-light", "-round" ... are
# left alone: "finish-line", "traffic-light" and "merry-go-round" are concepts of their own).
VARIANT_TOKENS = {"bold", "filled", "outline", "outlined", "duotone", "twotone", "rounded", "flat",
                  "variant"}
SET_VARIANT_TOKENS = {"icon-park": {"one", "two", "three", "four", "five"}}
_OUTLINE_TOKENS = {"outline", "outlined", "line"}
_BRAND_RE = re.compile(r"(?:^|-)(?:logo|brand|brands)(?:-|$)")
_BRAND_CATEGORY_RE = re.compile(r"brand|logo", re.I)
# Trademarks drawn as plain icons by sets without a brand category (lucide, ...), and mdi's
# "apple" (the Apple logo, not the fruit).
BRAND_NAMES = {
    "mdi": {"apple", "apple-ios", "apple-keyboard-command", "apple-finder", "apple-safari"},
    "*": {"github", "gitlab", "chrome", "chromium", "figma", "facebook", "twitter", "instagram",
          "linkedin", "youtube", "twitch", "slack", "trello", "framer", "codepen", "codesandbox",
          "dribbble", "pocket", "firefox", "android", "windows", "apple-logo", "amazon", "google",
          "paypal", "bitcoin", "discord", "reddit", "whatsapp", "telegram", "skype", "spotify",
          "pinterest", "tiktok", "snapchat", "medium", "html5", "css3", "npm", "docker", "linux",
          "ubuntu", "debian", "wordpress", "dropbox", "steam", "xbox", "playstation", "nintendo"},
}
_CAMEL_RE = re.compile(r"(?<=[a-z])(?=[A-Z])")
_STOP = {"and", "or", "the", "of", "with", "to", "in", "on", "for", "a", "an"}


def concept_of(name, set_name=""):
    """'account-outline' -> 'account', 'bookmark-one' (icon-park) -> 'bookmark', 'add-1-flat'
    -> 'add', 'arrow-left-2' -> 'arrow left'."""
    tokens = name.lower().split("-")
    extra = SET_VARIANT_TOKENS.get(set_name, ())
    while len(tokens) > 1 and (tokens[-1] in VARIANT_TOKENS or tokens[-1] in extra
                               or tokens[-1].isdigit()):
        tokens.pop()
    return " ".join(tokens)


def variant_rank(name, concept):
    """Which icon of a concept is kept: the base one, then an outline one, then the shortest."""
    if name.replace("-", " ") == concept:
        return (0, len(name), name)
    suffix = set(name.lower().split("-")[len(concept.split()):])
    return (1 if suffix & _OUTLINE_TOKENS else 2, len(name), name)


_CATEGORY_JUNK = {"base", "interface essential", "abstract", "others", "other", "general"}


def category_words(category):
    text = _CAMEL_RE.sub(" ", category).replace("_", " ")
    words = [p.strip().lower() for p in re.split(r"\s*[/&,]\s*|\s+and\s+", text) if p.strip()]
    return [w for w in words if w not in _CATEGORY_JUNK]


def is_brand(set_name, name, categories):
    if _BRAND_RE.search(name) or any(_BRAND_CATEGORY_RE.search(c) for c in categories):
        return True
    return name in BRAND_NAMES.get(set_name, ()) or name in BRAND_NAMES["*"]


def svg_document(icon, width, height, size=RENDER_SIZE):
    left, top = icon.get("left", 0), icon.get("top", 0)
    w, h = icon.get("width", width), icon.get("height", height)
    body = icon["body"].replace("currentColor", "#000")
    return ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            'viewBox="%s %s %s %s" width="%d" height="%d">%s</svg>' % (left, top, w, h, size, size, body))


def concepts_of_set(set_name, icons_json, metadata, stats=None):
    """[{name, concept, title, keywords, caption, names, svg}] for one set, one per concept."""
    stats = stats if stats is not None else collections.Counter()
    icons = icons_json.get("icons") or {}
    width, height = icons_json.get("width", 16), icons_json.get("height", 16)
    cats_of = collections.defaultdict(list)
    for cat, members in ((metadata or {}).get("categories") or {}).items():
        for m in members:
            cats_of[m].append(cat)
    aliases_of = collections.defaultdict(list)
    for alias, spec in (icons_json.get("aliases") or {}).items():
        parent = spec.get("parent")
        while parent in (icons_json.get("aliases") or {}):  # alias of an alias
            parent = icons_json["aliases"][parent].get("parent")
        if parent:
            aliases_of[parent].append(alias)
    by_concept = collections.defaultdict(list)
    for name, icon in icons.items():
        if icon.get("hidden"):
            stats["hidden"] += 1
            continue
        if is_brand(set_name, name, cats_of.get(name, ())):
            stats["brand"] += 1
            continue
        concept = concept_of(name, set_name)
        if not common.has_letters(concept):
            stats["no_letters"] += 1
            continue
        by_concept[concept].append(name)
    out = []
    for concept in sorted(by_concept):
        members = sorted(by_concept[concept], key=lambda n: variant_rank(n, concept))
        name = members[0]
        stats["variants_collapsed"] += len(members) - 1
        cats, alias_names = [], []
        for m in members:
            cats += [w for c in cats_of.get(m, ()) for w in category_words(c)]
            alias_names += [concept_of(a, set_name) for a in aliases_of.get(m, ())]
        title = concept
        aliases = common.clean_names(alias_names, exclude=[title])
        caption_words = common.clean_keywords(cats + aliases, exclude=[title], limit=12)
        title_words = [w for w in title.split() if len(w) > 2 and w not in _STOP and not w.isdigit()]
        keywords = common.clean_keywords(cats + aliases + title_words)
        caption = common.sentence(title)
        if caption_words:
            caption += " Keywords: " + ", ".join(caption_words) + "."
        out.append({"name": name, "concept": concept, "title": title, "keywords": keywords,
                    "names": aliases, "caption": caption,
                    "svg": svg_document(icons[name], width, height)})
    return out


def group_key(concept):
    return "icon:" + re.sub(r"[\W_]+", " ", concept.casefold()).strip()


def load_set(cache_dir, set_name):
    pkg = os.path.join(cache_dir, "iconify-json-" + set_name, "package")
    with open(os.path.join(pkg, "icons.json"), encoding="utf-8") as f:
        icons_json = json.load(f)
    metadata = {}
    if os.path.isfile(os.path.join(pkg, "metadata.json")):
        with open(os.path.join(pkg, "metadata.json"), encoding="utf-8") as f:
            metadata = json.load(f)
    return icons_json, metadata


def build(cache_dir, log=print):
    png_root = os.path.join(cache_dir, PNG_OUT)
    records, per_set = [], collections.OrderedDict()
    for set_name, _version, _licence in ICON_SETS:
        pkg = os.path.join(cache_dir, "iconify-json-" + set_name, "package", "icons.json")
        if not os.path.isfile(pkg):
            raise FileNotFoundError("@iconify-json/%s not found: %s (run scripts/fetch_data.sh)" % (set_name, pkg))
        stats = collections.Counter()
        concepts = concepts_of_set(set_name, *load_set(cache_dir, set_name), stats=stats)
        per_set[set_name] = (len(concepts), stats)
        for c in concepts:
            records.append({"image": os.path.join(png_root, set_name, c["name"] + ".png"),
                            "svg": c["svg"], "caption": c["caption"], "title": c["title"],
                            "keywords": c["keywords"], "names": c["names"],
                            "group": group_key(c["concept"]), "set": set_name})
    records, errors = render.render_records(records, RENDER_SIZE, os.path.join(png_root, ".complete"),
                                            log=log, what="icons", prefix="icons")
    merged = common.merge_groups_by_content(records)
    common.assign_splits(records)
    for set_name, (n, stats) in per_set.items():
        log("icons: %s: %d concepts (%d variants collapsed, %d brand/logo and %d hidden icons left out)"
            % (set_name, n, stats["variants_collapsed"], stats["brand"], stats["hidden"]))
    log("icons: %d images, %d concepts (groups; %d merged for byte-identical images), %d failed to render"
        % (len(records), len({r["group"] for r in records}), merged, len(errors)))
    return records
