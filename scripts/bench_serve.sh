#!/usr/bin/env bash
# Benchmark: text-to-image search over HTTP (`mmsearch serve`, POST /v1/search/text) on a
# 100k-item index, driven by wrk:
#   1. builds a synthetic 100k-item INDEX_DIR for the model (serve_bench make-index: seeded
#      random unit vectors, made-up paths and captions; reused when present);
#   2. measures each stage of a search in process (serve_bench stages): tokenize, text
#      encode, FAISS search, catalog lookups;
#   3. starts the server on a free port, warms it up, and runs wrk at each concurrency
#      (requests/s, p50 / p99 latency, failures = non-2xx responses + socket errors);
#   4. a soak at concurrency 64, sampling the server's RSS every 5 s;
#   5. prints the micro-batch sizes from /metrics, the stage shares at concurrency 1, and a
#      summary table.
#
#   scripts/bench_serve.sh
# Settings (environment):
#   BUILD=build          build folder with mmsearch and serve_bench (built here unless NO_BUILD=1)
#   MODEL=data/models/default   INDEX=data/cache/bench-serve-index   ITEMS=100000
#   INDEX_TYPE=auto      (Flat below 100k vectors, HNSW32 from 100k on; or a FAISS factory)
#   DURATION=20          seconds per concurrency;   CONCURRENCY="1 8 64"
#   SOAK=60              seconds of the soak at concurrency SOAK_CONCURRENCY=64 (0: no soak)
#   THREADS=$(nproc)     serve --threads: compute threads of the one batching worker
#   HTTP_THREADS=        serve --http-threads (empty: the server's default, 128)
#   RESULTS=             folder for the raw wrk outputs and the server log (default: a new
#                        folder under data/cache/bench-serve-runs/)
#
# On THREADS: the server encodes and searches on ONE worker thread (the micro-batcher); --threads
# sets LibTorch's (and OpenMP's, so FAISS's) intra-op pool inside it. The default is the
# server's own (all cores). On 2 cores, 2 threads made batched HNSW search 2.4x faster per
# query (FAISS splits a batch's queries across threads) and c=64 throughput 35% higher than
# THREADS=1, while a lone text encode got slower (1.1 -> 2.1 ms): thread start-up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

BUILD="${BUILD:-build}"
MODEL="${MODEL:-data/models/default}"
INDEX="${INDEX:-data/cache/bench-serve-index}"
ITEMS="${ITEMS:-100000}"
INDEX_TYPE="${INDEX_TYPE:-auto}"
DURATION="${DURATION:-20}"
CONCURRENCY="${CONCURRENCY:-1 8 64}"
SOAK="${SOAK:-60}"
SOAK_CONCURRENCY="${SOAK_CONCURRENCY:-64}"
THREADS="${THREADS:-$(nproc)}"
HTTP_THREADS="${HTTP_THREADS:-}"
QUERIES="scripts/bench/queries.txt"
LUA="scripts/bench/search_text.lua"
K=10
RESULTS="${RESULTS:-data/cache/bench-serve-runs/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RESULTS"

# wrk, from Debian, only when missing (as scripts/setup.sh installs packages).
if ! command -v wrk >/dev/null; then
  echo "bench_serve: installing wrk"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
if [ "${NO_BUILD:-0}" != 1 ]; then
  [ -f "$BUILD/CMakeCache.txt" ] || scripts/setup.sh >/dev/null
  [ -f "$BUILD/CMakeCache.txt" ] || cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" --target mmsearch serve_bench >/dev/null
fi

load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
load_start="$(load)"
echo "load average at start: $load_start"
echo "results and logs: $RESULTS"

echo
echo "== index ($ITEMS synthetic items: random unit vectors, not real embeddings) =="
"$BUILD/serve_bench" make-index --model "$MODEL" --out "$INDEX" --items "$ITEMS" \
  --index-type "$INDEX_TYPE" | tee "$RESULTS/index.txt"

