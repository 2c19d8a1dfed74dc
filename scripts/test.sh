#!/usr/bin/env bash
# Sets up if needed, builds, and runs every test (fast and slow tiers).
#   scripts/test.sh                               # everything, as CI runs it
#   scripts/test.sh -L fast                       # the developer loop: unit and in-process tests
#   scripts/test.sh --sanitize address,undefined  # ASan + UBSan build in build-asan/, then tests
#   scripts/test.sh --sanitize thread             # TSan build in build-tsan/: the concurrent parts
# Other arguments go to ctest. A sanitizer report fails the test that triggered it;
# tests/sanitizer/*.supp lists the only suppressions (third-party code, with the reason).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

sanitize=""
args=()
while (($#)); do
  case "$1" in
    --sanitize) sanitize="${2:?--sanitize needs a list, e.g. address,undefined}"; shift 2 ;;
    --sanitize=*) sanitize="${1#--sanitize=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

"$root/scripts/setup.sh"
build="$root/build"
if [ -n "$sanitize" ]; then
  case "$sanitize" in
    address,undefined|undefined,address|address|undefined) build="$root/build-asan" ;;
    thread) build="$root/build-tsan" ;;
    *) echo "test.sh: --sanitize takes address,undefined or thread, not '$sanitize'" >&2; exit 2 ;;
  esac
  # The sanitized libraries and tests; the model and data stay the release build's.
  # -O1 with line tables only: the sanitizers' advice, and half the compile time of -O2 -g
  # on the LibTorch-heavy files, which CI pays once per cold ccache.
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" \
    -DMMSEARCH_SANITIZE="${sanitize//,/;}" >/dev/null
  targets=()
  if [ "$sanitize" = thread ] && ((${#args[@]} == 0)); then
    # The concurrent parts, by default: the batcher, the catalog's readers and writer, the
    # indexer and the server under its HTTP and hostile-client tests. Everything else runs
    # on one thread of ours; other ctest arguments (-L fast, -R ...) pick tests as usual.
    targets=(--target mmsearch service_batcher_test index_collection_test index_indexer_test
             service_http_cli_slow_test service_hostile_cli_slow_test)
    args=(-R '^(BatcherTest|CollectionTest|CollectionAutoIndexType|IndexerTest|ServiceHttpTest|HostileClientTest)\.')
  fi
  cmake --build "$build" -j "${MMSEARCH_JOBS:-$(nproc)}" "${targets[@]+"${targets[@]}"}"
  supp="$root/tests/sanitizer"
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0"
  export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$supp/ubsan.supp"
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp"
  # TSan cannot see the barriers of the OpenMP runtime that LibTorch, OpenBLAS and FAISS run
  # their loops on (uninstrumented libgomp), so under it they run one thread each; our own
  # threads (batcher, connections, readers and writers) are all still there.
  if [ "$sanitize" = thread ]; then export OMP_NUM_THREADS=1; fi
fi
cd "$build"
ctest --output-on-failure -j "$(nproc)" --timeout 900 "${args[@]+"${args[@]}"}"
