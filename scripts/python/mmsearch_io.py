"""File formats of the mmsearch reference model: safetensors weights and image files.

Both follow the C++ program byte for byte where it matters for the embeddings:

* safetensors (encoders/safetensors.h): an 8-byte little-endian header length N, N bytes of
  JSON {"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}},
  then the raw little-endian tensor data. Read and written here without the `safetensors`
  package (not in Debian).
* images (encoders/image_io.cc): the format is recognized by its magic bytes, a JPEG is
  decoded at 1/2, 1/4 or 1/8 scale when its shorter side stays >= the model's input size,
  EXIF orientation is applied for JPEG and PNG (libtiff applies TIFF's itself), every image
  becomes 8-bit RGB with alpha composited on white, and preprocess_image crops the centre
  square and resizes it (area averaging when shrinking, bilinear when growing) to the model's
  input, values 0..1.

The C++ program also bounds an image's bytes and pixels before decoding it; this reference
trusts its inputs (files the user names), so it leaves those limits out.
"""

import json
import os
import struct

import cv2
import numpy as np
import torch

# ---- safetensors -------------------------------------------------------------------------

# The format's dtype names and the torch dtypes they hold.
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
# The order in which mmsearch (like the reference implementation) lays tensors out: by
# element size, largest first, then by name, so that each tensor is aligned to its size.
_WRITE_ORDER = ["I64", "F64", "F32", "I32", "BF16", "F16", "I16", "I8", "U8", "BOOL"]


def read_safetensors(path):
    """Returns (tensors, metadata): {name: CPU tensor} and the header's "__metadata__" dict.

    Raises ValueError naming the file for a header or offsets that do not describe the data.
    """
    with open(path, "rb") as f:
        data = bytearray(f.read())  # writable, so torch.frombuffer shares it without a warning
    if len(data) < 8:
        raise ValueError("safetensors file '%s' is shorter than its 8-byte header length" % path)
    (header_len,) = struct.unpack_from("<Q", data, 0)
    if 8 + header_len > len(data):
        raise ValueError("safetensors file '%s': header length %d runs past the end of the file"
                         % (path, header_len))
    header = json.loads(bytes(data[8:8 + header_len]).decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    start = 8 + header_len
    tensors = {}
    for name, entry in header.items():
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError("safetensors file '%s': tensor '%s' has unsupported dtype %s"
                             % (path, name, entry["dtype"]))
        shape = [int(s) for s in entry["shape"]]
        begin, end = entry["data_offsets"]
        count = int(np.prod(shape, dtype=np.int64))
        itemsize = torch.empty((), dtype=dtype).element_size()
        if end - begin != count * itemsize or start + end > len(data) or begin < 0:
            raise ValueError("safetensors file '%s': tensor '%s' has offsets [%d, %d] that do not "
                             "hold %s %s" % (path, name, begin, end, entry["dtype"], shape))
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(data, dtype=dtype, count=count, offset=start + begin)
        tensors[name] = flat.reshape(shape).clone()
    return tensors, metadata


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} (and {str: str} metadata) byte for byte as mmsearch writes it:
    tensors in _WRITE_ORDER, compact JSON, the header padded with spaces to a multiple of 8.
    Not atomic: write to a new file and rename it."""
    order = sorted(tensors, key=lambda n: (_WRITE_ORDER.index(_NAMES[tensors[n].dtype]), n))
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    for name in order:
        t = tensors[name].detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


# ---- image headers -----------------------------------------------------------------------

def sniff_image_format(data):
    """"JPEG", "PNG", "WebP", "TIFF", "BMP", "PNM" from the magic bytes, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if len(data) >= 18 and data[:2] == b"BM" and \
            struct.unpack_from("<I", data, 14)[0] in (12, 40, 52, 56, 64, 108, 124):
        return "BMP"
    if len(data) >= 3 and data[0:1] == b"P" and data[1:2] in b"123456" and data[2:3] in b" \t\r\n":
        return "PNM"
    return None


