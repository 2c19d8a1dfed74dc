// Header parsing for the supported formats. Each parser follows the format's specification
// only as far as the stored size (and orientation) and checks every offset against the
// buffer's end before reading, so that arbitrary bytes produce an Error, never a crash.
#include "encoders/image_probe.h"

#include <cstring>
#include <limits>
#include <string>

#include "common/error.h"

namespace mms {
namespace {

constexpr char kSupportedFormats[] = "JPEG, PNG, WebP, BMP, TIFF, PNM";

uint16_t be16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}
uint16_t le16(const uint8_t* p) {
  return static_cast<uint16_t>(p[1] << 8 | p[0]);
}
uint32_t be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
uint32_t le32(const uint8_t* p) {
  return uint32_t{p[3]} << 24 | uint32_t{p[2]} << 16 | uint32_t{p[1]} << 8 | p[0];
}
uint32_t le24(const uint8_t* p) {
  return uint32_t{p[2]} << 16 | uint32_t{p[1]} << 8 | p[0];
}

// True when [pos, pos + n) lies inside a buffer of `size` bytes (without overflowing).
bool fits(size_t pos, size_t n, size_t size) {
  return pos <= size && n <= size - pos;
}

bool starts_with(const uint8_t* data, size_t size, const char* magic, size_t magic_size) {
  return size >= magic_size && std::memcmp(data, magic, magic_size) == 0;
}

std::string quoted(std::string_view name) {
  return "'" + std::string(name) + "'";
}

Error corrupt_header(std::string_view name, ImageFormat format, const std::string& problem) {
  return Error::corrupt(quoted(name) + " is a corrupt " + image_format_name(format) +
                        " image: " + problem);
}

// Formats we recognize but do not decode, so the error can say what the file is.
const char* unsupported_format_name(const uint8_t* d, size_t n) {
  if (starts_with(d, n, "GIF87a", 6) || starts_with(d, n, "GIF89a", 6)) return "GIF";
  if (starts_with(d, n, "\0\0\0\x0cjP  \r\n\x87\n", 12) || starts_with(d, n, "\xff\x4f\xff\x51", 4))
    return "JPEG 2000";
  if (n >= 12 && std::memcmp(d + 4, "ftyp", 4) == 0) {
    if (std::memcmp(d + 8, "avif", 4) == 0 || std::memcmp(d + 8, "avis", 4) == 0) return "AVIF";
    for (const char* brand : {"heic", "heix", "hevc", "heim", "heis", "mif1", "msf1"}) {
      if (std::memcmp(d + 8, brand, 4) == 0) return "HEIF";
    }
  }
  if (starts_with(d, n, "\x76\x2f\x31\x01", 4)) return "OpenEXR";
  if (starts_with(d, n, "#?RADIANCE", 10) || starts_with(d, n, "#?RGBE", 6)) return "Radiance HDR";
  if (starts_with(d, n, "PF\n", 3) || starts_with(d, n, "Pf\n", 3)) return "PFM";
  if (starts_with(d, n, "P7\n", 3)) return "PAM";
  if (starts_with(d, n, "\x59\xa6\x6a\x95", 4)) return "Sun raster";
  if (starts_with(d, n, "II+\0", 4) || starts_with(d, n, "MM\0+", 4)) return "BigTIFF";
  if (starts_with(d, n, "8BPS", 4)) return "Photoshop (PSD)";
  if (starts_with(d, n, "%PDF", 4)) return "PDF";
  return nullptr;
}

// Dimensions as stored in a header: zero is corrupt, beyond int32 can never pass a limit.
int32_t checked_side(uint64_t value, std::string_view name, ImageFormat format, const char* what) {
  if (value == 0) throw corrupt_header(name, format, std::string("its ") + what + " is 0");
  if (value > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
    throw Error::too_large(quoted(name) + " claims a " + what + " of " + std::to_string(value) +
                           " pixels");
  }
  return static_cast<int32_t>(value);
}

// ---- TIFF structure (TIFF files and EXIF payloads) ----

struct TiffFields {
  bool has_width = false;
  bool has_height = false;
  uint32_t width = 0;
  uint32_t height = 0;
  int32_t orientation = 1;
  uint32_t bits_per_sample = 1;  // TIFF's default
  uint32_t extra_samples = 0;    // 0 unspecified, 1 associated (premultiplied), 2 unassociated
};

// Reads the tags we use from IFD0 of the TIFF structure in p[0, n). Returns false when the
// structure is malformed or points outside the buffer.
bool read_tiff_ifd0(const uint8_t* p, size_t n, TiffFields* out) {
  if (n < 8) return false;
  bool little;
  if (p[0] == 'I' && p[1] == 'I') {
    little = true;
  } else if (p[0] == 'M' && p[1] == 'M') {
    little = false;
  } else {
    return false;
  }
  auto u16 = [&](size_t at) { return little ? le16(p + at) : be16(p + at); };
  auto u32 = [&](size_t at) { return little ? le32(p + at) : be32(p + at); };
  if (u16(2) != 42) return false;
  const size_t ifd = u32(4);
  if (!fits(ifd, 2, n)) return false;
  const size_t count = u16(ifd);
  if (!fits(ifd + 2, count * 12, n)) return false;
  for (size_t i = 0; i < count; ++i) {
    const size_t entry = ifd + 2 + 12 * i;
    const uint16_t tag = u16(entry);
    const uint16_t type = u16(entry + 2);
    const uint64_t values = u32(entry + 4);
    const size_t unit = type == 3 ? 2 : type == 4 ? 4 : 0;  // SHORT or LONG; we need no other
    const bool size_tag = tag == 256 || tag == 257;
    // libtiff would read a size stored in another integer type; refuse what we cannot bound.
    if (size_tag && (unit == 0 || values == 0)) return false;
    if (unit == 0 || values == 0) continue;
    // Values that fit in 4 bytes sit in the entry itself, others at an offset.
    size_t at = entry + 8;
    if (values * unit > 4) {
      at = u32(entry + 8);
      if (!fits(at, unit, n)) return false;
    }
    const uint32_t first = unit == 2 ? u16(at) : u32(at);
    switch (tag) {
      // A repeated size tag with another value: which one would libtiff use?
      case 256:
        if (out->has_width && out->width != first) return false;
        out->has_width = true, out->width = first;
        break;
      case 257:
        if (out->has_height && out->height != first) return false;
        out->has_height = true, out->height = first;
        break;
      case 258: out->bits_per_sample = first; break;
      case 274:
        out->orientation = first >= 1 && first <= 8 ? static_cast<int32_t>(first) : 1;
        break;
      case 338: out->extra_samples = first; break;
      default: break;
    }
  }
  return true;
}

// EXIF orientation from an APP1/eXIf payload; a malformed EXIF block is ignored (as
// browsers do), it does not make the image unreadable.
int32_t exif_orientation(const uint8_t* p, size_t n) {
  if (starts_with(p, n, "Exif\0\0", 6)) p += 6, n -= 6;
  TiffFields fields;
  return read_tiff_ifd0(p, n, &fields) ? fields.orientation : 1;
}

// ---- per-format headers ----

ImageHeader make_header(ImageFormat format, int32_t width, int32_t height, int32_t orientation) {
  ImageHeader h;
  h.info.format = format;
  h.info.orientation = orientation;
  h.stored_width = width;
  h.stored_height = height;
  const bool swap = orientation >= 5;
  h.info.width = swap ? height : width;
  h.info.height = swap ? width : height;
  return h;
}

bool is_jpeg_sof(uint8_t marker) {
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

ImageHeader parse_jpeg(const uint8_t* d, size_t n, std::string_view name) {
  constexpr ImageFormat kFormat = ImageFormat::kJpeg;
  int32_t orientation = 1;
  size_t pos = 2;  // after SOI
  for (;;) {
    // libjpeg skips stray bytes before a marker (with a warning); so do we.
    const void* next = pos < n ? std::memchr(d + pos, 0xFF, n - pos) : nullptr;
    if (next == nullptr) throw corrupt_header(name, kFormat, "it ends before its frame header");
    pos = static_cast<const uint8_t*>(next) - d;
    while (pos < n && d[pos] == 0xFF) ++pos;  // fill bytes may pad any marker
    if (pos >= n) throw corrupt_header(name, kFormat, "it ends before its frame header");
    const uint8_t marker = d[pos++];
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // no length field
    if (marker == 0xD8 || marker == 0xD9 || marker == 0xDA || marker == 0x00) {
      throw corrupt_header(name, kFormat, "no frame header before its image data");
    }
    if (!fits(pos, 2, n)) throw corrupt_header(name, kFormat, "it ends before its frame header");
    const size_t length = be16(d + pos);
    if (length < 2 || !fits(pos, length, n)) {
      throw corrupt_header(name, kFormat,
                           "the segment at byte " + std::to_string(pos - 2) + " is cut short");
    }
    const uint8_t* segment = d + pos + 2;
    const size_t segment_size = length - 2;
    if (is_jpeg_sof(marker)) {
      if (segment_size < 6) throw corrupt_header(name, kFormat, "its frame header is cut short");
      // libjpeg-turbo 2.1 decodes baseline, extended and progressive, Huffman or arithmetic
      // coded; not lossless (SOF3/SOF11) nor hierarchical (SOF5-7, SOF13-15).
      if (marker != 0xC0 && marker != 0xC1 && marker != 0xC2 && marker != 0xC9 && marker != 0xCA) {
        throw Error::unsupported(quoted(name) + " is a lossless or hierarchical JPEG (SOF" +
                                 std::to_string(marker - 0xC0) + "), which is not supported");
      }
      if (segment[0] != 8) {
        throw Error::unsupported(quoted(name) + " is a JPEG with " + std::to_string(segment[0]) +
                                 "-bit samples; only 8-bit JPEG is supported");
      }
      const int32_t height = checked_side(be16(segment + 1), name, kFormat, "height");
      const int32_t width = checked_side(be16(segment + 3), name, kFormat, "width");
      return make_header(kFormat, width, height, orientation);
    }
    if (marker == 0xE1 && starts_with(segment, segment_size, "Exif\0\0", 6)) {
      orientation = exif_orientation(segment, segment_size);
    }
    pos += length;
  }
}

ImageHeader parse_png(const uint8_t* d, size_t n, std::string_view name) {
  constexpr ImageFormat kFormat = ImageFormat::kPng;
  // Signature (8), then IHDR: length (4), type (4), 13 bytes of data, CRC (4).
  if (n < 33) throw corrupt_header(name, kFormat, "it ends inside its header");
  if (be32(d + 8) != 13 || std::memcmp(d + 12, "IHDR", 4) != 0) {
    throw corrupt_header(name, kFormat, "its first chunk is not IHDR");
  }
  const int32_t width = checked_side(be32(d + 16), name, kFormat, "width");
  const int32_t height = checked_side(be32(d + 20), name, kFormat, "height");
  // An eXIf chunk counts only before IDAT (as in libpng and OpenCV). Chunk headers are
  // skipped by their lengths: a few comparisons per chunk, no data read.
  int32_t orientation = 1;
  for (size_t pos = 33; fits(pos, 8, n);) {
    const size_t length = be32(d + pos);
    const uint8_t* type = d + pos + 4;
    if (std::memcmp(type, "IDAT", 4) == 0 || std::memcmp(type, "IEND", 4) == 0) break;
    if (!fits(pos + 8, length, n)) break;
    if (std::memcmp(type, "eXIf", 4) == 0) orientation = exif_orientation(d + pos + 8, length);
    pos += 12 + length;
  }
  return make_header(kFormat, width, height, orientation);
}

ImageHeader parse_webp(const uint8_t* d, size_t n, std::string_view name) {
  constexpr ImageFormat kFormat = ImageFormat::kWebp;
  // RIFF header (12), first chunk's fourcc (4) and size (4), then at least 10 bytes of it.
  if (n < 30) throw corrupt_header(name, kFormat, "it ends inside its header");
  const uint8_t* chunk = d + 20;
  uint32_t width = 0;
  uint32_t height = 0;
  if (std::memcmp(d + 12, "VP8 ", 4) == 0) {
    if ((chunk[0] & 1) != 0 || std::memcmp(chunk + 3, "\x9d\x01\x2a", 3) != 0) {
      throw corrupt_header(name, kFormat, "its VP8 frame header is invalid");
    }
    width = le16(chunk + 6) & 0x3FFF;
    height = le16(chunk + 8) & 0x3FFF;
  } else if (std::memcmp(d + 12, "VP8L", 4) == 0) {
    if (chunk[0] != 0x2F) throw corrupt_header(name, kFormat, "its VP8L header is invalid");
    const uint32_t bits = le32(chunk + 1);
    width = (bits & 0x3FFF) + 1;
    height = ((bits >> 14) & 0x3FFF) + 1;
  } else if (std::memcmp(d + 12, "VP8X", 4) == 0) {
    if ((chunk[0] & 0x02) != 0) {
      throw Error::unsupported(quoted(name) + " is an animated WebP, which is not supported");
    }
    width = le24(chunk + 4) + 1;
    height = le24(chunk + 7) + 1;
  } else {
    throw corrupt_header(name, kFormat, "its first chunk is not VP8, VP8L or VP8X");
  }
  return make_header(kFormat, checked_side(width, name, kFormat, "width"),
                     checked_side(height, name, kFormat, "height"), 1);
}

ImageHeader parse_bmp(const uint8_t* d, size_t n, std::string_view name) {
  constexpr ImageFormat kFormat = ImageFormat::kBmp;
  // File header (14), then the DIB header whose first field is its own size.
  if (n < 26) throw corrupt_header(name, kFormat, "it ends inside its header");
  const uint32_t dib_size = le32(d + 14);
  if (dib_size == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit unsigned sides
    return make_header(kFormat, checked_side(le16(d + 18), name, kFormat, "width"),
                       checked_side(le16(d + 20), name, kFormat, "height"), 1);
  }
  if (dib_size < 40) throw corrupt_header(name, kFormat, "its DIB header size is invalid");
  if (n < 30) throw corrupt_header(name, kFormat, "it ends inside its header");
  const int64_t width = static_cast<int32_t>(le32(d + 18));
  int64_t height = static_cast<int32_t>(le32(d + 22));
  if (width < 0) throw corrupt_header(name, kFormat, "its width is negative");
  if (height < 0) height = -height;  // top-down rows
  return make_header(kFormat, checked_side(width, name, kFormat, "width"),
                     checked_side(height, name, kFormat, "height"), 1);
}

ImageHeader parse_tiff(const uint8_t* d, size_t n, std::string_view name) {
  constexpr ImageFormat kFormat = ImageFormat::kTiff;
  TiffFields fields;
  if (!read_tiff_ifd0(d, n, &fields)) {
    throw corrupt_header(name, kFormat, "its first directory (IFD) is cut short or malformed");
  }
  if (!fields.has_width || !fields.has_height) {
    throw corrupt_header(name, kFormat, "its first directory has no ImageWidth or ImageLength");
  }
  ImageHeader h =
      make_header(kFormat, checked_side(fields.width, name, kFormat, "width"),
                  checked_side(fields.height, name, kFormat, "height"), fields.orientation);
  h.orientation_applied_by_decoder = true;
  h.premultiplied_alpha = fields.bits_per_sample == 8 || fields.extra_samples == 1;
  return h;
}

bool is_pnm_space(uint8_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// Netpbm: "P1".."P6", then width, height and (except bitmaps) maxval as decimal numbers
// separated by whitespace, with '#' comments running to the end of a line.
ImageHeader parse_pnm(const uint8_t* d, size_t n, std::string_view name) {
  constexpr ImageFormat kFormat = ImageFormat::kPnm;
  const bool bitmap = d[1] == '1' || d[1] == '4';
  uint64_t numbers[3] = {0, 0, 1};
  size_t pos = 2;
  for (int i = 0; i < (bitmap ? 2 : 3); ++i) {
    while (pos < n && (is_pnm_space(d[pos]) || d[pos] == '#')) {
      if (d[pos] == '#') {
        while (pos < n && d[pos] != '\n' && d[pos] != '\r') ++pos;
      } else {
        ++pos;
      }
    }
    const size_t start = pos;
    while (pos < n && d[pos] >= '0' && d[pos] <= '9' && pos - start < 10) {
      numbers[i] = numbers[i] * 10 + (d[pos++] - '0');
    }
    if (pos == start || (pos < n && !is_pnm_space(d[pos]) && d[pos] != '#')) {
      throw corrupt_header(name, kFormat, "its header is not three decimal numbers");
    }
  }
  if (numbers[2] == 0 || numbers[2] > 65535) {
    throw corrupt_header(name, kFormat, "its maximum value is not in 1..65535");
  }
  return make_header(kFormat, checked_side(numbers[0], name, kFormat, "width"),
                     checked_side(numbers[1], name, kFormat, "height"), 1);
}

}  // namespace

const char* image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg: return "JPEG";
    case ImageFormat::kPng: return "PNG";
    case ImageFormat::kWebp: return "WebP";
    case ImageFormat::kBmp: return "BMP";
    case ImageFormat::kTiff: return "TIFF";
    case ImageFormat::kPnm: return "PNM";
    case ImageFormat::kUnknown: return "unknown";
  }
  return "unknown";
}