echo
echo "== in-process stage costs (serve_bench stages, compute threads $THREADS) =="
"$BUILD/serve_bench" stages --model "$MODEL" --index "$INDEX" --queries "$QUERIES" \
  --threads "$THREADS" --k "$K" | tee "$RESULTS/stages.txt"
stage() { awk -v s="$1" -v b="$2" '$1 == s && $2 == b { print $3 }' "$RESULTS/stages.txt"; }

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
serve_args=(serve --index "$INDEX" --model "$MODEL" --port "$port" --threads "$THREADS")
[ -n "$HTTP_THREADS" ] && serve_args+=(--http-threads "$HTTP_THREADS")
# The access log (one JSON line per request) goes to a file: it is also the server's own
# count of statuses.
"$BUILD/mmsearch" "${serve_args[@]}" 2>"$RESULTS/server.log" &
server=$!
stop_server() {
  if kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
}
trap stop_server EXIT
for _ in $(seq 600); do
  curl -sf "$url/healthz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { echo "bench_serve: the server exited:"; tail -5 "$RESULTS/server.log"; exit 1; }
  sleep 0.2
done
curl -sf "$url/healthz" >/dev/null || { echo "bench_serve: the server did not come up"; exit 1; }
echo
echo "server: pid $server on $url, ${serve_args[*]}"

# metric NAME_WITH_LABELS: its value in the server's /metrics now (0 when absent).
metrics() { curl -sf "$url/metrics" >"$RESULTS/metrics.tmp" && mv "$RESULTS/metrics.tmp" "$RESULTS/metrics.txt"; }
metric() { awk -v m="$1" '$1 == m { v = $2 } END { print v + 0 }' "$RESULTS/metrics.txt"; }
route='route="/v1/search/text"'
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$server/status"; }

# run_wrk NAME CONCURRENCY SECONDS: wrk's output in $RESULTS/NAME.txt; sets the globals
# rps p50 p99 mean failures statuses and, from /metrics deltas, server_ms (mean time in the
# server per search request), text_batch, search_batch (mean micro-batch sizes).
run_wrk() {
  local name=$1 c=$2 seconds=$3 t=$(($2 < 2 ? $2 : 2))
  metrics
  local s0 c0 tb0 tc0 sb0 sc0
  s0=$(metric "mmsearch_http_request_duration_seconds_sum{$route}")
  c0=$(metric "mmsearch_http_request_duration_seconds_count{$route}")
  tb0=$(metric 'mmsearch_batch_size_sum{kind="text"}'); tc0=$(metric 'mmsearch_batch_size_count{kind="text"}')
  sb0=$(metric 'mmsearch_batch_size_sum{kind="search"}'); sc0=$(metric 'mmsearch_batch_size_count{kind="search"}')
  wrk -t"$t" -c"$c" -d"${seconds}s" --latency --timeout 10s -s "$LUA" "$url" -- "$QUERIES" "$K" \
    >"$RESULTS/$name.txt" 2>&1
  metrics
  local line fail
  line=$(grep '^RESULT ' "$RESULTS/$name.txt")
  fail=$(grep '^FAILURES ' "$RESULTS/$name.txt")
  field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
  rps=$(field rps "$line"); p50=$(field p50_ms "$line"); p99=$(field p99_ms "$line")
  mean=$(field mean_ms "$line"); requests=$(field requests "$line")
  failures=$(field total "$fail"); statuses=$(field statuses "$fail")
  server_ms=$(awk -v a="$s0" -v b="$(metric "mmsearch_http_request_duration_seconds_sum{$route}")" \
    -v n0="$c0" -v n1="$(metric "mmsearch_http_request_duration_seconds_count{$route}")" \
    'BEGIN { printf "%.3f", (n1 > n0 ? 1000 * (b - a) / (n1 - n0) : 0) }')
  text_batch=$(awk -v a="$tb0" -v b="$(metric 'mmsearch_batch_size_sum{kind="text"}')" -v n0="$tc0" \
    -v n1="$(metric 'mmsearch_batch_size_count{kind="text"}')" 'BEGIN { printf "%.1f", (n1 > n0 ? (b - a) / (n1 - n0) : 0) }')
  search_batch=$(awk -v a="$sb0" -v b="$(metric 'mmsearch_batch_size_sum{kind="search"}')" -v n0="$sc0" \
    -v n1="$(metric 'mmsearch_batch_size_count{kind="search"}')" 'BEGIN { printf "%.1f", (n1 > n0 ? (b - a) / (n1 - n0) : 0) }')
  printf '%-8s c=%-3d %8s req/s  p50 %8s ms  p99 %8s ms  mean %8s ms  server %8s ms  batches text %5s search %5s  requests %s  failures %s (%s)\n' \
    "$name" "$c" "$rps" "$p50" "$p99" "$mean" "$server_ms" "$text_batch" "$search_batch" "$requests" "$failures" "$statuses"
}

