#!/usr/bin/env bash
# Soak (issue 17, item 5): `mmsearch serve` under steady load for a long time while its index
# changes underneath it, to catch what short benchmarks miss (leaks, slow creep of latency,
# failures around reloads). Not part of CI or scripts/test.sh: run it by hand, on a quiet
# machine.
#   1. copies BASE real images (Open Clip Art PNGs, from scripts/fetch_data.sh) into a work
#      folder and indexes them with the shipped model;
#   2. starts `mmsearch serve` on that index and loads it with wrk at c=CONCURRENCY
#      (POST /v1/search/text, the benchmark's query texts and scripts/bench/search_text.lua),
#      in back-to-back slices of REPORT_EVERY seconds, for DURATION seconds in all;
#   3. meanwhile, every CHURN_EVERY seconds, deletes CHURN of the indexed images, adds CHURN
#      new ones and runs `mmsearch index --prune` on the folder (the one writer), and every
#      RELOAD_EVERY seconds sends the server SIGHUP (reload the index);
#   4. prints one line per slice (seconds, requests/s, p50, p99, failed requests, the server's
#      RSS, images it serves, index runs ok / failed, reloads), then a summary; exits 1 when a
#      request or an index run failed, or the server died.
# Each slice is a fresh wrk run, so its connections are new every REPORT_EVERY seconds; the
# gap between slices is a few milliseconds. Everything started here is stopped on exit.
#
#   scripts/soak.sh                          # 10 minutes at c=64
#   DURATION=60 scripts/soak.sh              # a smoke test
# Settings (environment):
#   BUILD=build          folder with mmsearch (built here unless NO_BUILD=1)
#   MODEL=data/models/default
#   IMAGES=data/cache/openclipart-png/usr/share/openclipart/png   where the PNGs come from
#   BASE=500             images indexed before the load starts
#   CHURN=20             images deleted and as many added before each index run
#   DURATION=600         seconds of load;   CONCURRENCY=64   connections
#   REPORT_EVERY=15      seconds per slice (one line each)
#   CHURN_EVERY=20       seconds between index runs;   RELOAD_EVERY=30   seconds between SIGHUPs
#   THREADS=$(nproc)     serve --threads;   INDEX_THREADS=1   index --threads
#   WRK_THREADS=2        wrk -t;   QUERY_COUNT=1000 distinct query texts;   K=10
#   RESULTS=             folder for the work files and logs (default: a new folder under
#                        data/cache/soak-runs/)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# stop_tree, free_port, wait_healthy, mem_sample
source scripts/bench/serve_lib.sh

BUILD="${BUILD:-build}"
MODEL="${MODEL:-data/models/default}"
IMAGES="${IMAGES:-data/cache/openclipart-png/usr/share/openclipart/png}"
BASE="${BASE:-500}"
CHURN="${CHURN:-20}"
DURATION="${DURATION:-600}"
CONCURRENCY="${CONCURRENCY:-64}"
REPORT_EVERY="${REPORT_EVERY:-15}"
CHURN_EVERY="${CHURN_EVERY:-20}"
RELOAD_EVERY="${RELOAD_EVERY:-30}"
THREADS="${THREADS:-$(nproc)}"
INDEX_THREADS="${INDEX_THREADS:-1}"
WRK_THREADS="${WRK_THREADS:-2}"
QUERY_COUNT="${QUERY_COUNT:-1000}"
K="${K:-10}"
RESULTS="${RESULTS:-data/cache/soak-runs/$(date +%Y%m%d-%H%M%S)}"
LUA="scripts/bench/search_text.lua"

command -v wrk >/dev/null || { echo "soak: needs wrk (apt-get install wrk, or run scripts/bench_serve.sh once)"; exit 1; }
[ -d "$IMAGES" ] || { echo "soak: no images under $IMAGES: run scripts/fetch_data.sh"; exit 1; }
if [ "${NO_BUILD:-0}" != 1 ]; then
  [ -f "$BUILD/CMakeCache.txt" ] || scripts/setup.sh >/dev/null
  cmake --build "$BUILD" --target mmsearch >/dev/null
fi
mkdir -p "$RESULTS/photos"
photos="$RESULTS/photos" index="$RESULTS/index"