ImageFormat sniff_image_format(const uint8_t* d, size_t n) {
  if (starts_with(d, n, "\xff\xd8\xff", 3)) return ImageFormat::kJpeg;
  if (starts_with(d, n, "\x89PNG\r\n\x1a\n", 8)) return ImageFormat::kPng;
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) {
    return ImageFormat::kWebp;
  }
  if (starts_with(d, n, "II*\0", 4) || starts_with(d, n, "MM\0*", 4)) return ImageFormat::kTiff;
  // "BM" alone is common at the start of text; the DIB header size narrows it down.
  if (n >= 18 && d[0] == 'B' && d[1] == 'M') {
    const uint32_t dib_size = le32(d + 14);
    for (uint32_t known : {12, 40, 52, 56, 64, 108, 124}) {
      if (dib_size == known) return ImageFormat::kBmp;
    }
  }
  if (n >= 3 && d[0] == 'P' && d[1] >= '1' && d[1] <= '6' && is_pnm_space(d[2])) {
    return ImageFormat::kPnm;
  }
  return ImageFormat::kUnknown;
}

bool looks_like_image(const uint8_t* data, size_t size) {
  return sniff_image_format(data, size) != ImageFormat::kUnknown;
}

ImageHeader parse_image_header(const uint8_t* data, size_t size, std::string_view name) {
  if (size == 0) throw Error::corrupt(quoted(name) + " is empty (0 bytes)");
  switch (sniff_image_format(data, size)) {
    case ImageFormat::kJpeg: return parse_jpeg(data, size, name);
    case ImageFormat::kPng: return parse_png(data, size, name);
    case ImageFormat::kWebp: return parse_webp(data, size, name);
    case ImageFormat::kBmp: return parse_bmp(data, size, name);
    case ImageFormat::kTiff: return parse_tiff(data, size, name);
    case ImageFormat::kPnm: return parse_pnm(data, size, name);
    case ImageFormat::kUnknown: break;
  }
  if (const char* other = unsupported_format_name(data, size)) {
    throw Error::unsupported(
        quoted(name) + " is a " + other +
        " image, which is not supported (supported formats: " + kSupportedFormats + ")");
  }
  throw Error::unsupported(
      quoted(name) + " is not a recognized image (supported formats: " + kSupportedFormats + ")");
}

