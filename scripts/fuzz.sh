#!/usr/bin/env bash
# Builds and runs the libFuzzer targets of tests/fuzz/ (one per parser of outside bytes).
#   scripts/fuzz.sh TARGET SECONDS   # one target, e.g. scripts/fuzz.sh query 60
#   scripts/fuzz.sh all SECONDS      # every target in turn (CI: scripts/fuzz.sh all 25)
#   scripts/fuzz.sh list             # the target names
# Builds with clang-14 (RelWithDebInfo, ASan + UBSan) into build-fuzz/; the tokenizer target
# runs under UBSan alone from build-fuzz-ubsan/, as ASan refuses the dlopen(RTLD_DEEPBIND)
# that loads the SentencePiece plugin (tokenizer/spm_bridge.h). Each run first replays
# tests/fuzz/regressions/TARGET/ (inputs that once crashed), then fuzzes from the seeds in
# tests/fuzz/corpus/TARGET/ (and the image or manifest fixtures) into build-fuzz/corpus/TARGET/,
# the growing corpus, kept between runs and never committed. A crash, sanitizer report,
# timeout (10 s) or memory blow-up (2 GiB) lands in build-fuzz/findings/TARGET/ and makes
# the script exit 1. Replay one input: build-fuzz/fuzz_TARGET FILE.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

targets=(image_probe image_decode safetensors memory model_config train_config manifest query
         http_target http_json http_multipart http_routes tokenizer)

usage() {
  echo "usage: scripts/fuzz.sh TARGET|all SECONDS   (targets: ${targets[*]})" >&2
  exit 2
}
[ "${1:-}" = list ] && { printf '%s\n' "${targets[@]}"; exit 0; }
(($# == 2)) || usage
which="${1#fuzz_}"
seconds="$2"
[[ "$seconds" =~ ^[0-9]+$ ]] && ((seconds > 0)) || usage
if [ "$which" = all ]; then
  run=("${targets[@]}")
else
  [[ " ${targets[*]} " == *" $which "* ]] || usage
  run=("$which")
fi

# clang, libFuzzer's runtime and clang's OpenMP (FAISS's CMake config asks for OpenMP).
packages=(clang-14 libfuzzer-14-dev libomp-14-dev)
"$root/scripts/apt_ensure.sh" fuzz "${packages[@]}"

jobs="${MMSEARCH_JOBS:-$(nproc)}"
# configure DIR SANITIZERS: configures a fuzz build folder with those sanitizers (once).
configure() {
  local build="$1" sanitize="$2"
  if [ ! -f "$build/build.ninja" ]; then
    CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build" -G Ninja \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMMSEARCH_FUZZ=ON -DMMSEARCH_TESTS=OFF \
      -DMMSEARCH_SANITIZE="$sanitize" >/dev/null
  fi
}
build_dir() { [ "$1" = tokenizer ] && echo "$root/build-fuzz-ubsan" || echo "$root/build-fuzz"; }

asan=() ubsan=()
for t in "${run[@]}"; do
  if [ "$t" = tokenizer ]; then ubsan+=("fuzz_$t"); else asan+=("fuzz_$t"); fi
done
if ((${#asan[@]})); then
  configure "$root/build-fuzz" "address;undefined"
  cmake --build "$root/build-fuzz" -j "$jobs" --target "${asan[@]}"
fi
if ((${#ubsan[@]})); then
  configure "$root/build-fuzz-ubsan" "undefined"
  cmake --build "$root/build-fuzz-ubsan" -j "$jobs" --target "${ubsan[@]}"
fi

supp="$root/tests/sanitizer"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
[ -f "$supp/lsan.supp" ] && export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
[ -f "$supp/ubsan.supp" ] && UBSAN_OPTIONS+=":suppressions=$supp/ubsan.supp"

# fuzz TARGET: replays the regressions, fuzzes for $seconds, prints one summary line.
summary=()
failed=0
fuzz() {
  local t="$1" build exe corpus findings log status=ok
  build="$(build_dir "$t")"
  exe="$build/fuzz_$t"
  corpus="$root/build-fuzz/corpus/$t"
  findings="$root/build-fuzz/findings/$t"
  log="$root/build-fuzz/findings/$t.log"
  mkdir -p "$corpus" "$findings"
  local seeds=("$root/tests/fuzz/corpus/$t")
  local options=()
  case "$t" in
    image_*) seeds+=("$root/tests/fixtures/images") ;;
    manifest) seeds+=("$root/tests/fixtures/manifests") ;;
  esac
  case "$t" in
    safetensors | memory | model_config | train_config | manifest | http_json)
      options+=(-dict="$root/tests/fuzz/json.dict") ;;
  esac
  local regressions=("$root/tests/fuzz/regressions/$t"/*)
  if [ -e "${regressions[0]}" ]; then
    if ! "$exe" -timeout=10 -rss_limit_mb=2048 "${regressions[@]}" >"$log.replay" 2>&1; then
      echo "fuzz $t: a regression input still fails (log: $log.replay)" >&2
      status="REGRESSION"
    fi
  fi
  local rc=0
  "$exe" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$findings/" ${options[@]+"${options[@]}"} "$corpus" "${seeds[@]}" \
    >"$log" 2>&1 || rc=$?
  # libFuzzer's last status line ("#N DONE cov: C ft: F corp: ...") and final stats.
  local last runs rate cov ft
  last="$(grep -E '^#[0-9]+' "$log" | tail -1 || true)"
  # (after a crash libFuzzer prints its final stats twice: keep the last)
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
  if ((rc != 0)); then
    status="FINDING"
    echo "fuzz $t: libFuzzer exited $rc; inputs in $findings/, log $log" >&2
    grep -E "^(==[0-9]+==ERROR|SUMMARY|fuzz finding|terminate called|  what\(\))" "$log" >&2 || true
  fi
  [ "$status" = ok ] || failed=1
  summary+=("$(printf '%-15s %-10s runs %-10s exec/s %-7s cov %-6s ft %s' \
    "$t" "$status" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}")")
  echo "${summary[-1]}"
}

for t in "${run[@]}"; do fuzz "$t"; done
if ((${#run[@]} > 1)); then
  echo "--- fuzz summary (${seconds} s each)"
  printf '%s\n' "${summary[@]}"
fi
exit "$failed"