def _tiff_ifd0(p):
    """The tags mmsearch reads from IFD0 of a TIFF structure (a TIFF file or an EXIF block):
    {"orientation", "bits_per_sample", "extra_samples"}, with TIFF's defaults; None when the
    structure is malformed."""
    fields = {"orientation": 1, "bits_per_sample": 1, "extra_samples": 0}
    if len(p) < 8 or p[:2] not in (b"II", b"MM"):
        return None
    end = "<" if p[:2] == b"II" else ">"
    if struct.unpack_from(end + "H", p, 2)[0] != 42:
        return None
    ifd = struct.unpack_from(end + "I", p, 4)[0]
    if ifd + 2 > len(p):
        return None
    count = struct.unpack_from(end + "H", p, ifd)[0]
    if ifd + 2 + 12 * count > len(p):
        return None
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind, values = struct.unpack_from(end + "HHI", p, entry)
        unit = {3: 2, 4: 4}.get(kind)  # SHORT or LONG; no other type is needed
        if unit is None or values == 0:
            continue
        at = entry + 8  # values that fit in 4 bytes sit in the entry itself
        if values * unit > 4:
            at = struct.unpack_from(end + "I", p, entry + 8)[0]
            if at + unit > len(p):
                return None
        first = struct.unpack_from(end + ("H" if unit == 2 else "I"), p, at)[0]
        if tag == 258:
            fields["bits_per_sample"] = first
        elif tag == 274:
            fields["orientation"] = first if 1 <= first <= 8 else 1
        elif tag == 338:
            fields["extra_samples"] = first
    return fields


def _exif_orientation(block):
    """EXIF orientation 1..8 of an APP1 / eXIf payload; 1 when it is malformed."""
    if block[:6] == b"Exif\x00\x00":
        block = block[6:]
    fields = _tiff_ifd0(block)
    return fields["orientation"] if fields else 1


