"""Helpers for scripts/prepare_data.py (standard library only).

common        split assignment, text cleaning, atomic JSONL writing
png           minimal PNG encoder (zlib + struct)
emoji         Google / Twitter emoji images + emojibase CLDR labels
openclipart   Open Clip Art Library 0.18 PNGs + SVG RDF metadata
fashion_mnist Fashion-MNIST IDX -> PNG + template captions
"""