echo
echo "== warm-up (5 s at concurrency 8) =="
run_wrk warmup 8 5

echo
echo "== load: ${DURATION} s per concurrency, wrk threads min(c, 2), timeout 10 s =="
declare -A R
for c in $CONCURRENCY; do
  run_wrk "c$c" "$c" "$DURATION"
  R[$c]="$rps $p50 $p99 $failures $text_batch $search_batch $mean $server_ms"
done

soak_line="(no soak)"
if [ "$SOAK" -gt 0 ]; then
  echo
  echo "== soak: ${SOAK} s at concurrency $SOAK_CONCURRENCY, server RSS every 5 s =="
  rss=("$(rss_kib)")
  run_wrk soak "$SOAK_CONCURRENCY" "$SOAK" &
  soak_job=$!
  for ((s = 5; s <= SOAK; s += 5)); do
    sleep 5
    rss+=("$(rss_kib)")
  done
  wait "$soak_job"
  # run_wrk ran in a subshell: read its figures back from its output.
  line=$(grep '^RESULT ' "$RESULTS/soak.txt"); fail=$(grep '^FAILURES ' "$RESULTS/soak.txt")
  soak_rps=$(sed -n 's/.* rps=\([^ ]*\).*/\1/p' <<<"$line")
  soak_p99=$(sed -n 's/.* p99_ms=\([^ ]*\).*/\1/p' <<<"$line")
  soak_requests=$(sed -n 's/.* requests=\([^ ]*\).*/\1/p' <<<"$line")
  soak_failures=$(sed -n 's/.* total=\([^ ]*\).*/\1/p' <<<"$fail")
  printf 'RSS MiB (t=0,5,10,... s):'
  for v in "${rss[@]}"; do printf ' %.1f' "$(awk -v k="$v" 'BEGIN { print k / 1024 }')"; done
  echo
  rss_first=$(awk -v k="${rss[0]}" 'BEGIN { printf "%.1f", k / 1024 }')
  rss_last=$(awk -v k="${rss[${#rss[@]} - 1]}" 'BEGIN { printf "%.1f", k / 1024 }')
  rss_max=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1 | awk '{ printf "%.1f", $1 / 1024 }')
  echo "RSS first $rss_first MiB, last $rss_last MiB, max $rss_max MiB"
  soak_line="$soak_requests requests, $soak_rps req/s, p99 $soak_p99 ms, failures $soak_failures; RSS first/last/max $rss_first/$rss_last/$rss_max MiB"
fi

echo
echo "== micro-batches over the whole run (/metrics mmsearch_batch_size) =="
metrics
for kind in text search; do
  n=$(metric "mmsearch_batch_size_count{kind=\"$kind\"}"); s=$(metric "mmsearch_batch_size_sum{kind=\"$kind\"}")
  printf '%-6s %8d batches, %9d jobs, mean %.1f;  batches of size <=:' "$kind" "$n" "$s" \
    "$(awk -v s="$s" -v n="$n" 'BEGIN { print n ? s / n : 0 }')"
  for le in 1 2 4 8 16 32 64; do
    printf ' %s:%d' "$le" "$(metric "mmsearch_batch_size_bucket{kind=\"$kind\",le=\"$le\"}")"
  done
  echo