ImageInfo probe_image(const uint8_t* data, size_t size, std::string_view name_for_errors) {
  return parse_image_header(data, size, name_for_errors).info;
}

void check_image_complete(const ImageHeader& header, const uint8_t* d, size_t n,
                          std::string_view name) {
  if (header.info.format != ImageFormat::kJpeg) return;
  // Walk the markers to EOI: segments are skipped by their lengths and entropy-coded data by
  // searching for the next 0xFF that is not a stuffed byte or a restart marker, so an EOI
  // inside an EXIF thumbnail cannot stand in for the real one. memchr keeps this far
  // cheaper than decoding.
  size_t pos = 2;
  for (;;) {
    const void* next = pos < n ? std::memchr(d + pos, 0xFF, n - pos) : nullptr;
    if (next == nullptr) break;
    pos = static_cast<const uint8_t*>(next) - d;
    while (pos < n && d[pos] == 0xFF) ++pos;
    if (pos >= n) break;
    const uint8_t marker = d[pos++];
    if (marker == 0xD9) return;
    if (marker == 0x00 || marker == 0x01 || marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7)) {
      continue;
    }
    if (!fits(pos, 2, n)) break;
    const size_t length = be16(d + pos);
    if (length < 2 || !fits(pos, length, n)) break;
    pos += length;
  }
  throw Error::corrupt(quoted(name) +
                       " is a truncated JPEG image: it ends before its end-of-image marker");
}

}  // namespace mms
