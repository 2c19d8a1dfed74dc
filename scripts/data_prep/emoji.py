"""Emoji: Google (Noto) and Twitter (Twemoji) 64 px PNGs from emoji-datasource, captioned
with the CLDR labels and tags of emojibase-data; manifest keywords also take emojilib's
keyword lists (the caption does not, so that it stays as it was).

Group = the base emoji ("emoji:<base hexcode without FE0F>"): its skin-tone variants and
both styles stay in one split. Apple and Facebook images are never used (not free).
"""

import json
import os

from . import common

STYLES = ("google", "twitter")
IMAGE_SIZE = 64


def normalize_hex(code):
    """Canonical hexcode for matching: uppercase, no FE0F (variation selector-16).

    emoji-datasource writes fully-qualified sequences ("263A-FE0F", "1F441-FE0F-200D-1F5E8-FE0F")
    while emojibase sometimes omits the qualifier, so both sides are compared without it."""
    parts = [p.strip().upper() for p in code.replace("_", "-").split("-") if p.strip()]
    return "-".join(p.lstrip("0").rjust(4, "0") for p in parts if p != "FE0F")


def clean_tags(tags, label):
    out, seen = [], {common.comparable(label)}
    for tag in tags or ():
        tag = common.clean_text(str(tag))
        key = common.comparable(tag)
        if not tag or key in seen:
            continue
        seen.add(key)
        out.append(tag)
    return out


def make_caption(label, tags):
    """'grinning face. Keywords: face, grin.' (label kept in CLDR's lowercase form)."""
    label = common.clean_text(label)
    tags = clean_tags(tags, label)
    caption = common.sentence(label)
    if tags:
        caption += " Keywords: " + ", ".join(tags) + "."
    return caption


def load_emojibase(path):
    """{normalized hexcode: (label, tags, normalized base hexcode)} for emoji and skins."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    table = {}
    for entry in data:
        base = normalize_hex(entry["hexcode"])
        tags = entry.get("tags") or []
        table.setdefault(base, (entry["label"], tags, base))
        for skin in entry.get("skins") or ():
            table.setdefault(normalize_hex(skin["hexcode"]), (skin["label"], tags, base))
    return table


def iter_datasource(entries):
    """(unified, image file, entry or variation dict, base unified) for every base emoji and
    every skin-tone variation, in emoji-datasource's sort order."""
    for entry in sorted(entries, key=lambda e: (e.get("sort_order", 0), e["unified"])):
        yield entry["unified"], entry["image"], entry, entry["unified"]
        variations = entry.get("skin_variations") or {}
        for key in sorted(variations):
            var = variations[key]
            yield var["unified"], var["image"], var, entry["unified"]


def fallback_label(entry):
    name = entry.get("name") or entry.get("short_name") or entry["unified"]
    return name.lower()


def hex_of(char):
    """Normalized hexcode of an emoji string ("😀" -> "1F600")."""
    return normalize_hex("-".join("%X" % ord(c) for c in char))