def _jpeg_header(d):
    """(stored width, stored height, EXIF orientation) of a JPEG, from the markers before its
    frame header."""
    pos, orientation = 2, 1
    while True:
        pos = d.find(b"\xff", pos)
        if pos < 0:
            raise ValueError("the JPEG ends before its frame header")
        while pos < len(d) and d[pos] == 0xFF:  # fill bytes may pad any marker
            pos += 1
        if pos >= len(d):
            raise ValueError("the JPEG ends before its frame header")
        marker = d[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length field
        if marker in (0xD8, 0xD9, 0xDA, 0x00) or pos + 2 > len(d):
            raise ValueError("the JPEG has no frame header before its image data")
        (length,) = struct.unpack_from(">H", d, pos)
        segment = d[pos + 2:pos + length]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack_from(">HH", segment, 1)
            return width, height, orientation
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            orientation = _exif_orientation(segment)
        pos += length


def _png_orientation(d):
    """EXIF orientation of a PNG: its eXIf chunk counts only before IDAT (as in libpng)."""
    pos = 33  # signature (8) + IHDR chunk (25)
    while pos + 8 <= len(d):
        length = struct.unpack_from(">I", d, pos)[0]
        kind = d[pos + 4:pos + 8]
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"eXIf":
            return _exif_orientation(d[pos + 8:pos + 8 + length])
        pos += 12 + length
    return 1


# ---- decoding and preprocessing ----------------------------------------------------------

def _over_white(color, alpha, premultiplied):
    """8-bit colour channel(s) composited over white with 8-bit alpha, rounded as in C++."""
    color, alpha = color.astype(np.int32), alpha.astype(np.int32)
    if premultiplied:
        out = np.minimum(255, color + (255 - alpha))
    else:
        out = (color * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _to_rgb8(decoded, premultiplied):
    """Whatever cv2.imdecode returned (uint8/uint16/float, 1-4 channels, BGR order) as 8-bit
    RGB [H, W, 3]."""
    if decoded.dtype == np.uint16:
        decoded = np.rint(decoded / 257.0).astype(np.uint8)
    elif decoded.dtype in (np.float32, np.float64):  # float samples are 0..1
        decoded = np.clip(np.rint(decoded * 255.0), 0, 255).astype(np.uint8)
    elif decoded.dtype != np.uint8:
        raise ValueError("signed-integer samples are not supported")
    if decoded.ndim == 2:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    channels = decoded.shape[2]
    if channels == 1:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    if channels == 2:  # gray + alpha
        gray = _over_white(decoded[:, :, 0], decoded[:, :, 1], premultiplied)
        return np.stack([gray, gray, gray], axis=2)
    if channels == 4:  # BGRA
        rgb = decoded[:, :, 2::-1]
        return _over_white(rgb, decoded[:, :, 3:4], premultiplied)
    raise ValueError("%d channels are not supported" % channels)


def _apply_orientation(rgb, orientation):
    """EXIF orientation 2..8 applied the way OpenCV's own loader does it."""
    if orientation == 2:
        return cv2.flip(rgb, 1)
    if orientation == 3:
        return cv2.flip(rgb, -1)
    if orientation == 4:
        return cv2.flip(rgb, 0)
    if orientation == 5:
        return cv2.transpose(rgb)
    if orientation == 6:
        return cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(rgb), -1)
    if orientation == 8:
        return cv2.rotate(rgb, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return rgb


def decode_image(data, min_side_hint=0, name="image"):
    """Encoded image bytes -> uint8 RGB [H, W, 3], as mmsearch's decode_image gives it.

    min_side_hint > 0 lets a JPEG decode at the largest of 1/8, 1/4, 1/2 scale that keeps its
    shorter side >= the hint (mmsearch passes the model's input size). Raises ValueError
    naming `name` for data that is not a supported image or does not decode.
    """
    data = bytes(data)
    fmt = sniff_image_format(data)
    if fmt is None:
        raise ValueError("'%s' is not a JPEG, PNG, WebP, BMP, TIFF or PNM image" % name)
    orientation, premultiplied = 1, False
    flags = cv2.IMREAD_UNCHANGED  # keeps alpha and 16-bit samples; ignores EXIF orientation
    if fmt == "JPEG":
        width, height, orientation = _jpeg_header(data)
        shorter = min(width, height)
        reduction = next((f for f in (8, 4, 2)
                          if min_side_hint > 0 and (shorter + f - 1) // f >= min_side_hint), 1)
        flags = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 2: cv2.IMREAD_REDUCED_COLOR_2, 1: cv2.IMREAD_COLOR}[reduction]
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    elif fmt == "PNG":
        orientation = _png_orientation(data)
    elif fmt == "TIFF":
        # libtiff applies the orientation itself, and hands alpha over premultiplied on its
        # 8-bit RGBA path or when the file says the alpha is associated.
        fields = _tiff_ifd0(data) or {"bits_per_sample": 1, "extra_samples": 0}
        premultiplied = fields["bits_per_sample"] == 8 or fields["extra_samples"] == 1
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if decoded is None or decoded.size == 0:
        raise ValueError("'%s' is a corrupt %s image" % (name, fmt))
    return _apply_orientation(_to_rgb8(decoded, premultiplied), orientation)


def load_image(path, min_side_hint=0):
    """decode_image of the file at `path`."""
    with open(path, "rb") as f:
        return decode_image(f.read(), min_side_hint, path)


def preprocess_image(rgb, size):
    """uint8 RGB [H, W, 3] -> float32 [3, size, size] in 0..1: the centre square, resized to
    size x size (INTER_AREA when shrinking, INTER_LINEAR when growing). Cropping first and
    resizing after equals resizing the shorter side and cropping, with fewer pixels."""
    height, width = rgb.shape[:2]
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    square = np.ascontiguousarray(rgb[y0:y0 + side, x0:x0 + side])
    if side != size:
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        square = cv2.resize(square, (size, size), interpolation=interpolation)
    return np.ascontiguousarray(square.transpose(2, 0, 1)).astype(np.float32) / np.float32(255)


def image_file_pixels(path, size):
    """The model input of an image file: preprocess_image(load_image(path, size), size)."""
    return preprocess_image(load_image(path, size), size)


def fnv1a64(data, h=0xCBF29CE484222325):
    """64-bit FNV-1a of `data` continuing from `h`: mmsearch's content fingerprint
    (common/hash.h). Pure Python, about 60 ms a MB."""
    prime, mask = 0x100000001B3, 0xFFFFFFFFFFFFFFFF
    for byte in data:
        h = ((h ^ byte) * prime) & mask
    return h


def fnv1a64_file(path, h=0xCBF29CE484222325):
    """fnv1a64 of a file's bytes, read in 1 MiB pieces."""
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h = fnv1a64(piece, h)
    return h


def repo_root():
    """The repository this script lives in (scripts/python/ -> ../..)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
