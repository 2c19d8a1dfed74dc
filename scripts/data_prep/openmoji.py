"""OpenMoji (npm openmoji, CC BY-SA 4.0): every concept of data/openmoji.json in two styles,
colour and black line art, rendered from the shipped SVGs to 72 px PNGs.

Caption "<annotation>. Keywords: <tags>." as in the emoji set (skin-tone variants take their
base emoji's tags). Group: a Unicode emoji gets the emoji set's group ("emoji:<base hex>",
after the emoji set's merging of byte-identical pictures), so one emoji concept sits in one
split in every style and source; OpenMoji's own extras (private-use hexcodes, extra
Unicode symbols that are not emoji) get "openmoji:<hex>".
"""

import collections
import json
import os

from . import common, emoji, render

PACKAGE = os.path.join("openmoji", "package")
PNG_OUT = "openmoji-png"
STYLES = ("color", "black")
RENDER_SIZE = 72


def split_tags(text):
    if isinstance(text, list):
        return text
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def emoji_group_map(cache_dir, log=print):
    """{normalized base hexcode: the emoji set's final group id} (after its content merge),
    or {} when the emoji set's inputs are not in the cache."""
    try:
        pkg = os.path.join(cache_dir, "emoji-datasource-google", "package")
        with open(os.path.join(pkg, "emoji.json"), encoding="utf-8") as f:
            datasource = json.load(f)
        table = emoji.load_emojibase(os.path.join(cache_dir, "emojibase-data", "package", "en", "data.json"))
    except FileNotFoundError:
        log("openmoji: emoji set not in the cache: groups are not merged like the emoji set's")
        return {}
    dirs = {s: os.path.join(cache_dir, "emoji-datasource-" + s, "package", "img", s, str(emoji.IMAGE_SIZE))
            for s in emoji.STYLES}
    records = emoji.build_records(datasource, table, dirs)
    before = [r["group"] for r in records]
    common.merge_groups_by_content(records)
    mapping = {}
    for g, r in zip(before, records):
        mapping[g[len("emoji:"):]] = r["group"]
    for entry in datasource:  # emoji without an image still name a concept
        mapping.setdefault(emoji.normalize_hex(entry["unified"]), "emoji:" + emoji.normalize_hex(entry["unified"]))
    return mapping


def group_for(entry, emoji_groups):
    base = entry.get("skintone_base_hexcode") or entry["hexcode"]
    norm = emoji.normalize_hex(base)
    if norm in emoji_groups:
        return emoji_groups[norm]
    return "openmoji:" + norm


def build_records(entries, svg_dirs, png_root, emoji_groups, emojilib=None):
    """Records (two per concept, before rendering) for openmoji.json's entries whose SVGs exist.
    emojilib (optional, emoji.load_emojilib()) adds emojilib's name to "names"."""
    emojilib = emojilib or {}
    by_hex = {e["hexcode"]: e for e in entries}
    records, missing = [], 0
    for entry in entries:
        label = common.clean_text(entry.get("annotation") or "")
        if not label:
            continue
        tags = split_tags(entry.get("tags"))
        om_tags = split_tags(entry.get("openmoji_tags"))
        base = by_hex.get(entry.get("skintone_base_hexcode") or "")
        if base is not None and not tags:
            tags = split_tags(base.get("tags"))
            om_tags = om_tags or split_tags(base.get("openmoji_tags"))
        caption = emoji.make_caption(label, tags)
        title = common.clean_title(label)
        keywords = common.clean_keywords(tags + om_tags, exclude=[title])
        group = group_for(entry, emoji_groups)
        names = emoji.names_for([title], emojilib.get(emoji.normalize_hex(entry["hexcode"])))
        for style in STYLES:
            svg = os.path.join(svg_dirs[style], entry["hexcode"] + ".svg")
            if not os.path.isfile(svg):
                missing += 1
                continue
            records.append({"svg": svg, "image": os.path.join(png_root, style, entry["hexcode"] + ".png"),
                            "caption": caption, "title": title, "keywords": keywords,
                            "names": names, "group": group, "style": style})
    return records, missing


def drop_shared_pictures(records, key=None):
    """Leave out every image whose bytes are shared by images of different groups (the line
    art of most flags is one blank flag outline): merging their groups instead, as the other
    sets do, would tie hundreds of emoji concepts into one group and move them away from the
    emoji set's splits. Returns (kept records, number dropped)."""
    key = key or (lambda r: common.file_digest(r["image"]))
    groups_of = collections.defaultdict(set)
    digests = [key(r) for r in records]
    for d, r in zip(digests, records):
        groups_of[d].add(r["group"])
    kept = [r for d, r in zip(digests, records) if len(groups_of[d]) == 1]
    return kept, len(records) - len(kept)


def build(cache_dir, log=print):
    pkg = os.path.join(cache_dir, PACKAGE)
    data_path = os.path.join(pkg, "data", "openmoji.json")
    if not os.path.isfile(data_path):
        raise FileNotFoundError("openmoji not found: %s (run scripts/fetch_data.sh)" % data_path)
    with open(data_path, encoding="utf-8") as f:
        entries = json.load(f)
    emoji_groups = emoji_group_map(cache_dir, log)
    png_root = os.path.join(cache_dir, PNG_OUT)
    lib_path = os.path.join(cache_dir, "emojilib", "package", "dist", "emoji-en-US.json")
    emojilib = emoji.load_emojilib(lib_path) if os.path.isfile(lib_path) else {}
    records, missing = build_records(entries, {s: os.path.join(pkg, s, "svg") for s in STYLES},
                                     png_root, emoji_groups, emojilib)
    records, errors = render.render_records(records, RENDER_SIZE, os.path.join(png_root, ".complete"),
                                            log=log, what="OpenMoji SVGs", prefix="openmoji")
    records, dropped = drop_shared_pictures(records)
    common.assign_splits(records)
    kinds = collections.Counter(r["group"].split(":", 1)[0] for r in records)
    log("openmoji: %d concepts, %d images (%s); %d SVGs missing, %d failed to render; %d emoji "
        "images grouped with the emoji set, %d OpenMoji extras; %d images dropped because the same picture "
        "stands for several concepts (e.g. line-art flags)" % (len(entries), len(records),
                    ", ".join("%d %s" % (sum(1 for r in records if r["style"] == s), s) for s in STYLES),
                    missing, len(errors), kinds["emoji"], kinds["openmoji"], dropped))
    return records
