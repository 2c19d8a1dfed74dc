#!/usr/bin/python3
"""The mmsearch dual encoder in plain PyTorch: a readable reference of encoders/nn/ and
encoders/embedder.cc that loads a MODEL_DIR and gives the same embeddings as `mmsearch`.

    /usr/bin/python3 scripts/python/mmsearch_model.py --model data/models/default \\
        --text "a red apple" --image photo.png        # one JSON line per input

    import mmsearch_model
    model = mmsearch_model.load("data/models/default")
    model.embed_texts(["a red apple"])      # np.ndarray [1, 256], unit rows
    model.embed_images(["photo.png"])       # np.ndarray [1, 256]

A MODEL_DIR holds config.json (the shapes below), model.safetensors (the weights, named by
module path as in DualEncoder.state_dict()), tokenizer.model (SentencePiece) and, optionally,
memory.safetensors (see Memory).

Architecture (defaults of the shipped model in brackets):

* ImageEncoder: pixels [B, 3, S, S] in 0..1 (S = image_size [64]) are normalized by the
  config's mean/std, then a CNN stem of len(stem_channels) [3] stages, each a stride-2 3x3
  conv + norm + GELU followed by stem_blocks [2] residual 3x3 convs (x + GELU(norm(conv x))),
  turns them into a g x g grid (g = S / 2^stages [8]) of feature vectors. A linear layer maps
  each to a token of `width` [128], learned positions are added, a learned class token is
  prepended, and `depth` [2] pre-norm Transformer layers with full attention run over the
  1 + g*g tokens. The class token, layer-normed and projected (no bias), is the embedding.
* TextEncoder: ids [BOS, pieces..., EOS] of any length are embedded (vocab_size x width) and
  run through `depth` [3] pre-norm Transformer layers whose queries and keys carry rotary
  positions (so no length limit) and whose attention is a sliding window: token i sees tokens
  j with |i - j| <= window [32], and token 0 (BOS) is global (sees and is seen by every token).
  Computed blockwise, cost grows as O(n * window). BOS, layer-normed and projected, is the
  embedding.
* Both embeddings are L2-normalized into one space of embed_dim [256]; training pulls a
  pair's image and text together with a symmetric InfoNCE loss (contrastive_loss).
* Memory: when the MODEL_DIR has memory.safetensors, every embedding is then moved toward
  what its nearest training pairs say (see Memory).

Numerics follow the C++ code operation for operation (both run Debian's libtorch 1.13), so
the embeddings agree to float32 rounding (tests/python_reference_test.py: <= 1e-4).
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmsearch_io  # noqa: E402

# ---- attention ---------------------------------------------------------------------------


def masked_attention(q, k, v, allowed=None):
    """Softmax attention. q [.., n_q, d], k and v [.., n_k, d]; allowed: bool broadcastable to
    [.., n_q, n_k] (True = may attend) or None for all."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
    if allowed is not None:
        scores = scores.masked_fill(allowed.logical_not(), float("-inf"))
    return torch.matmul(torch.softmax(scores, -1), v)


def full_attention(q, k, v, key_valid=None):
    """q, k, v [B, H, N, D]; key_valid [B, N] bool (False = padding) or None."""
    allowed = None if key_valid is None else key_valid[:, None, None, :]
    return masked_attention(q, k, v, allowed)


