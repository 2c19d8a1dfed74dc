#!/usr/bin/python3
"""Unit tests of scripts/prepare_data.py and scripts/data_prep/ on tiny synthetic inputs.

    /usr/bin/python3 tests/prepare_data_test.py        (from the repository root; < 5 s)

Standard library only; needs no network and no downloaded data.
"""

import collections
import gzip
import hashlib
import io
import json
import os
import struct
import sys
import tempfile
import unittest
import zlib
from contextlib import redirect_stdout

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

from data_prep import (common, emoji, emoji_styles, fashion_mnist, icons, openclipart,  # noqa: E402
                       openmoji, render, tuxpaint)
from data_prep.png import PNG_SIGNATURE, decode_png_simple, encode_png  # noqa: E402
import prepare_data  # noqa: E402


def quiet(*_args, **_kwargs):
    pass


class SplitTest(unittest.TestCase):
    def test_bucket_is_sha1_based_and_stable(self):
        expected = int.from_bytes(hashlib.sha1(b"emoji:1F600").digest()[:8], "big") % 100
        self.assertEqual(common.bucket("emoji:1F600"), expected)
        self.assertEqual(common.split_for_group("emoji:1F600"), common.split_for_group("emoji:1F600"))

    def test_split_thresholds(self):
        for g in ("a", "b", "concept-7", "openclipart:chemistry flask"):
            b = common.bucket(g)
            want = "train" if b < 80 else "val" if b < 90 else "test"
            self.assertEqual(common.split_for_group(g), want)

    def test_split_proportions(self):
        counts = common.count_splits({"split": common.split_for_group("g%d" % i)} for i in range(20000))
        self.assertAlmostEqual(counts["train"] / 20000, 0.80, delta=0.015)
        self.assertAlmostEqual(counts["val"] / 20000, 0.10, delta=0.015)
        self.assertAlmostEqual(counts["test"] / 20000, 0.10, delta=0.015)

    def test_assign_splits_keeps_groups_together(self):
        records = [{"group": "g%d" % (i % 37)} for i in range(500)]
        common.assign_splits(records)
        by_group = {}
        for r in records:
            by_group.setdefault(r["group"], set()).add(r["split"])
        self.assertTrue(all(len(s) == 1 for s in by_group.values()))
        self.assertEqual(len({r["split"] for r in records}), 3)

    def test_oversized_groups_go_to_train(self):
        # Find a group id that hashes to test, then make it big.
        big = next("big%d" % i for i in range(1000) if common.split_for_group("big%d" % i) == "test")
        records = [{"group": big} for _ in range(60)] + [{"group": big + "-small"}]
        common.assign_splits(records, max_eval_group=50)
        self.assertEqual({r["split"] for r in records[:60]}, {"train"})
        self.assertEqual(records[-1]["split"], common.split_for_group(big + "-small"))


    def test_merge_groups_by_content(self):
        records = [{"image": "a", "group": "g3"}, {"image": "b", "group": "g1"},
                   {"image": "c", "group": "g2"}, {"image": "d", "group": "g2"},
                   {"image": "e", "group": "g4"}]
        content = {"a": 1, "b": 2, "c": 1, "d": 3, "e": 4}  # a and c are the same picture
        merged = common.merge_groups_by_content(records, key=lambda r: content[r["image"]])
        self.assertEqual(merged, 1)
        self.assertEqual([r["group"] for r in records], ["g2", "g1", "g2", "g2", "g4"])
        chain = [{"image": "x", "group": "z"}, {"image": "y", "group": "z"},
                 {"image": "x2", "group": "b"}, {"image": "y2", "group": "a"}]
        same = {"x": 1, "x2": 1, "y": 2, "y2": 2}   # z~b via x, z~a via y: all one group "a"
        common.merge_groups_by_content(chain, key=lambda r: same[r["image"]])
        self.assertEqual({r["group"] for r in chain}, {"a"})


class TextTest(unittest.TestCase):
    def test_tags_comments_entities(self):
        raw = ('<!-- Creative Commons --><a rel="license" href="http://x.org/">Public&nbsp;Domain</a>'
               '<br />A &quot;big&quot;   flask &amp;amp; tube')
        self.assertEqual(common.clean_text(raw), 'Public Domain A "big" flask & tube')

    def test_double_escaped_markup_is_removed(self):
        self.assertEqual(common.clean_text("&lt;b&gt;Bold&lt;/b&gt; text &amp;eacute;t&amp;#233;"),
                         "Bold text été")

    def test_urls_emails_whitespace(self):
        self.assertEqual(common.clean_text("EPS from http://aiga.org/x ,\n\t see me@x.org  now"),
                         "EPS from, see now")
        self.assertEqual(common.clean_text("  a\n\n b  "), "a b")
        self.assertEqual(common.clean_text(""), "")

    def test_mojibake_is_repaired(self):
        # UTF-8 bytes once decoded as Latin-1 (an Open Clip Art title) or as Windows-1252.
        self.assertEqual(common.clean_text("L\u00c3\u00a9zard"), "L\u00e9zard")
        self.assertEqual(common.clean_text("caf\u00c3\u00a9 \u00e2\u20ac\u201c menu"),
                         "caf\u00e9 \u2013 menu")

    def test_correct_accents_are_left_alone(self):
        for text in ("caf\u00e9", "\u00c3 la carte", "Gr\u00fc\u00dfe", "na\u00efve \u2013 \u65e5\u672c"):
            self.assertEqual(common.clean_text(text), text)

    def test_truncate_and_sentence(self):
        self.assertEqual(common.truncate("short", 10), "short")
        text = "First sentence here. Second sentence is long enough to be cut off somewhere."
        self.assertEqual(common.truncate(text, 40), "First sentence here.")
        self.assertTrue(common.truncate("word " * 30, 20).endswith("..."))
        self.assertEqual(common.sentence("Title"), "Title.")
        self.assertEqual(common.sentence("Really?"), "Really?")


