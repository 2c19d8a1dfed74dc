// Fuzzes parse_query (index/query.h), the compound query syntax of `mmsearch search --query`
// and of POST /v1/search's "query". Findings: a crash, a sanitizer report, a non-Error
// exception (std::stof's out_of_range, say), or terms that break the parser's promises: at
// least one term, each weight finite (zero is compose_query's to refuse), an item id >= 0,
// no empty text or file name.
#include <cmath>
#include <string>

#include "index/query.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mms;
  using fuzz::check;
  std::vector<QueryTerm> terms;
  if (!fuzz::parses([&] { terms = parse_query(std::string(fuzz::as_text(data, size))); })) return 0;
  check(!terms.empty(), "a query parsed into no terms");
  for (const QueryTerm& t : terms) {
    check(std::isfinite(t.weight), "a term's weight is not finite");
    check(t.kind != QueryTerm::Kind::kItem || t.item >= 0, "a negative item id");
    check(t.kind == QueryTerm::Kind::kItem || !t.text.empty(), "an empty text or file term");
  }
  return 0;
}