def sliding_window_attention(q, k, v, window, key_valid):
    """Longformer-style attention: query i attends to keys j with |i - j| <= window plus the
    global token 0; token 0's own query attends to every key. Shapes as full_attention;
    key_valid must be True at position 0.

    The same function as full attention under an [N, N] band mask, computed in blocks: the
    queries are cut into blocks of `window`, and block b meets only key blocks b-1, b, b+1
    (3 * window keys, masked to the band) plus the global key, so time and memory are
    O(N * window). Token 0 enters each block once, through its own score column, never
    also through the band.
    """
    batch, heads, n, dim = q.shape
    if n <= window + 1:  # the band covers every pair: full attention is the same function
        return full_attention(q, k, v, key_valid)
    w = window
    blocks = (n + w - 1) // w
    padded = blocks * w
    scale = 1.0 / math.sqrt(dim)

    # Keys and values padded by one block before and after (plus the tail to a whole block),
    # then cut into overlapping windows of 3w: window b = key blocks b-1, b, b+1.
    def windows_of(t):  # [B, H, N, D] -> [B, H, blocks, 3w, D]
        return F.pad(t, (0, 0, w, padded - n + w)).unfold(2, 3 * w, w).transpose(-2, -1)

    k_win, v_win = windows_of(k), windows_of(v)
    q_blocks = F.pad(q, (0, 0, 0, padded - n)).view(batch, heads, blocks, w, dim)

    # Which of its 3w keys each query may see: a real token, inside the band, and not token
    # 0 (slot w of the padded sequence), which has its own column below.
    key_ok = F.pad(key_valid, (w, padded - n + w), value=False).clone()
    key_ok[:, w] = False
    key_ok = key_ok.unfold(1, 3 * w, w)  # [B, blocks, 3w]
    r = torch.arange(w).unsqueeze(1)  # query row within its block
    c = torch.arange(3 * w).unsqueeze(0)  # key column within the window
    in_band = (c >= r) & (c <= r + 2 * w)  # |i - j| <= w
    band_ok = (in_band[None, None] & key_ok.unsqueeze(2)).unsqueeze(1)  # [B, 1, nb, w, 3w]

    band_scores = torch.matmul(q_blocks, k_win.transpose(-2, -1)) * scale
    band_scores = band_scores.masked_fill(band_ok.logical_not(), float("-inf"))
    k0, v0 = k[:, :, 0:1], v[:, :, 0:1]  # [B, H, 1, D]
    global_scores = torch.matmul(q_blocks, k0.unsqueeze(2).transpose(-2, -1)) * scale
    probs = torch.softmax(torch.cat([band_scores, global_scores], -1), -1)
    out = torch.matmul(probs[..., :3 * w], v_win) + probs[..., 3 * w:] * v0.unsqueeze(2)
    out = out.reshape(batch, heads, padded, dim)[:, :, 1:n]

    row0 = full_attention(q[:, :, 0:1], k, v, key_valid)  # the global token sees everything
    return torch.cat([row0, out], 2)