# ---- what runs in the background, and stopping it whatever happens ---------------------------

server_pid="" churn_pid="" reload_pid="" wrk_pid=""
cleanup() {
  local pid
  for pid in "$wrk_pid" "$churn_pid" "$reload_pid"; do
    [ -z "$pid" ] || { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  done
  [ -z "$server_pid" ] || stop_tree "$server_pid"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the images: a pool of real PNGs, copied in under names of their own -------------------

find "$IMAGES" -type f -name '*.png' | sort >"$RESULTS/pool.txt"
pool_size=$(wc -l <"$RESULTS/pool.txt")
[ "$pool_size" -ge "$BASE" ] || { echo "soak: $IMAGES holds $pool_size PNGs, fewer than BASE=$BASE"; exit 1; }
# add_image N: copies the pool's image N (cycling through the pool) to photos/imgN.png.
add_image() {
  cp "$(sed -n "$(($1 % pool_size + 1))p" "$RESULTS/pool.txt")" "$photos/img$1.png"
}
for ((i = 0; i < BASE; i++)); do add_image "$i"; done
index_args=(index --index "$index" --model "$MODEL" --threads "$INDEX_THREADS" --prune "$photos")
echo "soak: indexing $BASE images from $IMAGES into $index"
"$BUILD/mmsearch" "${index_args[@]}" >"$RESULTS/index-first.log" 2>&1 ||
  { echo "soak: the first index run failed:"; tail -5 "$RESULTS/index-first.log"; exit 1; }
scripts/bench/make_queries.py --count "$QUERY_COUNT" >"$RESULTS/queries.txt"

# ---- the server -------------------------------------------------------------------------------

port=$(free_port)
url="http://127.0.0.1:$port"
"$BUILD/mmsearch" serve --index "$index" --model "$MODEL" --port "$port" --threads "$THREADS" \
  2>"$RESULTS/serve.log" &
server_pid=$!
wait_healthy mmsearch "$server_pid" "$url" "$RESULTS/serve.log"

# ---- the writer and the reloads, in the background ----------------------------------------------

# Each index run's outcome is one line of index-runs.txt ("ok" or "failed"), for the report.
: >"$RESULTS/index-runs.txt"
# TERM ends the loop after the step in progress (a TERM during the sleep ends the wait at
# once), so that the last index run is counted.
(
  stopping=""
  trap 'stopping=1' TERM
  oldest=0 next=$BASE
  while :; do
    sleep "$CHURN_EVERY" & wait $!
    [ -z "$stopping" ] || break
    for ((i = 0; i < CHURN; i++)); do
      rm -f "$photos/img$oldest.png"; oldest=$((oldest + 1))
      add_image "$next"; next=$((next + 1))
    done
    if "$BUILD/mmsearch" "${index_args[@]}" >>"$RESULTS/index.log" 2>&1; then
      echo ok >>"$RESULTS/index-runs.txt"
    else
      echo failed >>"$RESULTS/index-runs.txt"
    fi
  done
) &
churn_pid=$!
: >"$RESULTS/reloads.txt"
(
  trap 'exit 0' TERM
  while :; do
    sleep "$RELOAD_EVERY" & wait $!
    kill -HUP "$server_pid" 2>/dev/null && echo "$(date +%s)" >>"$RESULTS/reloads.txt"
  done
) &
reload_pid=$!

# ---- the load, slice by slice -------------------------------------------------------------------

echo "soak: $url for ${DURATION} s at c=$CONCURRENCY (wrk -t$WRK_THREADS, ${REPORT_EVERY} s slices); index run every ${CHURN_EVERY} s (-$CHURN/+$CHURN images), SIGHUP every ${RELOAD_EVERY} s; logs in $RESULTS"
printf '%6s %9s %9s %9s %8s %9s %7s %11s %7s\n' seconds req/s p50_ms p99_ms failed rss_MiB images index_ok/bad reloads
echo "seconds rps p50_ms p99_ms failed rss_kib images index_ok index_failed reloads" >"$RESULTS/soak.tsv"
rss_start=$(mem_sample "$server_pid" | cut -d' ' -f1)
start=$(date +%s)
elapsed=0 slice=0 requests=0 failed=0 p99_max=0 rss_max=$rss_start
while [ "$elapsed" -lt "$DURATION" ]; do
  seconds=$((DURATION - elapsed < REPORT_EVERY ? DURATION - elapsed : REPORT_EVERY))
  [ "$seconds" -ge 1 ] || seconds=1
  out="$RESULTS/wrk-$slice.txt"
  # A different place in the query list each slice: nothing repeats until the list has gone by.
  wrk -t"$WRK_THREADS" -c"$CONCURRENCY" -d"${seconds}s" --latency --timeout 10s -s "$LUA" "$url" \
    -- "$RESULTS/queries.txt" "$K" "$((slice * 97))" "$WRK_THREADS" >"$out" 2>&1 &
  wrk_pid=$!
  wait "$wrk_pid" || true
  wrk_pid=""
  elapsed=$(($(date +%s) - start)) slice=$((slice + 1))
  kill -0 "$server_pid" 2>/dev/null || { echo "soak: the server died at ${elapsed} s:"; tail -5 "$RESULTS/serve.log"; exit 1; }
  grep -q '^RESULT ' "$out" || { echo "soak: wrk failed:"; tail -5 "$out"; exit 1; }
  read -r rps p50 p99 n fails < <(awk '/^RESULT / || /^FAILURES / { for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
    END { print f["rps"], f["p50_ms"], f["p99_ms"], f["requests"], f["total"] }' "$out")
  rss=$(mem_sample "$server_pid" | cut -d' ' -f1)
  images=$(curl -sf "$url/metrics" | awk '/^mmsearch_index_vectors\{target="images"\}/ { print $2 }')
  runs_ok=$(grep -c '^ok$' "$RESULTS/index-runs.txt" || true)
  runs_bad=$(grep -c '^failed$' "$RESULTS/index-runs.txt" || true)
  reloads=$(wc -l <"$RESULTS/reloads.txt")
  requests=$((requests + n)) failed=$((failed + fails))
  p99_max=$(awk -v a="$p99_max" -v b="$p99" 'BEGIN { print (b > a ? b : a) }')
  [ "$rss" -gt "$rss_max" ] && rss_max=$rss
  printf '%6d %9.1f %9.2f %9.2f %8d %9.1f %7s %5d / %-3d %7d\n' "$elapsed" "$rps" "$p50" "$p99" \
    "$fails" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "${images:-?}" "$runs_ok" "$runs_bad" "$reloads"
  echo "$elapsed $rps $p50 $p99 $fails $rss ${images:-NA} $runs_ok $runs_bad $reloads" >>"$RESULTS/soak.tsv"
done

# ---- the verdict ----------------------------------------------------------------------------------

echo "soak: load done; waiting for the index run in progress, if any"
kill -TERM "$churn_pid" "$reload_pid" 2>/dev/null || true
wait "$churn_pid" "$reload_pid" 2>/dev/null || true
churn_pid="" reload_pid=""
runs_ok=$(grep -c '^ok$' "$RESULTS/index-runs.txt" || true)
runs_bad=$(grep -c '^failed$' "$RESULTS/index-runs.txt" || true)
reloads=$(wc -l <"$RESULTS/reloads.txt")
rss_end=$(mem_sample "$server_pid" | cut -d' ' -f1)
reload_errors=$(grep -c 'reload failed' "$RESULTS/serve.log" || true)
echo
echo "soak: $requests requests, $failed failed; p99 at most ${p99_max} ms;" \
  "RSS $((rss_start / 1024)) MiB at the start, $((rss_end / 1024)) at the end, $((rss_max / 1024)) at most;" \
  "index runs $runs_ok ok, $runs_bad failed; $reloads reloads, $reload_errors failed"
status=0
[ "$failed" -eq 0 ] || { echo "soak: FAILED: $failed requests failed (wrk outputs: $RESULTS/wrk-*.txt)"; status=1; }
[ "$runs_bad" -eq 0 ] || { echo "soak: FAILED: $runs_bad index runs failed ($RESULTS/index.log)"; status=1; }
[ "$reload_errors" -eq 0 ] || { echo "soak: FAILED: $reload_errors reloads failed ($RESULTS/serve.log)"; status=1; }
stop_tree "$server_pid"; server_pid=""
[ "$status" -ne 0 ] || echo "soak: passed"
exit "$status"