def load_emojilib(path):
    """{normalized hexcode: [keywords]} from emojilib's dist/emoji-en-US.json (emoji
    character -> keyword list, the first one being its snake_case name)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return {hex_of(char): list(words) for char, words in data.items()}


def keywords_for(label, tags, extra=()):
    """Manifest keywords: emojibase tags then emojilib keywords (but its first one, the
    emoji's snake_case name), lowercased, '_' to spaces, de-duplicated, the label itself and
    emoticons (":D") left out."""
    return common.clean_keywords(list(tags or ()) + list(extra or ())[1:], exclude=[label])


def names_for(labels, extra=()):
    """emojilib's name for the emoji ("relaxed" for "smiling face") when it is not the label."""
    return common.clean_names([w.replace("_", " ") for w in list(extra or ())[:1]], exclude=labels)


def build_records(datasource_entries, emojibase, image_dirs, stats=None, emojilib=None):
    """Records for every (emoji, style) whose image exists.

    datasource_entries: emoji.json of emoji-datasource; emojibase: load_emojibase() table;
    image_dirs: {style: folder holding the 64 px PNGs}; emojilib: load_emojilib() table
    (optional; a skin-tone variant takes its base emoji's emojilib keywords)."""
    emojilib = emojilib or {}
    stats = stats if stats is not None else {}
    for key in ("images", "missing_on_disk", "no_image_flag", "label_fallback", "emojilib"):
        stats.setdefault(key, 0)
    base_entries = {e["unified"]: e for e in datasource_entries}
    records = []
    for unified, image, item, base_unified in iter_datasource(datasource_entries):
        norm = normalize_hex(unified)
        match = emojibase.get(norm)
        if match is not None:
            label, tags, _ = match
        else:
            base = base_entries[base_unified]
            base_match = emojibase.get(normalize_hex(base_unified))
            if unified == base_unified:
                label, tags = fallback_label(base), base.get("short_names") or []
            else:  # a skin-tone variation unknown to emojibase: base label + tone
                base_label = base_match[0] if base_match else fallback_label(base)
                label, tags = base_label, (base_match[1] if base_match else [])
            stats["label_fallback"] += 1
        caption = make_caption(label, tags)
        title = common.clean_title(label)
        extra = emojilib.get(norm) or emojilib.get(normalize_hex(base_unified)) or ()
        stats["emojilib"] += bool(extra)
        stats["emojilib_missing"] = stats.get("emojilib_missing", 0) + (not extra)
        keywords = keywords_for(title, tags, extra)
        base_label = (emojibase.get(normalize_hex(base_unified)) or (title,))[0]
        names = names_for([title, base_label], extra)
        group = "emoji:" + normalize_hex(base_unified)
        for style in STYLES:
            if not item.get("has_img_" + style, False):
                stats["no_image_flag"] += 1
                continue
            path = os.path.join(image_dirs[style], image)
            if not os.path.isfile(path):
                stats["missing_on_disk"] += 1
                continue
            records.append({"image": path, "caption": caption, "group": group, "style": style,
                            "title": title, "keywords": keywords, "names": names})
            stats["images"] += 1
    return records


def build(cache_dir, log=print):
    base_path = os.path.join(cache_dir, "emojibase-data", "package", "en", "data.json")
    image_dirs, datasource = {}, None
    for style in STYLES:
        pkg = os.path.join(cache_dir, "emoji-datasource-" + style, "package")
        if not os.path.isdir(pkg):
            raise FileNotFoundError("emoji-datasource-%s not found in %s (run scripts/fetch_data.sh)"
                                    % (style, pkg))
        image_dirs[style] = os.path.join(pkg, "img", style, str(IMAGE_SIZE))
        if datasource is None:  # emoji.json is the same in every emoji-datasource-* package
            with open(os.path.join(pkg, "emoji.json"), encoding="utf-8") as f:
                datasource = json.load(f)
    if not os.path.isfile(base_path):
        raise FileNotFoundError("emojibase-data not found: %s (run scripts/fetch_data.sh)" % base_path)
    lib_path = os.path.join(cache_dir, "emojilib", "package", "dist", "emoji-en-US.json")
    if not os.path.isfile(lib_path):
        raise FileNotFoundError("emojilib not found: %s (run scripts/fetch_data.sh)" % lib_path)
    emojilib = load_emojilib(lib_path)
    stats = {}
    records = build_records(datasource, load_emojibase(base_path), image_dirs, stats, emojilib)
    merged = common.merge_groups_by_content(records)
    common.assign_splits(records)
    per_style = {s: sum(1 for r in records if r["style"] == s) for s in STYLES}
    log("emoji: %d base emoji, %s images; %d captions from emoji-datasource names (no emojibase "
        "match); %d listed images missing on disk; %d without a %s image; %d groups merged into "
        "others because they share byte-identical images; emojilib keywords for %d of %d emoji"
        % (len(datasource), ", ".join("%d %s" % (n, s) for s, n in per_style.items()),
           stats["label_fallback"], stats["missing_on_disk"], stats["no_image_flag"], "/".join(STYLES),
           merged, stats["emojilib"], stats["emojilib"] + stats["emojilib_missing"]))
    return records