def rotary_tables(n, head_dim):
    """Rotary position tables for positions 0..n-1: (cos, sin), each [n, head_dim / 2].
    Frequencies 10000^(-i / half) for i in 0..half-1."""
    half = head_dim // 2
    inv_freq = torch.pow(10000.0, -torch.arange(half, dtype=torch.float32) / float(half))
    angles = torch.arange(n, dtype=torch.float32).unsqueeze(1) * inv_freq.unsqueeze(0)
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    """Rotates the pairs (x[i], x[i + half]) of each head vector by its position's angles."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


# ---- layers ------------------------------------------------------------------------------


class TransformerBlock(nn.Module):
    """Pre-norm Transformer layer: x + attention(norm1(x)), then h + MLP(norm2(h)) with a
    GELU MLP of width mlp_ratio * width. Heads share one qkv projection."""

    def __init__(self, width, heads, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, x, key_valid=None, window=0, rope=None):
        """x [B, N, width]; key_valid [B, N] bool or None; window <= 0: full attention;
        rope: (cos, sin) from rotary_tables, or None."""
        batch, n, width = x.shape
        head_dim = width // self.heads
        qkv = self.qkv(self.norm1(x)).view(batch, n, 3, self.heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, N, head_dim]
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if window > 0:
            a = sliding_window_attention(q, k, v, window, key_valid)
        else:
            a = full_attention(q, k, v, key_valid)
        h = x + self.out(a.transpose(1, 2).reshape(batch, n, width))
        return h + self.fc2(F.gelu(self.fc1(self.norm2(h))))


class StemStage(nn.Module):
    """One stage of the image stem: a stride-2 3x3 conv ("down") + norm + GELU halves the
    side, then `blocks` residual 3x3 convs x + GELU(norm(conv(x))). Named as in C++: convs
    "conv", "conv2", ..., norms "bn1" (after down), "bn2", "bn3", ... ("gn" for GroupNorm)."""

    def __init__(self, channels_in, channels_out, blocks, group_norm):
        super().__init__()
        kind = "gn" if group_norm else "bn"

        def norm():
            return nn.GroupNorm(8, channels_out) if group_norm else nn.BatchNorm2d(channels_out)

        self.down = nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1, bias=False)
        self.down_norm = kind + "1"
        self.add_module(self.down_norm, norm())
        self.residual = []  # (conv, norm) submodule names of each residual block
        for i in range(blocks):
            names = ("conv" if i == 0 else "conv%d" % (i + 1), "%s%d" % (kind, i + 2))
            self.add_module(names[0], nn.Conv2d(channels_out, channels_out, 3, padding=1,
                                                bias=False))
            self.add_module(names[1], norm())
            self.residual.append(names)

    def forward(self, x):
        x = F.gelu(getattr(self, self.down_norm)(self.down(x)))
        for conv, norm in self.residual:
            x = x + F.gelu(getattr(self, norm)(getattr(self, conv)(x)))
        return x


class ImageEncoder(nn.Module):
    """CNN stem + Transformer over [class token, grid tokens]; see the module docstring."""

    def __init__(self, c, embed_dim, mlp_ratio):
        super().__init__()
        self.register_buffer("mean", torch.tensor(c["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(c["std"], dtype=torch.float32).view(1, 3, 1, 1))
        stages, channels, side = [], 3, c["image_size"]
        for out in c["stem_channels"]:
            stages.append(StemStage(channels, out, c["stem_blocks"], c["stem_norm"] == "group"))
            channels, side = out, (side + 1) // 2
        self.stem = nn.Sequential(*stages)
        self.to_tokens = nn.Linear(channels, c["width"])
        self.cls = nn.Parameter(torch.randn(1, 1, c["width"]) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, side * side, c["width"]) * 0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(c["width"], c["heads"], mlp_ratio) for _ in range(c["depth"]))
        self.norm = nn.LayerNorm(c["width"])
        self.proj = nn.Linear(c["width"], embed_dim, bias=False)

    def forward(self, pixels):
        """pixels [B, 3, S, S] float32 0..1 -> [B, embed_dim], not normalized."""
        x = self.stem((pixels - self.mean) / self.std)  # [B, C, g, g]
        x = self.to_tokens(x.flatten(2).transpose(1, 2)) + self.pos  # [B, g*g, width]
        x = torch.cat([self.cls.expand(x.size(0), 1, x.size(2)), x], 1)
        for block in self.blocks:
            x = block(x)
        return self.proj(self.norm(x[:, 0]))


class TextEncoder(nn.Module):
    """Token embeddings + rotary sliding-window Transformer; BOS is the summary token."""

    def __init__(self, c, embed_dim, mlp_ratio):
        super().__init__()
        self.window = c["window"]
        self.head_dim = c["width"] // c["heads"]
        self.embed = nn.Embedding(c["vocab_size"], c["width"])
        self.blocks = nn.ModuleList(
            TransformerBlock(c["width"], c["heads"], mlp_ratio) for _ in range(c["depth"]))
        self.norm = nn.LayerNorm(c["width"])
        self.proj = nn.Linear(c["width"], embed_dim, bias=False)

    def forward(self, ids, lengths):
        """ids [B, N] int64 (BOS first, PAD after each row's length); lengths [B] int64 ->
        [B, embed_dim], not normalized."""
        n = ids.size(1)
        valid = torch.arange(n).unsqueeze(0) < lengths.unsqueeze(1)
        rope = rotary_tables(n, self.head_dim)
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, valid, self.window, rope)
        return self.proj(self.norm(x[:, 0]))


class DualEncoder(nn.Module):
    """Both towers plus the learnable inverse temperature of the contrastive loss. Its
    state_dict() names are model.safetensors' tensor names."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.image = ImageEncoder(config["image"], config["embed_dim"], config["mlp_ratio"])
        self.text = TextEncoder(config["text"], config["embed_dim"], config["mlp_ratio"])
        self.logit_scale = nn.Parameter(torch.tensor(float(config["logit_scale_init"])))

    def encode_images(self, pixels):
        return F.normalize(self.image(pixels), dim=1)

    def encode_texts(self, ids, lengths):
        return F.normalize(self.text(ids, lengths), dim=1)

    def scale(self):
        """exp(logit_scale), the temperature never below exp(-logit_scale_max)."""
        return self.logit_scale.clamp_max(self.config["logit_scale_max"]).exp()


def contrastive_loss(image_emb, text_emb, scale, positives=None):
    """Symmetric InfoNCE over a batch of [B, D] unit embeddings; positives [B, B] bool marks
    true pairs (None: the diagonal). Each row's target spreads evenly over its positives."""
    logits = scale * image_emb @ text_emb.t()
    targets = torch.eye(len(logits)) if positives is None else positives.to(logits.dtype)

    def soft_ce(l, t):
        return -((t / t.sum(1, keepdim=True)) * torch.log_softmax(l, 1)).sum(1).mean()

    return 0.5 * (soft_ce(logits, targets) + soft_ce(logits.t(), targets.t()))


# ---- memory ------------------------------------------------------------------------------


class Memory:
    """Retrieval-augmented embeddings (encoders/memory.h). memory.safetensors holds the
    encoders' own embeddings of training images ("image_keys" [Ni, dim] F16) and texts
    ("text_keys" [Nt, dim] F16), which of them are pairs ("pairs" [P, 2] I32: image row,
    text row), and its settings (k, temperature, weight, gate_low, gate_high) as metadata.

    An image key's value is the mean of its paired texts' keys, a text key's value the mean
    of its paired images' keys, renormalized. An embedding e consults the k keys of its own
    modality most similar to it:
        e' = normalize(e + gate(s_1) * weight * normalize(sum_j softmax(s / temperature)_j v_j))
    where s are the k cosine similarities (s_1 the nearest) and gate rises linearly from 0 at
    gate_low to 1 at gate_high. So an image also carries the words of the training images it
    resembles, a text the pictures of the training texts it resembles; an input unlike
    everything in the memory keeps its own embedding.

    An image that is one of the memory's own (s_1 from recall_gate_low to recall_gate_high)
    also moves toward its own texts, carried across the modality gap:
        e' = normalize(... + recall_gate(s_1) * recall_weight *
                       normalize(v_1 + mean(image keys) - mean(text keys)))
    (metadata recall_weight, recall_gate_low, recall_gate_high; absent in older files: 0).
    Images are pulled by image_weight where the file has one 0 or more, else by weight.
    """

    def __init__(self, path, dim):
        tensors, meta = mmsearch_io.read_safetensors(path)
        if meta.get("format") != "mmsearch-memory-1":
            raise ValueError("'%s' is not an mmsearch memory" % path)
        if tensors["image_keys"].size(1) != dim or tensors["text_keys"].size(1) != dim:
            raise ValueError("memory '%s' was built with a model of another dimension" % path)
        # Identical key rows (one image or text in two sources) are merged: the merged row's
        # value gathers all their pairs, so that no lookup ties between copies.
        self.image_keys, image_row = self._merge_identical_rows(tensors["image_keys"])
        self.text_keys, text_row = self._merge_identical_rows(tensors["text_keys"])
        pairs = tensors["pairs"].long()
        images, texts = image_row[pairs[:, 0]], text_row[pairs[:, 1]]
        self.image_values = F.normalize(torch.zeros_like(self.image_keys).index_add_(
            0, images, self.text_keys.index_select(0, texts)), dim=1)
        self.text_values = F.normalize(torch.zeros_like(self.text_keys).index_add_(
            0, texts, self.image_keys.index_select(0, images)), dim=1)
        self.k = int(float(meta["k"]))
        self.temperature = float(meta["temperature"])
        self.weight = float(meta["weight"])
        # Files written before image_weight existed pull images by `weight` too (-1).
        image_weight = float(meta.get("image_weight", -1))
        self.image_weight = image_weight if image_weight >= 0 else self.weight
        # Files written before the gate existed have none: -1, -1 is "no gate".
        self.gate_low = float(meta.get("gate_low", -1))
        self.gate_high = float(meta.get("gate_high", -1))
        # Nor had they recall: recall_weight 0.
        self.recall_weight = float(meta.get("recall_weight", 0))
        self.recall_gate_low = float(meta.get("recall_gate_low", 0.999))
        self.recall_gate_high = float(meta.get("recall_gate_high", 0.9999))
        gap = self.image_keys.mean(0, keepdim=True) - self.text_keys.mean(0, keepdim=True)
        self.image_recall_values = F.normalize(self.image_values + gap, dim=1)
        # Hubness-aware scoring's banks (encoders/memory.h): absent in older files, no penalty.
        self.text_bank = self.image_bank = None
        self.hub_k, self.hub_weight = 10, 0.0
        if "text_bank" in tensors:
            self.text_bank = tensors["text_bank"].float()
            self.image_bank = tensors["image_bank"].float()
            self.hub_k = int(float(meta["hub_k"]))
            self.hub_weight = float(meta["hub_weight"])

    @staticmethod
    def _merge_identical_rows(keys):
        """F16 [n, dim] -> (the distinct rows as float32, each old row's new index)."""
        bits = keys.numpy().view(np.uint16)
        _, first, inverse = np.unique(bits, axis=0, return_index=True, return_inverse=True)
        return keys[torch.from_numpy(first)].float(), torch.from_numpy(inverse.reshape(-1))

    @staticmethod
    def linear_gate(low, high, s):
        """0 up to low, rising linearly to 1 at high (a step at high when high <= low)."""
        if high <= low:
            return 1.0 if s >= high else 0.0
        return min(1.0, max(0.0, (s - low) / (high - low)))

    def gate(self, s):
        """The fraction of `weight` applied when the nearest key has cosine similarity s."""
        return self.linear_gate(self.gate_low, self.gate_high, s)

    def augment(self, e, keys, values, weight, recall_values=None):
        """e [n, dim] unit rows -> [n, dim] unit rows."""
        chunk = 512  # bounds the [chunk, n_keys] similarity block
        return torch.cat([self._augment_rows(e[i:i + chunk], keys, values, weight, recall_values)
                          for i in range(0, len(e), chunk)]) if len(e) else e

    def _augment_rows(self, e, keys, values, weight, recall_values):
        sim, idx = torch.matmul(e, keys.t()).topk(min(self.k, len(keys)), 1)  # nearest first
        w = torch.softmax(sim / self.temperature, 1)
        mixed = F.normalize((w.unsqueeze(2) * values[idx]).sum(1), dim=1)
        # The gates in double precision, as C++ computes them, then float32.
        gate = torch.tensor([[weight * self.gate(float(s))] for s in sim[:, 0]],
                            dtype=torch.float32).view(-1, 1)
        moved = e + gate * mixed
        if recall_values is not None and self.recall_weight > 0:
            recall = torch.tensor(
                [[self.recall_weight * self.linear_gate(self.recall_gate_low,
                                                        self.recall_gate_high, float(s))]
                 for s in sim[:, 0]], dtype=torch.float32).view(-1, 1)
            moved = moved + recall * recall_values[idx[:, 0]]
        return F.normalize(moved, dim=1)

    def hubs(self, e, bank):
        """h of documents e [n, dim]: each row's mean of its hub_k highest cosines to `bank`."""
        return torch.matmul(e, bank.t()).topk(min(self.hub_k, len(bank)), 1)[0].mean(1)

    def augment_images(self, e):
        return self.augment(e, self.image_keys, self.image_values, self.image_weight,
                            self.image_recall_values)

    def augment_texts(self, e):
        if self.weight <= 0:  # (recall is for images only)
            return e
        return self.augment(e, self.text_keys, self.text_values, self.weight)


# ---- the model as a whole ----------------------------------------------------------------

# config.json's keys and the values a missing key takes (encoders/model_config.h).
CONFIG_DEFAULTS = {
    "image": {"image_size": 64, "stem_channels": [32, 64, 128], "stem_blocks": 1,
              "stem_norm": "batch", "width": 192, "depth": 4, "heads": 3,
              "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "views": 1,
              "view_crop": 0.85},
    "text": {"vocab_size": 8000, "width": 192, "depth": 4, "heads": 3, "window": 32,
             "max_tokens": 16384},
    "embed_dim": 256, "mlp_ratio": 4, "logit_scale_init": 2.6593, "logit_scale_max": 4.6052,
}


def load_config(path):
    """config.json with mmsearch's defaults for missing keys; unknown keys are an error (a
    typo must not be a silently ignored setting)."""
    with open(path, encoding="utf-8") as f:
        given = json.load(f)
    config = {}
    for key, default in CONFIG_DEFAULTS.items():
        value = given.get(key, default)
        if isinstance(default, dict):
            unknown = set(value) - set(default)
            if unknown:
                raise ValueError("model config '%s': unknown key '%s.%s'"
                                 % (path, key, sorted(unknown)[0]))
            value = {**default, **value}
        config[key] = value
    unknown = set(given) - set(CONFIG_DEFAULTS) - {"format"}
    if unknown:
        raise ValueError("model config '%s': unknown key '%s'" % (path, sorted(unknown)[0]))
    if config["image"]["views"] not in (1, 3, 5):
        raise ValueError("model config '%s': image.views is %s; it must be 1, 3 or 5"
                         % (path, config["image"]["views"]))
    if not 0.5 <= config["image"]["view_crop"] < 1:
        raise ValueError("model config '%s': image.view_crop is %s; it must be at least 0.5 "
                         "and below 1" % (path, config["image"]["view_crop"]))
    return config


def check_weights(state, weights, path):
    """Raises ValueError naming the first tensor of `weights` that is missing, unexpected, or
    of another dtype or shape than the module's `state` (weights of another configuration)."""
    for name in sorted(set(state) | set(weights)):
        if name not in weights:
            raise ValueError("weights '%s' lack tensor '%s'" % (path, name))
        if name not in state:
            raise ValueError("weights '%s' have unexpected tensor '%s'" % (path, name))
        got, want = weights[name], state[name]
        if got.dtype != want.dtype or got.shape != want.shape:
            raise ValueError("weights '%s': tensor '%s' is %s %s, expected %s %s"
                             % (path, name, got.dtype, list(got.shape), want.dtype,
                                list(want.shape)))


TEXT_BATCH = 64  # texts per forward pass
TEXT_TOKENS_PER_BATCH = 1 << 16  # rows x longest row, bounds memory for very long texts
IMAGE_BATCH = 64


class Model:
    """A loaded MODEL_DIR: the DualEncoder (in eval mode), its tokenizer and its memory."""

    def __init__(self, model_dir, use_memory=True):
        import sentencepiece  # here, so that importing this module for its layers needs none

        self.config = load_config(os.path.join(model_dir, "config.json"))
        self.encoder = DualEncoder(self.config)
        weights_path = os.path.join(model_dir, "model.safetensors")
        weights, _ = mmsearch_io.read_safetensors(weights_path)
        check_weights(self.encoder.state_dict(), weights, weights_path)
        self.encoder.load_state_dict(weights)
        self.encoder.eval()
        # Ids as mmsearch's Tokenizer::encode gives them: [BOS, pieces..., EOS]; the model's
        # own normalizer (NFKC + case folding) runs inside SentencePiece.
        self.tokenizer = sentencepiece.SentencePieceProcessor(
            model_file=os.path.join(model_dir, "tokenizer.model"))
        if self.tokenizer.get_piece_size() != self.config["text"]["vocab_size"]:
            raise ValueError("model '%s': tokenizer.model has %d pieces but config.json says %d"
                             % (model_dir, self.tokenizer.get_piece_size(),
                                self.config["text"]["vocab_size"]))
        self.model_dir = model_dir
        memory_path = os.path.join(model_dir, "memory.safetensors")
        self.memory = None
        if use_memory and os.path.exists(memory_path):
            memory = Memory(memory_path, self.config["embed_dim"])
            used = memory.weight > 0 or memory.image_weight > 0 or memory.recall_weight > 0
            self.memory = memory if used else None

    @property
    def dim(self):
        return self.config["embed_dim"]

    @property
    def image_size(self):
        return self.config["image"]["image_size"]

    def fingerprint(self):
        """What mmsearch's Embedder::fingerprint() says for this model (an INDEX_DIR records
        it): FNV-1a over model.safetensors, then over "views V/C" (image.views, view_crop)
        when the model embeds an image from several views, then, when the memory is used,
        over memory.safetensors and its settings as "k/temperature/weight/gate_low/gate_high"
        and "/merged-keys", then "/recall recall_weight/recall_gate_low/recall_gate_high" when
        recall is on, then "/image-weight image_weight" when images are pulled otherwise than
        texts, then "/hub-k hub_k" when the memory has hub banks (C++ std::to_string). 16 hex digits. Reads every byte: seconds for the
        shipped model."""
        h = mmsearch_io.fnv1a64_file(os.path.join(self.model_dir, "model.safetensors"))
        image = self.config["image"]
        if image["views"] != 1:
            views = "views %d/%f" % (image["views"], np.float32(image["view_crop"]))
            h = mmsearch_io.fnv1a64(views.encode("ascii"), h)
        if self.memory is not None:
            m = self.memory
            h = mmsearch_io.fnv1a64_file(os.path.join(self.model_dir, "memory.safetensors"), h)
            settings = "%d/%f/%f/%f/%f/merged-keys" % (m.k, m.temperature, m.weight, m.gate_low,
                                                       m.gate_high)
            if m.recall_weight > 0:
                settings += "/recall %f/%f/%f" % (m.recall_weight, m.recall_gate_low,
                                                  m.recall_gate_high)
            if m.image_weight != m.weight:
                settings += "/image-weight %f" % m.image_weight
            if m.text_bank is not None:
                settings += "/hub-k %d" % m.hub_k
            h = mmsearch_io.fnv1a64(settings.encode("ascii"), h)
        return "%016x" % h

    @property
    def hub_weight(self):
        """Hubness-aware scoring (encoders/memory.h): a document found by a query of the other
        modality scores cosine - hub_weight * h(document); 0 without hub banks."""
        m = self.memory
        return m.hub_weight if m is not None and m.text_bank is not None else 0.0

    @torch.no_grad()
    def image_hubs(self, e):
        """h of image embeddings [n, dim] (as embed_images returns them), against the
        memory's bank of texts -> float32 [n]; zeros where hub_weight is 0."""
        if self.hub_weight == 0:
            return np.zeros(len(e), np.float32)
        return self.memory.hubs(torch.as_tensor(e), self.memory.text_bank).numpy()

    @torch.no_grad()
    def text_hubs(self, e):
        """h of text embeddings [n, dim], against the memory's bank of images."""
        if self.hub_weight == 0:
            return np.zeros(len(e), np.float32)
        return self.memory.hubs(torch.as_tensor(e), self.memory.image_bank).numpy()

    def tokenize(self, text):
        return [self.tokenizer.bos_id()] + self.tokenizer.encode(text) + [self.tokenizer.eos_id()]

    @torch.no_grad()
    def embed_token_ids(self, ids):
        """Lists of ids (each BOS .. EOS) -> float32 [n, dim]. Batched by length, as C++ does,
        so a short text never pays for a long one."""
        out = torch.empty(len(ids), self.dim)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        start = 0
        while start < len(order):
            end = start + 1
            while (end < len(order) and end - start < TEXT_BATCH
                   and (end - start + 1) * len(ids[order[end]]) <= TEXT_TOKENS_PER_BATCH):
                end += 1
            rows = [ids[i] for i in order[start:end]]
            batch = torch.full((len(rows), len(rows[-1])), self.tokenizer.pad_id(), dtype=torch.long)
            for r, row in enumerate(rows):
                batch[r, :len(row)] = torch.tensor(row, dtype=torch.long)
            lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
            out[order[start:end]] = self.encoder.encode_texts(batch, lengths)
            start = end
        if self.memory is not None:
            out = self.memory.augment_texts(out)
        return out.numpy()

    def embed_texts(self, texts):
        """Texts of any length (never truncated) -> float32 [n, dim], unit rows."""
        return self.embed_token_ids([self.tokenize(t) for t in texts])

    @torch.no_grad()
    def embed_pixels(self, pixels):
        """float32 [n, 3, S, S] in 0..1 (as mmsearch_io.preprocess_image makes them) ->
        float32 [n, dim], unit rows."""
        pixels = torch.as_tensor(pixels, dtype=torch.float32)
        out = self._encode_views(pixels)
        if self.memory is not None:
            out = self.memory.augment_images(out)
        return out.numpy()

    def _encode_pixels(self, pixels):
        parts = [self.encoder.encode_images(pixels[i:i + IMAGE_BATCH])
                 for i in range(0, len(pixels), IMAGE_BATCH)]
        return torch.cat(parts) if parts else torch.empty(0, self.dim)

    def _encode_views(self, pixels):
        """The image tower over config image.views views (encoders/model_config.h): the
        whole input, then squares of view_crop of its side from the corners (top-left,
        bottom-right, top-right, bottom-left) resized back (bilinear); the mean,
        renormalized."""
        image = self.config["image"]
        out = self._encode_pixels(pixels)
        if image["views"] == 1:
            return out
        s = pixels.shape[2]
        # C++ std::lround of the product in double precision of the float32 crop fraction.
        side = int(math.floor(s * float(np.float32(image["view_crop"])) + 0.5))
        far = s - side
        for y0, x0 in [(0, 0), (far, far), (0, far), (far, 0)][:image["views"] - 1]:
            crop = pixels[:, :, y0:y0 + side, x0:x0 + side]
            out = out + self._encode_pixels(
                F.interpolate(crop, size=(s, s), mode="bilinear", align_corners=False))
        return F.normalize(out, dim=1)

    def embed_images(self, paths):
        """Image files -> float32 [n, dim], unit rows."""
        size = self.image_size
        return self.embed_pixels(np.stack([mmsearch_io.image_file_pixels(p, size) for p in paths])
                                 if paths else np.zeros((0, 3, size, size), np.float32))


def load(model_dir, use_memory=True):
    """Loads a MODEL_DIR. Raises OSError for a missing file, ValueError for weights or a
    tokenizer that do not fit config.json."""
    return Model(model_dir, use_memory)


# ---- command line ------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Embed texts and images with the PyTorch reference of the mmsearch model; "
                    "prints one JSON line {\"kind\", \"input\", \"embedding\"} per input, texts "
                    "first, with \"hub\" (its h as a document) where the memory has hub banks "
                    "(as `mmsearch embed`).")
    parser.add_argument("--model", default=os.path.join(mmsearch_io.repo_root(), "data", "models",
                                                        "default"),
                        help="model directory (default: the shipped model)")
    parser.add_argument("--text", action="append", default=[], help="a text (repeatable)")
    parser.add_argument("--image", action="append", default=[], help="an image file (repeatable)")
    parser.add_argument("--no-memory", action="store_true",
                        help="the encoders' own embeddings, without memory.safetensors")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    if not args.text and not args.image:
        parser.error("give something to embed: --text or --image")
    torch.set_num_threads(max(1, args.threads))
    model = load(args.model, use_memory=not args.no_memory)
    inputs = [("text", t) for t in args.text] + [("image", p) for p in args.image]
    texts, images = model.embed_texts(args.text), model.embed_images(args.image)
    vectors = list(texts) + list(images)
    hubs = list(model.text_hubs(texts)) + list(model.image_hubs(images))
    for (kind, value), vector, hub in zip(inputs, vectors, hubs):
        line = {"kind": kind, "input": value, "embedding": [float(x) for x in vector]}
        if model.hub_weight > 0:
            line["hub"] = float(hub)
        print(json.dumps(line, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
