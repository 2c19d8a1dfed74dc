#!/usr/bin/env python3
"""scripts/hubness.py's scoring on hand-made vectors: a document's hub score, recall@10 with
ties counted against the query, and a hub that the bias moves below a better match."""
import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import hubness  # noqa: E402


class HubnessTest(unittest.TestCase):
    def test_hub_is_the_mean_of_the_k_highest_cosines_to_the_bank(self):
        bank = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
        docs = np.array([[1, 0], [0, 1]], np.float32)
        # doc 0: cosines 1, 0, 0.6 -> best two 1, 0.6; doc 1: 0, 1, 0.8 -> 1, 0.8.
        np.testing.assert_allclose(hubness.hub(docs, bank, 2), [0.8, 0.9], rtol=1e-6)
        np.testing.assert_allclose(hubness.hub(docs, bank, 1), [1.0, 1.0], rtol=1e-6)

    def test_recall_counts_a_tie_against_the_query(self):
        scores = np.zeros((1, 12), np.float32)
        scores[0, :10] = 1.0  # ten unrelated documents tie with the relevant one
        scores[0, 11] = 1.0
        self.assertEqual(hubness.recall_at_10(scores, [{11}]), 0.0)
        scores[0, 0] = 0.5  # nine ties: rank 10
        self.assertEqual(hubness.recall_at_10(scores, [{11}]), 100.0)

    def test_the_best_of_several_relevant_documents_counts(self):
        scores = np.array([[0.9, 0.1, 0.8]], np.float32)
        self.assertEqual(hubness.recall_at_10(scores, [{1, 2}]), 100.0)

    def test_precision_at_10(self):
        scores = np.arange(20, dtype=np.float32)[None]  # document 19 first
        relevant = np.zeros((1, 20), bool)
        relevant[0, 15:] = True  # five of the top ten
        self.assertEqual(hubness.precision_at_10(scores, relevant), 50.0)

    def test_the_bias_moves_a_hub_below_a_better_match(self):
        bank = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8]], np.float32)  # training queries
        docs = np.array([[0.8, 0.6], [0.6, 0.8]], np.float32)  # doc 0 sits amid the bank
        query = np.array([[0.7071, 0.7071]], np.float32)
        plain = query @ docs.T
        self.assertAlmostEqual(float(plain[0, 0]), float(plain[0, 1]), places=5)
        h = hubness.hub(docs, bank, 3)
        self.assertGreater(h[0], h[1])
        biased = plain - 0.5 * h[None]
        self.assertEqual(int(np.argmax(biased[0])), 1)


if __name__ == "__main__":
    unittest.main()
