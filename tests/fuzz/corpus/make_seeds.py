#!/usr/bin/env python3
"""Writes the binary seeds of tests/fuzz/corpus/ (standard library only; run from anywhere):
small safetensors files, memory files at dimension 4 (fuzz_memory's), and image headers the
fixtures in tests/fixtures/images lack. The text seeds beside them are written by hand."""
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)] in file order (the writer's: by descending
    dtype size, then name)."""
    header, offset, blob = {}, 0, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blob += data
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob


def f16(values):
    return struct.pack("<%de" % len(values), *values)


def memory(gate=True):
    image_keys = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    text_keys = [0.6, 0.8, 0, 0, 0, 0, 0.8, 0.6]
    pairs = struct.pack("<6i", 0, 0, 1, 0, 2, 1)
    metadata = {"format": "mmsearch-memory-1", "k": "2", "temperature": "0.050000",
                "weight": "0.500000"}
    if gate:
        metadata.update({"gate_low": "0.750000", "gate_high": "0.900000"})
    return safetensors([("pairs", "I32", [3, 2], pairs),
                        ("image_keys", "F16", [3, 4], f16(image_keys)),
                        ("text_keys", "F16", [2, 4], f16(text_keys))], metadata)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def main():
    write("safetensors", "empty.safetensors", safetensors([]))
    write("safetensors", "tensors.safetensors", safetensors(
        [("ids", "I64", [2], struct.pack("<2q", 7, -1)),
         ("weight", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
         ("half", "BF16", [3], b"\x80\x3f\x00\x40\x40\x40"),
         ("scalar", "U8", [], b"\x05"),
         ("flags", "BOOL", [2], b"\x00\x01")],
        {"format": "pt", "note": "fuzz seed"}))
    write("safetensors", "zero_size.safetensors", safetensors([("none", "F32", [0, 3], b"")]))
    write("memory", "memory.safetensors", memory())
    write("memory", "memory_no_gate.safetensors", memory(gate=False))
    # A PNG whose eXIf chunk (big-endian TIFF, one IFD entry: orientation 8) precedes IDAT.
    exif = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x08\x00\x00\x00\x00\x00\x00"
    png = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 8, 2, 0, 0, 0)) +
           png_chunk(b"eXIf", exif) +
           png_chunk(b"IDAT", zlib.compress(b"\x00" + b"\xff\x00\x00\x00\xff\x00")) +
           png_chunk(b"IEND", b""))
    write("image_probe", "exif_orientation8.png", png)
    write("image_probe", "gif_header.gif", b"GIF89a\x02\x00\x01\x00\x00\x00\x00;")
    write("image_probe", "pnm_comments.pgm", b"P5\n# a comment\n2 # width\n1\n255\n\x00\xff")
    write("image_decode", "exif_orientation8.png", png)
    write("image_decode", "pnm_ascii.ppm", b"P3\n2 1\n255\n255 0 0  0 0 255\n")


if __name__ == "__main__":
    main()
