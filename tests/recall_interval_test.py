#!/usr/bin/env python3
"""scripts/recall_interval.py as a user runs it: on `mmsearch eval --ranks` lines and the
manifest evaluated, recall by direction with bootstrap intervals over the split's groups."""
import io
import json
import os
import random
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import recall_interval  # noqa: E402


def write_lines(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


class RecallIntervalTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        d = self.tmp.name
        self.manifest = os.path.join(d, "m.jsonl")
        write_lines(self.manifest, [
            # One concept in two styles: two image queries, one text query, one group.
            {"image": "a1.png", "caption": "apple", "split": "test", "group": "g:apple"},
            {"image": "a2.png", "caption": "apple", "split": "test", "group": "g:apple"},
            {"image": "c.png", "caption": "cat", "split": "test", "group": "g:cat"},
            {"image": "t.png", "caption": "train only", "split": "train", "group": "g:t"},
        ])
        self.ranks = os.path.join(d, "ranks.jsonl")
        write_lines(self.ranks, [
            {"direction": "t2i", "text": "apple", "rank": 1},
            {"direction": "t2i", "text": "cat", "rank": 30},
            {"direction": "i2t", "image": os.path.join(d, "a1.png"), "rank": 2},
            # eval writes paths as it resolved them; "x/../" still names a2.png.
            {"direction": "i2t", "image": os.path.join(d, "x", "..", "a2.png"), "rank": 7},
            {"direction": "i2t", "image": os.path.join(d, "c.png"), "rank": 11},
        ])

    def tearDown(self):
        self.tmp.cleanup()

    def run_script(self, *extra):
        out = io.StringIO()
        with redirect_stdout(out):
            recall_interval.main(["--ranks", self.ranks, "--manifest", self.manifest, *extra])
        return out.getvalue()

    def test_queries_of_one_group_move_together(self):
        texts, images = recall_interval.query_groups(self.manifest, "test")
        with open(self.ranks) as f:
            by = recall_interval.grouped([json.loads(l) for l in f], texts, images)
        self.assertEqual(sorted(map(sorted, by["i2t"])), [[2, 7], [11]])
        self.assertEqual(sorted(map(sorted, by["t2i"])), [[1], [30]])
        # Resampling picks whole groups: recall@10 of i2t is 0, 2/3 (both groups), or 1.
        rng = random.Random(1)
        lo, hi = recall_interval.interval(by["i2t"], lambda g: recall_interval.recall(g, 10),
                                          500, 0.99, rng)
        self.assertEqual((lo, hi), (0.0, 100.0))

    def test_prints_each_direction_with_its_interval(self):
        out = self.run_script("--samples", "200")
        self.assertIn("t2i: 2 queries in 2 groups; R@1 50.0 [", out)
        self.assertIn("i2t: 3 queries in 2 groups; R@1 0.0 [0.0, 0.0], R@5 33.3 [", out)
        self.assertIn("R@10 66.7 [", out)

    def test_a_figure_every_resampling_agrees_on_has_no_width(self):
        out = self.run_script("--samples", "50")
        self.assertIn("R@1 0.0 [0.0, 0.0]", out)

    def test_a_baseline_is_compared_query_by_query(self):
        baseline = os.path.join(self.tmp.name, "base.jsonl")
        write_lines(baseline, [
            {"direction": "t2i", "text": "apple", "rank": 1},  # both hit: no difference
            {"direction": "t2i", "text": "cat", "rank": 3},    # only the baseline hits
            {"direction": "i2t", "image": os.path.join(self.tmp.name, "c.png"), "rank": 11},
        ])
        out = self.run_script("--samples", "300", "--baseline", baseline)
        self.assertIn("t2i: R@10 minus the baseline's over 2 shared queries: -50.0 [-100.0, +0.0]",
                      out)
        # Only c.png is in both files, and both miss it.
        self.assertIn("i2t: R@10 minus the baseline's over 1 shared queries: +0.0 [+0.0, +0.0]",
                      out)

    def test_bad_arguments_are_named(self):
        with self.assertRaises(SystemExit) as e:
            self.run_script("--level", "1.5")
        self.assertIn("--level", str(e.exception.code))

    def test_a_file_that_is_not_ranks_is_named_with_its_line(self):
        with open(self.ranks, "a", encoding="utf-8") as f:
            f.write('{"direction": "t2i", "rank": 3}\n')  # no text
        with self.assertRaises(SystemExit) as e:
            self.run_script()
        self.assertIn("ranks.jsonl:6 is not a line of `mmsearch eval --ranks`",
                      str(e.exception.code))

    def test_queries_outside_the_split_are_told(self):
        err = io.StringIO()
        with redirect_stderr(err):
            self.run_script("--samples", "20", "--split", "train")
        self.assertIn("5 of 5 queries are not in the train split", err.getvalue())


if __name__ == "__main__":
    unittest.main()