SVG_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
     xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:cc="http://web.resource.org/cc/">
  <metadata><rdf:RDF><cc:Work rdf:about="">
    <dc:title>{title}</dc:title>
    <dc:description>{description}</dc:description>
    <dc:subject><rdf:Bag>{keywords}</rdf:Bag></dc:subject>
    <dc:publisher><cc:Agent><dc:title>Open Clip Art Library</dc:title></cc:Agent></dc:publisher>
  </cc:Work></rdf:RDF></metadata>
  <rect width="1" height="1"/>
</svg>
"""


def make_svg(title="", description="", keywords=()):
    lis = "".join("<rdf:li>%s</rdf:li>" % k for k in keywords)
    return SVG_TEMPLATE.format(title=title, description=description, keywords=lis).encode("utf-8")


class OpenClipArtTest(unittest.TestCase):
    def test_metadata_ignores_agent_titles(self):
        meta = openclipart.parse_svg_metadata(make_svg("", "", ["a"]))
        self.assertEqual(meta["title"], "")
        meta = openclipart.parse_svg_metadata(make_svg("Flask", "A &amp;quot;flask&amp;quot;", ["lab", ""]))
        self.assertEqual(meta["title"], "Flask")
        self.assertEqual(meta["keywords"], ["lab", ""])
        self.assertEqual(openclipart.clean_description(meta["description"], "Flask"), 'A "flask"')

    def test_regex_fallback_on_broken_xml(self):
        broken = make_svg("Broken &nope; title", "", ["k1", "k2"]).replace(b"</svg>", b"")
        meta = openclipart.parse_svg_metadata(broken)
        self.assertEqual(meta["title"], "Broken &nope; title")
        self.assertEqual(meta["keywords"], ["k1", "k2"])

    def test_description_cleaning(self):
        title = "Phone"
        boiler = ('<!-- Creative Commons Public Domain --><a href="http://creativecommons.org/">x</a>'
                  "This work is dedicated to the Public Domain.")
        self.assertEqual(openclipart.clean_description(boiler, title), "")
        self.assertEqual(openclipart.clean_description("EPS converted from http://aiga.org", title), "")
        self.assertEqual(openclipart.clean_description("phone", title), "")
        self.assertEqual(openclipart.clean_description(":)", title), "")
        self.assertEqual(openclipart.clean_description("HASH(0x8a0a390)", title), "")
        self.assertEqual(openclipart.clean_description("A red phone. Made with Inkscape", title), "A red phone.")

    def test_keywords(self):
        kws = ["", "hash", "HASH(0x8a0a390)", "signs_and_symbols", "Food", "food", "11",
               "&eacute;toile", "unsorted"]
        self.assertEqual(openclipart.clean_keywords(kws, exclude=["Pie"]),
                         ["signs and symbols", "Food", "étoile"])

    def test_group_key_variants(self):
        key = openclipart.group_key
        self.assertEqual(key("Chemistry Flask"), "chemistry flask")
        self.assertEqual(key("chemistry_flask_01"), "chemistry flask")
        self.assertEqual(key("Chemistry Flask 2"), "chemistry flask")
        self.assertEqual(key("magnolia-white"), key("Magnolia White"))
        self.assertEqual(key("Aircraft1"), "aircraft")
        self.assertEqual(key("Castilla y León"), "castilla y león")
        self.assertEqual(key("45 rpm record"), "45 rpm record")
        self.assertEqual(key("home13", strip_all_digits=True), "home")

    def test_humanize_stem(self):
        self.assertEqual(openclipart.humanize_stem("navigation_display_panel_01"), "navigation display panel")
        self.assertEqual(openclipart.humanize_stem("BasseTemperature"), "Basse Temperature")
        self.assertEqual(openclipart.humanize_stem("star_97pt37step"), "star polygon with 97 points, step 37")
        self.assertEqual(openclipart.humanize_stem("ornamental_h_10"),
                         "ten of hearts playing card, ornamental style")

    def test_describe_titles_collections_and_fallback(self):
        items = [{"stem": "flask_01", "title": "Flask", "description": "", "keywords": ["lab"]},
                 {"stem": "flask_02", "title": "Flask 2", "description": "", "keywords": []},
                 {"stem": "navigation_panel_01", "title": "", "description": "", "keywords": []}]
        items += [{"stem": name, "title": "Etiquette Icons", "description": "", "keywords": ["icons"]}
                  for name in ("coffee", "wine", "glass", "rollerblades", "gramophone", "tv", "phone", "car")]
        found = openclipart.describe(items)
        self.assertEqual(found, {"etiquette icons"})  # case-folded exact titles
        self.assertEqual(items[0]["caption"], "Flask. Keywords: lab.")
        self.assertEqual(items[0]["group"], items[1]["group"])
        self.assertEqual(items[2]["caption"], "Navigation panel.")
        self.assertEqual(items[2]["group"], "openclipart:navigation panel")
        self.assertEqual(items[3]["caption"], "Coffee. Etiquette Icons. Keywords: icons.")
        self.assertNotEqual(items[3]["group"], items[4]["group"])

    def test_build_dedupes_symlinks_and_reads_svgs(self):
        with tempfile.TemporaryDirectory() as tmp:
            png_root = os.path.join(tmp, openclipart.PNG_SUBDIR)
            svg_root = os.path.join(tmp, openclipart.SVG_SUBDIR)
            for root in (png_root, svg_root):
                os.makedirs(os.path.join(root, "food"))
                os.makedirs(os.path.join(root, "science"))
            png = encode_png(b"\x00", 1, 1)
            for rel, svg in (("food/apple_01.png", make_svg("Apple", "", ["fruit"])),
                             ("science/flask_01.png", make_svg("", "", []))):
                with open(os.path.join(png_root, rel), "wb") as f:
                    f.write(png)
                with open(os.path.join(svg_root, rel[:-4] + ".svg"), "wb") as f:
                    f.write(svg)
            os.symlink("../food/apple_01.png", os.path.join(png_root, "science", "apple_01.png"))
            items = openclipart.build(tmp, log=quiet)
            self.assertEqual(len(items), 2)
            captions = sorted(it["caption"] for it in items)
            self.assertEqual(captions, ["Apple. Keywords: fruit.", "Flask."])
            self.assertTrue(all(os.path.isfile(it["image"]) for it in items))


class EmojiTest(unittest.TestCase):
    def test_normalize_hex(self):
        n = emoji.normalize_hex
        self.assertEqual(n("263A-FE0F"), n("263a"))
        self.assertEqual(n("1F441-FE0F-200D-1F5E8-FE0F"), "1F441-200D-1F5E8")
        self.assertEqual(n("0023-FE0F-20E3"), n("23-20E3"))
        self.assertNotEqual(n("1F44B-1F3FB"), n("1F44B"))

    def test_caption(self):
        self.assertEqual(emoji.make_caption("grinning face", ["face", "grin", "Grinning Face", "face"]),
                         "grinning face. Keywords: face, grin.")
        self.assertEqual(emoji.make_caption("flag: Germany", []), "flag: Germany.")

    def test_build_records_matching_groups_and_missing_files(self):
        emojibase_data = [
            {"label": "smiling face", "hexcode": "263A", "tags": ["face", "smile"]},
            {"label": "waving hand", "hexcode": "1F44B", "tags": ["hand", "wave"],
             "skins": [{"label": "waving hand: light skin tone", "hexcode": "1F44B-1F3FB"}]},
        ]
        datasource = [
            {"unified": "263A-FE0F", "image": "263a-fe0f.png", "sort_order": 2,
             "has_img_google": True, "has_img_twitter": True},
            {"unified": "1F44B", "image": "1f44b.png", "sort_order": 1,
             "has_img_google": True, "has_img_twitter": False,
             "skin_variations": {"1F3FB": {"unified": "1F44B-1F3FB", "image": "1f44b-1f3fb.png",
                                           "has_img_google": True, "has_img_twitter": True}}},
            {"unified": "1F9FF", "image": "1f9ff.png", "sort_order": 3, "name": "NAZAR AMULET",
             "short_names": ["nazar_amulet"], "has_img_google": True, "has_img_twitter": True},
        ]
        with tempfile.TemporaryDirectory() as tmp:
            dirs = {s: os.path.join(tmp, s) for s in emoji.STYLES}
            for d in dirs.values():
                os.makedirs(d)
            for style, name in (("google", "263a-fe0f.png"), ("twitter", "263a-fe0f.png"),
                                ("google", "1f44b.png"), ("google", "1f44b-1f3fb.png"),
                                ("google", "1f9ff.png")):  # twitter 1f44b-1f3fb.png missing
                with open(os.path.join(dirs[style], name), "wb") as f:
                    f.write(b"png")
            path = os.path.join(tmp, "data.json")
            with open(path, "w") as f:
                json.dump(emojibase_data, f)
            stats = {}
            records = emoji.build_records(datasource, emoji.load_emojibase(path), dirs, stats)
        self.assertEqual(stats["missing_on_disk"], 2)  # twitter skin tone + twitter nazar
        self.assertEqual(stats["no_image_flag"], 1)    # twitter 1F44B
        self.assertEqual(stats["label_fallback"], 1)   # nazar amulet: not in emojibase
        captions = [(r["caption"], r["style"], r["group"]) for r in records]
        self.assertEqual(captions, [
            ("waving hand. Keywords: hand, wave.", "google", "emoji:1F44B"),
            ("waving hand: light skin tone. Keywords: hand, wave.", "google", "emoji:1F44B"),
            ("smiling face. Keywords: face, smile.", "google", "emoji:263A"),
            ("smiling face. Keywords: face, smile.", "twitter", "emoji:263A"),
            ("nazar amulet.", "google", "emoji:1F9FF"),  # short name == label
        ])
        common.assign_splits(records)
        self.assertEqual(records[0]["split"], records[1]["split"])


def idx_bytes(dims, payload):
    return struct.pack(">HBB", 0, 8, len(dims)) + struct.pack(">%dI" % len(dims), *dims) + bytes(payload)


class FashionMnistTest(unittest.TestCase):
    def test_splits(self):
        self.assertEqual(fashion_mnist.split_for("test", 5), "test")
        splits = [fashion_mnist.split_for("train", i) for i in range(60000)]
        self.assertAlmostEqual(splits.count("val") / 60000, 0.10, delta=0.01)
        self.assertEqual(set(splits), {"train", "val"})
        self.assertEqual(fashion_mnist.group_for("train", 42), "fmnist-train-42")

    def test_captions(self):
        for label, phrases in enumerate(fashion_mnist.CLASS_PHRASES):
            seen = {fashion_mnist.caption_for(label, "fmnist-train-%d" % i) for i in range(200)}
            self.assertTrue(all(any(p in c for p in phrases) for c in seen))
            self.assertGreaterEqual(len(seen), 4)
        self.assertEqual(fashion_mnist.caption_for(9, "fmnist-test-3"), fashion_mnist.caption_for(9, "fmnist-test-3"))
        self.assertEqual(len(fashion_mnist.CLASS_NAMES), 10)

    def test_idx_to_png(self):
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "src")
            os.makedirs(src)
            images = {"train": [bytes(range(i, i + 6)) for i in range(3)], "test": [bytes([255] * 6)] * 2}
            labels = {"train": [0, 9, 3], "test": [1, 2]}
            for split, (img_name, lbl_name) in fashion_mnist.SOURCE_FILES.items():
                with gzip.open(os.path.join(src, img_name), "wb") as f:
                    f.write(idx_bytes((len(images[split]), 2, 3), b"".join(images[split])))
                with gzip.open(os.path.join(src, lbl_name), "wb") as f:
                    f.write(idx_bytes((len(labels[split]),), labels[split]))
            out = os.path.join(tmp, "png")
            got = fashion_mnist.convert(src, out, log=quiet, expected=None)
            self.assertEqual(got, labels)
            with open(os.path.join(out, "train", "00001.png"), "rb") as f:
                self.assertEqual(decode_png_simple(f.read()), (3, 2, 1, images["train"][1]))
            self.assertTrue(os.path.exists(os.path.join(out, ".complete")))
            mtime = os.path.getmtime(os.path.join(out, "test", "00000.png"))
            fashion_mnist.convert(src, out, log=quiet, expected=None)  # complete: no rewrite
            self.assertEqual(os.path.getmtime(os.path.join(out, "test", "00000.png")), mtime)
            with self.assertRaises(ValueError):
                fashion_mnist.convert(src, out, log=quiet)  # 3 != 60,000 images


class PngTest(unittest.TestCase):
    def test_signature_ihdr_and_zlib_stream(self):
        pixels = bytes((x * 9 + y * 3) % 256 for y in range(28) for x in range(28))
        data = encode_png(pixels, 28, 28, 1)
        self.assertEqual(data[:8], PNG_SIGNATURE)
        length, kind = struct.unpack(">I4s", data[8:16])
        self.assertEqual((length, kind), (13, b"IHDR"))
        self.assertEqual(struct.unpack(">IIBBBBB", data[16:29]), (28, 28, 8, 0, 0, 0, 0))
        self.assertEqual(struct.unpack(">I", data[29:33])[0], zlib.crc32(data[12:29]) & 0xFFFFFFFF)
        idat_len, idat_kind = struct.unpack(">I4s", data[33:41])
        self.assertEqual(idat_kind, b"IDAT")
        raw = zlib.decompress(data[41:41 + idat_len])
        self.assertEqual(len(raw), 28 * 29)
        self.assertEqual(b"".join(raw[r * 29 + 1:(r + 1) * 29] for r in range(28)), pixels)
        self.assertTrue(all(raw[r * 29] == 0 for r in range(28)))
        self.assertEqual(data[-12:], struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))

    def test_round_trip_rgb_and_errors(self):
        pixels = bytes(range(2 * 3 * 3))
        self.assertEqual(decode_png_simple(encode_png(pixels, 3, 2, 3)), (3, 2, 3, pixels))
        with self.assertRaises(ValueError):
            encode_png(b"\x00" * 5, 2, 2, 1)
        corrupted = bytearray(encode_png(b"\x00" * 4, 2, 2))
        corrupted[20] ^= 1
        with self.assertRaises(ValueError):
            decode_png_simple(bytes(corrupted))


class ManifestTest(unittest.TestCase):
    def test_write_manifest_relative_paths_and_atomicity(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "data", "manifests")
            image = os.path.join(tmp, "data", "cache", "x", "a.png")
            path = os.path.join(out, "set.jsonl")
            records = [{"image": image, "caption": "Été, \"quoted\"", "split": "val", "group": "g"}]
            self.assertTrue(common.write_manifest(path, records))
            self.assertFalse(common.write_manifest(path, records))  # unchanged: not rewritten
            self.assertEqual(os.listdir(out), ["set.jsonl"])        # no temp file left
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            self.assertEqual(len(lines), 1)
            self.assertEqual(json.loads(lines[0]), {"image": "../cache/x/a.png", "caption": "Été, \"quoted\"",
                                                    "split": "val", "group": "g"})
            self.assertEqual(list(json.loads(lines[0])), ["image", "caption", "split", "group"])

    def test_prepare_data_all_jsonl_and_table(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "manifests")
            os.makedirs(out)
            for name, split in (("emoji", "train"), ("openclipart", "test")):
                with open(os.path.join(out, name + ".jsonl"), "w") as f:
                    f.write(common.manifest_line("../x.png", "c", split, name) + "\n")
                # Stamps that match: prepare_data must not try to rebuild (no cache here).
                with open(os.path.join(out, "." + name + ".stamp"), "w") as f:
                    f.write(prepare_data.stamp_for(name, os.path.join(tmp, "cache")))
            buf = io.StringIO()
            with redirect_stdout(buf), open(os.devnull, "w") as devnull:
                stderr, sys.stderr = sys.stderr, devnull
                try:
                    rc = prepare_data.main(["--cache", os.path.join(tmp, "cache"), "--out", out,
                                            "--only", "emoji", "--only", "openclipart"])
                finally:
                    sys.stderr = stderr
            self.assertEqual(rc, 0)
            with open(os.path.join(out, "all.jsonl")) as f:
                rows = [json.loads(l) for l in f]
            self.assertEqual([r["group"] for r in rows], ["openclipart", "emoji"])
            self.assertIn("up to date", buf.getvalue())
            self.assertRegex(buf.getvalue(), r"\nall +1 +0 +1 +2 +2\n")


class ManifestFieldsTest(unittest.TestCase):
    def test_optional_fields_order_and_omission(self):
        line = common.manifest_line("a.png", "c", "train", "g", None, "red apple", ["fruit"], ["mela"])
        self.assertEqual(list(json.loads(line)), ["image", "caption", "split", "group", "title",
                                                  "keywords", "names"])
        line = common.manifest_line("a.png", "c", "train", "g", "3", "", [], None)
        self.assertEqual(list(json.loads(line)), ["image", "caption", "split", "group", "label"])

    def test_write_manifest_takes_fields_from_records(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m", "set.jsonl")
            records = [{"image": os.path.join(tmp, "a.png"), "caption": "A dog.", "split": "test",
                        "group": "g", "title": "dog", "keywords": ["dog", "animal"], "names": []}]
            common.write_manifest(path, records)
            row = common.read_manifest(path)[0]
            self.assertEqual(row["title"], "dog")
            self.assertEqual(row["keywords"], ["dog", "animal"])
            self.assertNotIn("names", row)

    def test_clean_keywords_names_title(self):
        self.assertEqual(common.clean_keywords(["Clip_Art", "Christmas_Tree", ":D", "face", "Face",
                                                "icon", "outline", "SVG", "x" * 50, "light"]),
                         ["christmas tree", "face", "light"])
        self.assertEqual(common.clean_keywords(["grinning face", "grin"], exclude=["Grinning Face"]), ["grin"])
        self.assertEqual(len(common.clean_keywords(["w%d" % i for i in range(40)])), common.MAX_KEYWORDS)
        self.assertEqual(common.clean_names(["Una mela", "una mela!", "", "x" * 81, "Ein Apfel"],
                                            exclude=["An apple"]), ["Una mela", "Ein Apfel"])
        self.assertEqual(common.clean_title(" A red apple. "), "A red apple")
        self.assertEqual(common.clean_title("Wait..."), "Wait...")


class EmojilibTest(unittest.TestCase):
    def test_emojilib_keywords_and_skin_tones(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "emoji-en-US.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"\U0001F44B": ["waving_hand", "Hands", "Gesture", ":)", "hand"],
                           "\u263A\uFE0F": ["relaxed", "smile"]}, f)
            table = emoji.load_emojilib(path)
        self.assertEqual(table["263A"], ["relaxed", "smile"])
        self.assertEqual(emoji.keywords_for("waving hand", ["hand", "wave"], table["1F44B"]),
                         ["hand", "wave", "hands", "gesture"])
        self.assertEqual(emoji.names_for(["smiling face"], table["263A"]), ["relaxed"])
        self.assertEqual(emoji.names_for(["waving hand"], table["1F44B"]), [])
        datasource = [{"unified": "1F44B", "image": "1f44b.png", "has_img_google": True,
                       "has_img_twitter": False,
                       "skin_variations": {"1F3FB": {"unified": "1F44B-1F3FB", "image": "1f44b-1f3fb.png",
                                                     "has_img_google": True, "has_img_twitter": False}}}]
        base = {"1F44B": ("waving hand", ["wave"], "1F44B"),
                "1F44B-1F3FB": ("waving hand: light skin tone", ["wave"], "1F44B")}
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("1f44b.png", "1f44b-1f3fb.png"):
                open(os.path.join(tmp, name), "wb").close()
            records = emoji.build_records(datasource, base, {"google": tmp, "twitter": tmp}, {}, table)
        self.assertEqual([r["title"] for r in records], ["waving hand", "waving hand: light skin tone"])
        self.assertEqual(records[1]["keywords"], ["wave", "hands", "gesture", "hand"])
        self.assertEqual(records[1]["names"], [])
        self.assertEqual(records[0]["caption"], "waving hand. Keywords: wave.")  # caption unchanged


class TuxPaintTest(unittest.TestCase):
    TXT = ("A red apple.\nit.utf8=Una mela rossa.\nde.utf8=Ein roter Apfel.\n"
           "en_GB.utf8=A red apple.\nfr.utf8=Une pomme rouge.\nzz.utf8=\n")

    def test_parse_description(self):
        english, tr = tuxpaint.parse_description(self.TXT)
        self.assertEqual(english, "A red apple.")
        self.assertEqual(list(tr), ["it", "de", "en_GB", "fr"])
        self.assertEqual(tuxpaint.make_names(tr, english), ["Una mela rossa", "Ein roter Apfel",
                                                            "Une pomme rouge"])

    def test_titles_and_base_names(self):
        self.assertEqual(tuxpaint.make_title("A red apple.", "apple"), "red apple")
        self.assertEqual(tuxpaint.make_title("Dollar sign.", "dollars_1_dollar"), "dollar sign")
        self.assertEqual(tuxpaint.make_title("Eat your bread!", "bread"), "bread")
        self.assertEqual(tuxpaint.make_title("A Canadian dollar. It is named after a bird.", "x"),
                         "Canadian dollar")
        self.assertEqual(tuxpaint.base_name("A_filled"), "a")
        self.assertEqual(tuxpaint.base_name("tugboat_mirror"), "tugboat")
        self.assertEqual(tuxpaint.base_name("Brown_slug"), "brown slug")
        self.assertEqual(tuxpaint.make_keywords("red apple", os.path.join("food", "fruit", "cartoon")),
                         ["red", "apple", "fruit", "food"])

    def test_scan_and_records(self):
        with tempfile.TemporaryDirectory() as tmp:
            d = os.path.join(tmp, "food", "fruit")
            os.makedirs(d)
            for name, data in (("apple.png", encode_png(b"\x00", 1, 1)), ("apple.txt", self.TXT),
                               ("apple_mirror.png", b"x"), ("pear.svg", "<svg/>"),
                               ("pear.txt", "A pear.\n"), ("plum.txt", "A plum.\n")):
                with open(os.path.join(d, name), "wb" if isinstance(data, bytes) else "w") as f:
                    f.write(data)
            stamps = tuxpaint.scan(tmp)
            self.assertEqual([s[1] for s in stamps], ["apple", "pear"])  # plum: no image
            records = tuxpaint.build_records(stamps, os.path.join(tmp, "png"))
        self.assertEqual(records[0]["caption"], "A red apple.")
        self.assertEqual(records[0]["group"], "tuxpaint:apple")
        self.assertEqual(records[1]["svg"].rsplit(os.sep, 1)[1], "pear.svg")
        self.assertTrue(records[1]["image"].endswith(os.path.join("png", "food", "fruit", "pear.png")))


class OpenMojiTest(unittest.TestCase):
    def test_groups_follow_the_emoji_set(self):
        groups = {"1F44B": "emoji:1F44B", "1F1F3-1F1F4": "emoji:1F1E7-1F1FB"}  # merged flag
        g = openmoji.group_for
        self.assertEqual(g({"hexcode": "1F44B-1F3FB", "skintone_base_hexcode": "1F44B"}, groups), "emoji:1F44B")
        self.assertEqual(g({"hexcode": "1F1F3-1F1F4"}, groups), "emoji:1F1E7-1F1FB")
        self.assertEqual(g({"hexcode": "E0A0", "skintone_base_hexcode": ""}, groups), "openmoji:E0A0")

    def test_records_and_shared_pictures(self):
        entries = [{"hexcode": "1F44B", "annotation": "waving hand", "tags": "hand, wave",
                    "openmoji_tags": "hello", "skintone_base_hexcode": ""},
                   {"hexcode": "1F44B-1F3FB", "annotation": "waving hand: light skin tone", "tags": "",
                    "openmoji_tags": "", "skintone_base_hexcode": "1F44B"}]
        with tempfile.TemporaryDirectory() as tmp:
            dirs = {s: os.path.join(tmp, s) for s in openmoji.STYLES}
            for d in dirs.values():
                os.makedirs(d)
                for e in entries:
                    open(os.path.join(d, e["hexcode"] + ".svg"), "w").close()
            records, missing = openmoji.build_records(entries, dirs, os.path.join(tmp, "png"), {"1F44B": "emoji:1F44B"})
        self.assertEqual(missing, 0)
        self.assertEqual(len(records), 4)
        self.assertEqual(records[0]["caption"], "waving hand. Keywords: hand, wave.")
        self.assertEqual(records[0]["keywords"], ["hand", "wave", "hello"])
        self.assertEqual(records[2]["caption"], "waving hand: light skin tone. Keywords: hand, wave.")
        self.assertEqual({r["group"] for r in records}, {"emoji:1F44B"})
        pics = [{"image": "a", "group": "g1"}, {"image": "b", "group": "g2"},
                {"image": "c", "group": "g3"}, {"image": "d", "group": "g3"}]
        content = {"a": 1, "b": 1, "c": 2, "d": 2}  # a/b: one picture, two concepts
        kept, dropped = openmoji.drop_shared_pictures(pics, key=lambda r: content[r["image"]])
        self.assertEqual(([r["image"] for r in kept], dropped), (["c", "d"], 2))


class IconsTest(unittest.TestCase):
    def test_concepts(self):
        self.assertEqual(icons.concept_of("account-outline"), "account")
        self.assertEqual(icons.concept_of("bookmark-one", "icon-park"), "bookmark")
        self.assertEqual(icons.concept_of("bookmark-one", "mdi"), "bookmark one")
        self.assertEqual(icons.concept_of("add-1-flat"), "add")
        self.assertEqual(icons.concept_of("traffic-light"), "traffic light")
        self.assertEqual(icons.concept_of("x-2"), "x")
        self.assertTrue(icons.is_brand("tabler", "brand-github", []))
        self.assertTrue(icons.is_brand("mdi", "apple", []))
        self.assertFalse(icons.is_brand("game-icons", "apple", []))
        self.assertTrue(icons.is_brand("mdi", "android", ["Brand / Logo"]))

    def test_concepts_of_set(self):
        data = {"width": 24, "height": 24, "icons": {
            "apple-outline": {"body": '<path fill="currentColor" d="M0 0h1v1z"/>'},
            "apple": {"body": '<path fill="currentColor" d="M0 0h2v2z"/>', "width": 48},
            "apple-bold": {"body": "<path/>"},
            "star-filled": {"body": "<path/>"},
            "ghost": {"body": "<path/>", "hidden": True},
            "acme-logo": {"body": "<path/>"}},
            "aliases": {"pomme": {"parent": "apple-outline"}, "fruit-apple": {"parent": "pomme"}}}
        meta = {"categories": {"Food / Drink": ["apple", "apple-outline"], "Shapes": ["star-filled"]}}
        stats = collections.Counter()
        out = icons.concepts_of_set("test", data, meta, stats)
        self.assertEqual([(c["name"], c["concept"]) for c in out], [("apple", "apple"), ("star-filled", "star")])
        self.assertEqual(out[0]["caption"], "apple. Keywords: food, drink, pomme, fruit apple.")
        self.assertEqual(out[0]["names"], ["pomme", "fruit apple"])
        self.assertEqual(out[0]["keywords"], ["food", "drink", "pomme", "fruit apple", "apple"])
        self.assertIn('viewBox="0 0 48 24" width="128" height="128"', out[0]["svg"])
        self.assertNotIn("currentColor", out[0]["svg"])
        self.assertEqual((stats["hidden"], stats["brand"], stats["variants_collapsed"]), (1, 1, 2))
        self.assertEqual(icons.group_key("Apple"), "icon:apple")


class RenderTest(unittest.TestCase):
    def test_existing_pngs_are_not_rendered(self):
        with tempfile.TemporaryDirectory() as tmp:
            png = os.path.join(tmp, "a.png")
            open(png, "wb").close()
            self.assertEqual(render.render_all([("<svg/>", png)], 16, log=quiet), {})

    @unittest.skipUnless(__import__("shutil").which("rsvg-convert"), "rsvg-convert not installed")
    def test_render_svg_text_and_failure(self):
        with tempfile.TemporaryDirectory() as tmp:
            good, bad = os.path.join(tmp, "x", "good.png"), os.path.join(tmp, "bad.png")
            svg = icons.svg_document({"body": '<path fill="currentColor" d="M0 0h24v24z"/>'}, 24, 24)
            errors = render.render_all([(svg, good), ("<svg", bad)], 16, log=quiet)
            self.assertEqual(list(errors), [bad])
            with open(good, "rb") as f:
                self.assertEqual(f.read(8), PNG_SIGNATURE)
            self.assertEqual(sorted(os.listdir(tmp)), ["x"])  # no temp file left

    @unittest.skipUnless(__import__("shutil").which("rsvg-convert"), "rsvg-convert not installed")
    def test_without_the_bindings_rsvg_convert_renders(self):
        svg = icons.svg_document({"body": '<path fill="currentColor" d="M0 0h24v24z"/>'}, 24, 24)
        saved, render.Rsvg = render.Rsvg, None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                png = os.path.join(tmp, "p.png")
                logged = []
                self.assertEqual(render.render_all([(svg, png)], 16, log=logged.append), {})
                self.assertIn("with rsvg-convert", " ".join(logged))
                with open(png, "rb") as f:
                    self.assertEqual(f.read(8), PNG_SIGNATURE)
        finally:
            render.Rsvg = saved


@unittest.skipUnless(render.Rsvg is not None and __import__("shutil").which("rsvg-convert"),
                     "needs librsvg's Python bindings and rsvg-convert")
class InProcessRenderTest(unittest.TestCase):
    # A gradient, a stroke and a blur besides a flat fill: more of librsvg than flat shapes.
    SHAPES = ('<defs><linearGradient id="g"><stop offset="0" stop-color="#fc0"/>'
              '<stop offset="1" stop-color="#06c"/></linearGradient>'
              '<filter id="b"><feGaussianBlur stdDeviation="1.7"/></filter></defs>'
              '<rect x="3" y="2" width="40" height="30" fill="url(#g)"/>'
              '<circle cx="30" cy="25" r="17" fill="none" stroke="#036" stroke-width="2.5"/>'
              '<ellipse cx="20" cy="20" rx="9" ry="6" fill="#c00" filter="url(#b)"/>')

    def both(self, tmp, svg, size):
        """(in-process bytes, rsvg-convert bytes) for one SVG (text or path)."""
        a, b = os.path.join(tmp, "a.png"), os.path.join(tmp, "b.png")
        self.assertIsNone(render.render_in_process(svg, a, size))
        self.assertIsNone(render.render_one(render.rsvg_convert(), svg, b, size))
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return fa.read(), fb.read()

    def test_same_bytes_as_rsvg_convert(self):
        # The sizes a cache meets: odd fractional sizes (the scale leaves a fractional side),
        # a viewBox with width and height left at 100%, physical units, an icon document.
        docs = {
            "fractional": '<svg xmlns="http://www.w3.org/2000/svg" width="60.1" height="69.211">%s</svg>',
            "viewbox only": '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 36">%s</svg>',
            "centimetres": '<svg xmlns="http://www.w3.org/2000/svg" width="2cm" height="1.5cm" '
                           'viewBox="0 0 50 40">%s</svg>',
        }
        with tempfile.TemporaryDirectory() as tmp:
            for what, doc in docs.items():
                for size in (72, 128):
                    with self.subTest(what=what, size=size):
                        ours, theirs = self.both(tmp, doc % self.SHAPES, size)
                        self.assertEqual(ours[:8], PNG_SIGNATURE)
                        self.assertEqual(ours, theirs)
            path = os.path.join(tmp, "file.svg")  # a path, not the document
            with open(path, "w") as f:
                f.write(docs["fractional"] % self.SHAPES)
            ours, theirs = self.both(tmp, path, 128)
            self.assertEqual(ours, theirs)
            icon = icons.svg_document({"body": '<path fill="currentColor" d="M2 2h20v9H2z"/>',
                                       "width": 24, "height": 12}, 24, 24, size=64)
            ours, theirs = self.both(tmp, icon, 64)
            self.assertEqual(ours, theirs)

    def test_sizes_not_in_pixels_go_to_rsvg_convert(self):
        svg = '<svg xmlns="http://www.w3.org/2000/svg" width="50%%" height="40">%s</svg>' % self.SHAPES
        with tempfile.TemporaryDirectory() as tmp:
            png = os.path.join(tmp, "p.png")
            with self.assertRaises(render.NotInPixels):
                render.render_in_process(svg, png, 32)
            self.assertFalse(os.path.exists(png))
            self.assertEqual(render.render_all([(svg, png)], 32, log=quiet), {})
            with open(png, "rb") as f:
                self.assertEqual(f.read(8), PNG_SIGNATURE)

    def test_broken_svg_is_an_error_not_a_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            png = os.path.join(tmp, "p.png")
            err = render.render_in_process("<svg><rect", png, 32)
            self.assertIn("librsvg cannot load it", err)
            self.assertEqual(os.listdir(tmp), [])


class EmojiStylesTest(unittest.TestCase):
    def test_name_matching(self):
        k = emoji_styles.name_key
        self.assertEqual(k("waving hand: light skin tone"), k("waving-hand-light-skin-tone"))
        self.assertEqual(k("four o’clock"), "four oclock")
        self.assertEqual(k("flag: Côte d’Ivoire"), "flag cote divoire")
        datasource = [{"unified": "1F334", "image": "x.png", "name": "PALM TREE", "short_names": ["palm_tree"]},
                      {"unified": "1F1E9-1F1EA", "image": "y.png", "name": "", "short_names": ["de", "flag-de"]},
                      {"unified": "1F624", "image": "z.png", "name": "", "short_names": ["triumph"]}]
        base = {"1F334": ("palm tree", ["tree"], "1F334"), "1F1E9-1F1EA": ("flag: Germany", ["DE"], "1F1E9-1F1EA"),
                "1F624": ("face with steam from nose", ["won"], "1F624")}
        table = emoji_styles.concept_table(datasource, base, {})
        got = emoji_styles.match_icons(["palmtree", "palm-tree-1", "flag-for-germany", "germany",
                                        "triumph", "unknown-thing", "alias-only"], table,
                                       {"steam-face": {"parent": "alias-only"}, "x": {"parent": "triumph"}})
        self.assertEqual({n: v[3] for n, v in got.items()},
                         {"palmtree": "1F334", "palm-tree-1": "1F334", "flag-for-germany": "1F1E9-1F1EA",
                          "germany": "1F1E9-1F1EA", "triumph": "1F624"})


if __name__ == "__main__":
    unittest.main(verbosity=1)
