// Image-text pairs from the three formats users bring: our JSONL manifest, COCO captions
// JSON and the Karpathy split JSON. Every reader returns pairs in file order with the image
// path already resolved (absolute, lexically normalized) and the caption trimmed and
// non-empty; malformed input throws mms::Error naming the file (and the line, for JSONL).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mms {

enum class Split { kTrain, kVal, kTest };

// "train", "val" or "test".
const char* split_name(Split split);

// Inverse of split_name; throws Error::invalid_argument naming the value otherwise.
// Manifest readers also accept "restval" (Karpathy) as train; this function does not.
Split parse_split(std::string_view name);

struct Pair {
  std::string image;    // resolved path of the image file (not checked for existence)
  std::string caption;  // trimmed of surrounding whitespace, never empty
  Split split = Split::kTrain;
  std::string group;  // concept id: pairs of one group must stay on one side of a split
  std::string label;  // optional class name (e.g. Fashion-MNIST's), for zero-shot accuracy
  // Optional short descriptions of the same image, for training views (augment.h) and the
  // natural-query evaluation (query_eval.h): what it shows in a few words ("red apple"), its
  // tags ("apple", "fruit"), and other names (aliases, translations).
  std::string title;
  std::vector<std::string> keywords;
  std::vector<std::string> names;
};

// The evaluation galleries of one split (DESIGN.md, evaluation protocol): its unique images
// and unique texts, each in order of first appearance, and the pairing between them. A text
// query hits if any of text_to_images[t] is retrieved; an image query hits if any of
// image_to_texts[i] is. Index lists are sorted ascending and free of duplicates; every
// image has at least one text and every text at least one image.
struct Gallery {
  std::vector<std::string> images;
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> text_to_images;  // [texts.size()] indices into images
  std::vector<std::vector<int32_t>> image_to_texts;  // [images.size()] indices into texts
  // [images.size()] each image's class label (from its first pair), or empty when any
  // image of the split has none.
  std::vector<std::string> image_labels;
};

// Builds the galleries of `split` from `pairs`; empty when the split has no pairs. Texts
// are compared exactly (after the readers' trimming), so one caption shared by two images
// is one text paired with both.
Gallery make_gallery(const std::vector<Pair>& pairs, Split split);

// The JSONL manifest (DESIGN.md): one object per line,
//   {"image": "a/b.png", "caption": "...", "split": "train|val|test", "group": "..."}
// "image" and "caption" are required strings. "split" is optional (absent or null means
// train; "restval" is read as train). "group" is an optional string (absent or null means
// the resolved image path). "label" is an optional class name. "title" (a string),
// "keywords" and "names" (arrays of strings) are optional short descriptions. Other keys
// are ignored. Blank lines are skipped; a UTF-8 BOM
// and CRLF line ends are accepted. Relative image paths resolve against `image_root`, or
// the manifest's folder when it is empty. The file is read line by line.
// Throws Error::not_found for a missing file, Error::corrupt "manifest 'PATH' line N: ..."
// for a malformed line, Error::io when reading fails.
std::vector<Pair> read_manifest(const std::string& path, const std::string& image_root = "");

// COCO captions JSON ({"images": [{"id", "file_name"}], "annotations": [{"image_id",
// "caption", "id"}]}): one pair per annotation in file order, all in `split`; image path =
// image_root / file_name (image_root empty: the JSON file's folder); group = the image id
// in decimal. Image ids may be integers or strings. Throws Error::corrupt naming the file
// and the offending entry (e.g. an annotation whose image_id is not among the images).
std::vector<Pair> read_coco_captions(const std::string& path, const std::string& image_root,
                                     Split split);

// Karpathy split JSON ({"dataset", "images": [{"filepath"?, "filename", "split",
// "sentences": [{"raw"}], "imgid"?, "cocoid"?}]}): one pair per sentence, split from each
// image ("restval" is train); image path = image_root / [filepath /] filename (image_root
// empty: the JSON file's folder); group = cocoid, else imgid, else the image path.
std::vector<Pair> read_karpathy_split(const std::string& path, const std::string& image_root);

enum class PairFormat { kManifest, kCoco, kKarpathy };

// Tells the three formats apart by content, reading only as far as needed: a top-level
// object with "annotations" (or whose first image has "file_name") is COCO, one with
// "dataset" (or whose first image has "filename" or "sentences") is Karpathy, anything else
// (including an empty file or a first line that is not valid JSON) is a JSONL manifest, so
// that its reader reports the problem with a line number.
PairFormat detect_pair_format(const std::string& path);

// Reads any of the three formats (detect_pair_format). COCO captions carry no split of
// their own: their pairs get `coco_split` (test by default, so that `mmsearch eval` can
// take a COCO val file as it is).
std::vector<Pair> read_pairs(const std::string& path, const std::string& image_root = "",
                             Split coco_split = Split::kTest);

}  // namespace mms
