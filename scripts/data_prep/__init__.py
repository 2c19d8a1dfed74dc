"""Helpers for scripts/prepare_data.py (standard library only).

common        split assignment, text cleaning, keywords / names, atomic JSONL writing
png           minimal PNG encoder (zlib + struct)
emoji         Google / Twitter emoji images + emojibase CLDR labels
openclipart   Open Clip Art Library 0.18 PNGs + SVG RDF metadata
fashion_mnist Fashion-MNIST IDX -> PNG + template captions
tuxpaint      Tux Paint stamps (PNG / rendered SVG) + multilingual .txt descriptions
openmoji      OpenMoji colour + line art (rendered SVG), grouped with the emoji set
icons         @iconify-json icon sets (rendered), variants collapsed, brands left out
emoji_styles  @iconify-json emoji sets matched by name to the emoji set's concepts
render        SVG -> PNG with rsvg-convert, 2 processes at a time
"""
