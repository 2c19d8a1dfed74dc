#!/usr/bin/env python3
"""scripts/recall_breakdown.py as a user runs it: on an `mmsearch eval --ranks` file and a
training manifest, text->image recall split by seen / unseen words and keyword count."""
import io
import json
import os
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import recall_breakdown  # noqa: E402


def write_lines(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


class RecallBreakdownTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        d = self.tmp.name
        self.manifest = os.path.join(d, "all.jsonl")
        write_lines(self.manifest, [
            {"image": "a.png", "caption": "Red frog. Keywords: animal, green.", "split": "train"},
            {"image": "b.png", "caption": "Blue Lizard. Keywords: reptile.", "split": "test"},
        ])
        self.ranks = os.path.join(d, "ranks.jsonl")
        write_lines(self.ranks, [
            # Every word seen in training ("frog", "red", "animal", "green").
            {"direction": "t2i", "text": "Green frog. Keywords: animal, red.", "rank": 1},
            # "lizard" and "reptile" were only in the test split: unseen.
            {"direction": "t2i", "text": "Lizard. Keywords: reptile.", "rank": 40},
            {"direction": "t2i", "text": "Frog. Keywords: green, red, animal, frog.", "rank": 12},
            {"direction": "i2t", "image": "x.png", "rank": 3},
        ])

    def tearDown(self):
        self.tmp.cleanup()

    def test_groups_and_figures(self):
        seen = recall_breakdown.training_vocabulary(self.manifest)
        self.assertIn("frog", seen)
        self.assertNotIn("lizard", seen)
        with open(self.ranks, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        result = recall_breakdown.breakdown(rows, seen)
        self.assertEqual(result["all queries"]["n"], 3)  # image queries are not counted
        self.assertAlmostEqual(result["all queries"]["r10"], 100.0 / 3)
        self.assertEqual(result["all queries"]["median_rank"], 12)
        self.assertEqual(result["title has a word unseen in training"],
                         {"n": 1, "r1": 0.0, "r10": 0.0, "median_rank": 40})
        self.assertEqual(result["every word seen"]["n"], 2)
        self.assertEqual(result["every word seen"]["median_rank"], 6.5)
        self.assertEqual(result["0-1 keywords"]["n"], 1)
        self.assertEqual(result["4+ keywords"]["n"], 1)
        self.assertEqual(result["2-3 keywords"]["r1"], 100.0)

    def test_cli_prints_a_table_and_names_bad_input(self):
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(recall_breakdown.main([self.ranks, self.manifest]), 0)
        self.assertIn("every title word seen", out.getvalue())
        bad = os.path.join(self.tmp.name, "bad.jsonl")
        with open(bad, "w") as f:
            f.write("not json\n")
        err = io.StringIO()
        with redirect_stderr(err):
            self.assertEqual(recall_breakdown.main([bad, self.manifest]), 1)
        self.assertIn("recall_breakdown:", err.getvalue())
        write_lines(bad, [{"direction": "i2t", "image": "x.png", "rank": 1}])
        err = io.StringIO()
        with redirect_stderr(err):
            self.assertEqual(recall_breakdown.main([bad, self.manifest]), 1)
        self.assertIn("no text->image ranks", err.getvalue())

    def test_image_queries_are_grouped_by_their_caption(self):
        d = self.tmp.name
        captions = os.path.join(d, "test.jsonl")
        write_lines(captions, [
            {"image": "img/frog.png", "caption": "Red frog. Keywords: animal, green.", "split": "test"},
            {"image": "img/lizard.png", "caption": "Lizard. Keywords: reptile.", "split": "test"},
            # A second caption of the same image: the first one stands for it.
            {"image": "img/lizard.png", "caption": "Green frog.", "split": "test"},
        ])
        ranks = os.path.join(d, "i2t.jsonl")
        write_lines(ranks, [
            {"direction": "i2t", "image": os.path.join(d, "img", "frog.png"), "rank": 2},
            {"direction": "i2t", "image": os.path.join(d, "img", ".", "lizard.png"), "rank": 30},
            {"direction": "t2i", "text": "Red frog. Keywords: animal, green.", "rank": 1},
        ])
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(recall_breakdown.main(
                [ranks, self.manifest, "--direction", "i2t", "--captions", captions, "--json"]), 0)
        result = json.loads(out.getvalue())
        self.assertEqual(result["all queries"]["n"], 2)  # text queries are not counted
        self.assertEqual(result["every word seen"], {"n": 1, "r1": 0.0, "r10": 100.0, "median_rank": 2})
        self.assertEqual(result["some word unseen in training"]["median_rank"], 30)
        # i2t needs the captions; an image the captions manifest lacks is named.
        err = io.StringIO()
        with redirect_stderr(err):
            self.assertEqual(recall_breakdown.main([ranks, self.manifest, "--direction", "i2t"]), 2)
        self.assertIn("needs --captions", err.getvalue())
        write_lines(captions, [{"image": "img/frog.png", "caption": "Frog.", "split": "test"}])
        err = io.StringIO()
        with redirect_stderr(err):
            self.assertEqual(recall_breakdown.main(
                [ranks, self.manifest, "--direction", "i2t", "--captions", captions]), 1)
        self.assertIn("lizard.png' is not in the captions manifest", err.getvalue())


if __name__ == "__main__":
    unittest.main()
