"""More emoji styles from npm @iconify-json/* emoji sets (EmojiOne 2, Firefox OS emoji,
Streamline emojis, Noto v1), matched to the emoji set's concepts by name.

An icon name ("grinning-face", "waving-hand-light-skin-tone", "flag-for-germany") is matched
to a normalized CLDR label (emojibase) or Unicode name / short name (emoji-datasource); an
unmatched icon is left out. Caption, title and keywords are the emoji set's; the group is
the emoji set's group (after its content merge), so an emoji is in one split in every style.
"""

import collections
import json
import os
import re
import unicodedata

from . import common, emoji, icons, openmoji, render

# (set, npm version, licence)
EMOJI_STYLE_SETS = (
    ("emojione", "1.2.3", "CC-BY-4.0"),
    ("fxemoji", "1.2.2", "Apache-2.0"),
    ("streamline-emojis", "1.2.4", "CC-BY-4.0"),
    ("noto-v1", "1.2.5", "Apache-2.0"),
)
PNG_OUT = os.path.join("icons", "png")
MARKER = ".complete-emoji-styles"
RENDER_SIZE = 72


def name_key(text):
    """'Waving hand: light skin tone' / 'waving-hand-light-skin-tone' -> 'waving hand light
    skin tone'; "four o'clock" -> 'four oclock'; 'Côte d’Ivoire' -> 'cote divoire'."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"['’]", "", text.replace("&", " and "))
    text = re.sub(r"[^\w]+|_", " ", text)
    return " ".join(text.split())


def lookup(table, name):
    """table value for an icon name: as is, without a variant number ('bird-1'), without
    'flag for', or with every space removed ('palmtree', Firefox OS style)."""
    key = name_key(name)
    for k in (key, re.sub(r"(?: \d+)+$", "", key), re.sub(r"^flag for ", "flag ", key)):
        if k in table:
            return table[k]
        if k.replace(" ", "") in table:
            return table[k.replace(" ", "")]
    return None


def concept_table(datasource, emojibase, emojilib):
    """{name key: (label, tags, emojilib keywords, normalized base hexcode)} for every emoji
    and skin-tone variant, under its CLDR label, Unicode name and short names."""
    table = {}

    def add(key, value):
        if key:
            table.setdefault(name_key(key), value)
            table.setdefault(name_key(key).replace(" ", ""), value)

    for unified, _image, item, base_unified in emoji.iter_datasource(datasource):
        norm = emoji.normalize_hex(unified)
        match = emojibase.get(norm)
        base = emoji.normalize_hex(base_unified)
        if match is None:
            continue
        label, tags, _ = match
        value = (label, tags, emojilib.get(norm) or emojilib.get(base) or (), base)
        add(label, value)
        for alt in [item.get("name")] + list(item.get("short_names") or ()):
            add(alt, value)
        if label.startswith("flag: "):
            add(label[6:], value)  # streamline names flags after the country
    return table


def match_icons(names, table, aliases=None):
    """{icon name: table value} for the icon names (or one of their aliases) found in table."""
    aliases_of = collections.defaultdict(list)
    for alias, spec in (aliases or {}).items():
        aliases_of[spec.get("parent")].append(alias)
    out = {}
    for name in names:
        for candidate in [name] + aliases_of.get(name, []):
            value = lookup(table, candidate)
            if value is not None:
                out[name] = value
                break
    return out


def build(cache_dir, log=print):
    pkg = os.path.join(cache_dir, "emoji-datasource-google", "package", "emoji.json")
    with open(pkg, encoding="utf-8") as f:
        datasource = json.load(f)
    emojibase = emoji.load_emojibase(os.path.join(cache_dir, "emojibase-data", "package", "en", "data.json"))
    lib_path = os.path.join(cache_dir, "emojilib", "package", "dist", "emoji-en-US.json")
    emojilib = emoji.load_emojilib(lib_path) if os.path.isfile(lib_path) else {}
    table = concept_table(datasource, emojibase, emojilib)
    groups = openmoji.emoji_group_map(cache_dir, log)
    png_root = os.path.join(cache_dir, PNG_OUT)
    records, jobs, counts = [], [], collections.OrderedDict()
    for set_name, _version, _licence in EMOJI_STYLE_SETS:
        icons_json, _meta = icons.load_set(cache_dir, set_name)
        shown = {n: i for n, i in (icons_json.get("icons") or {}).items() if not i.get("hidden")}
        matched = match_icons(sorted(shown), table, icons_json.get("aliases"))
        counts[set_name] = (len(shown), len(matched))
        width, height = icons_json.get("width", 16), icons_json.get("height", 16)
        for name in sorted(matched):
            label, tags, extra, base = matched[name]
            title = common.clean_title(label)
            png = os.path.join(png_root, set_name, name + ".png")
            jobs.append((icons.svg_document(shown[name], width, height, RENDER_SIZE), png))
            records.append({"image": png, "caption": emoji.make_caption(label, tags), "title": title,
                            "keywords": emoji.keywords_for(title, tags, extra),
                            "names": emoji.names_for([title], extra),
                            "group": groups.get(base, "emoji:" + base), "set": set_name})
    errors = render.render_all(jobs, RENDER_SIZE, log=log, what="emoji style icons")
    records = [r for r in records if r["image"] not in errors]
    if not errors:
        common.write_atomic(os.path.join(png_root, MARKER), b"rendered\n")
    records, dropped = openmoji.drop_shared_pictures(records)
    common.assign_splits(records)
    for set_name, (n, m) in counts.items():
        log("emoji_styles: %s: %d of %d icons matched to an emoji" % (set_name, m, n))
    log("emoji_styles: %d images, %d failed to render, %d dropped (one picture for several emoji)"
        % (len(records), len(errors), dropped))
    return records