done
echo "server-side statuses (access log):"
grep -o '"status":[0-9]*' "$RESULTS/server.log" | sort | uniq -c | sed 's/^/  /'

# Stage shares at concurrency 1. With one client there is no batching (every batch holds one
# job), so a request's time is the sum of its parts, and shares are taken of the MEAN latency
# wrk measured at c=1 (means add up; medians do not):
#   tokenize, text encode, FAISS search, catalog lookups (resolve the k hits): the in-process
#     medians at batch 1 from serve_bench stages;
#   rest of the handler: the mean time inside the server from /metrics (request parsed ..
#     response written) minus all of the above: JSON, hand-offs between the HTTP thread and
#     the batch worker, scheduling (a lone job runs at once: no batch timer);
#   outside the handler: wrk's mean minus the server's: the socket, TCP, wrk itself.
# The last two are "HTTP + queueing".
shares_line="(concurrency 1 not run)"
if [ -n "${R[1]:-}" ]; then
  read -r _ p50_1 _ _ _ _ mean_1 server_1 <<<"${R[1]}"
  tok=$(stage tokenize 1); enc=$(stage encode 1); sea=$(stage search 1); res=$(stage resolve 1)
  echo
  echo "== where a request's time goes at concurrency 1 (mean $mean_1 ms, p50 $p50_1 ms) =="
  awk -v m="$mean_1" -v tok="$tok" -v enc="$enc" -v sea="$sea" -v res="$res" \
    -v server="$server_1" 'BEGIN {
      handler = server - tok - enc - sea - res
      outside = m - server
      http = handler + outside
      row("tokenize", tok); row("text encode", enc); row("FAISS search", sea)
      row("catalog lookups (resolve k hits)", res)
      row("HTTP + queueing", http)
      row("  rest of the handler", handler)
      row("  outside the handler (socket, TCP)", outside)
      printf "tokenize %.1f%%, encode %.1f%%, search %.1f%% (+ lookups %.1f%%), HTTP+queueing %.1f%% (handler %.1f%%, outside handler %.1f%%) of the mean %.2f ms", \
        100 * tok / m, 100 * enc / m, 100 * sea / m, 100 * res / m, 100 * http / m,
        100 * handler / m, 100 * outside / m, m
    }
    function row(name, ms) { printf "  %-38s %8.3f ms %6.1f%%\n", name, ms, 100 * ms / m }' >"$RESULTS/shares.txt"
  sed '$d' "$RESULTS/shares.txt"
  shares_line=$(tail -1 "$RESULTS/shares.txt")
fi

load_end="$(load)"
index_type=$(sed -n 's/.*type \([^ ]*\) (requested.*/\1/p' "$RESULTS/index.txt")
echo
echo "== summary =="
echo "index: $ITEMS synthetic items, $index_type; model $MODEL; serve --threads $THREADS${HTTP_THREADS:+ --http-threads $HTTP_THREADS}"
echo "machine: $(nproc) cores; load average at start $load_start, at end $load_end"
printf '%-6s %10s %10s %10s %9s %12s %12s\n' conc 'req/s' 'p50 ms' 'p99 ms' failures 'text batch' 'search batch'
for c in $CONCURRENCY; do
  read -r a b d e f g _ _ <<<"${R[$c]}"
  printf '%-6s %10s %10s %10s %9s %12s %12s\n' "$c" "$a" "$b" "$d" "$e" "$f" "$g"
done
echo "soak ${SOAK} s at c=$SOAK_CONCURRENCY: $soak_line"
echo "stage shares at c=1: $shares_line"
echo "per-query in process (ms): tokenize $(stage tokenize 1); encode b1 $(stage encode 1), b8 $(stage encode 8), b64 $(stage encode 64); search b1 $(stage search 1), b8 $(stage search 8), b64 $(stage search 64); lookups $(stage resolve 1)"
