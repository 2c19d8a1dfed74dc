#!/usr/bin/env bash
# Benchmark: text-to-image search over HTTP (POST /v1/search/text), `mmsearch serve` side by
# side with a Python peer doing the same work (scripts/python/peer_service.py: gunicorn sync
# workers + Flask + the PyTorch reference model + python3-faiss reading the same index file),
# on the same machine, driven by wrk with the same settings:
#   1. makes (or reuses) a synthetic 100k-item INDEX_DIR per index type (serve_bench
#      make-index: seeded random unit vectors, made-up paths and captions), by default HNSW32
#      (what "auto" builds at 100k) and Flat;
#   2. makes QUERY_COUNT distinct natural query texts (scripts/bench/make_queries.py, from the
#      committed word lists: the same file on every machine); wrk rotates through them
#      (scripts/bench/search_text.lua), so nothing a server could cache is asked twice before
#      the whole list has gone by;
#   3. measures each stage of a search in process (serve_bench stages), per index;
#   4. per index: starts both servers on free loopback ports, checks that they answer alike
#      (scripts/bench/compare_answers.py), then for each concurrency runs mmsearch then the
#      peer (a warm-up, then the measured run), so that machine noise hits both alike;
#   5. a soak at SOAK_CONCURRENCY for each server on the SOAK_ON index: failures, and memory
#      every 5 s (RSS and PSS; the peer's is the sum of its gunicorn master and workers);
#   6. prints a side-by-side table and writes $RESULTS/results.json (every figure, the
#      machine, load averages, git commit) and $RESULTS/table.md (the table for the README),
#      by scripts/bench/serve_report.py.
# Every server this script starts is stopped when it exits, on failure or interrupt too.
#
#   scripts/bench_serve.sh                              # the full run, about 10 minutes
#   DURATION=3 WARMUP=1 SOAK=5 CONCURRENCY="1 8" scripts/bench_serve.sh      # a smoke test
# Settings (environment):
#   BUILD=build         build folder with mmsearch and serve_bench (built here unless NO_BUILD=1)
#   MODEL=data/models/default   ITEMS=100000
#   INDEX_TYPES="auto Flat"     index types (FAISS factories; "auto": HNSW32 at 100k items),
#                       each in its own INDEX_DIR: data/cache/bench-serve-index for auto,
#                       data/cache/bench-serve-index-<type> for the others
#   DURATION=20         seconds of each measured run;   WARMUP=5  seconds of the warm-up before it
#   CONCURRENCY="1 8 64"
#   SOAK=60             seconds of each server's soak (0: no soak), at SOAK_CONCURRENCY=64, on
#   SOAK_ON=auto        the index of this type (one of INDEX_TYPES; else the first)
#   THREADS=$(nproc)    serve --threads: compute threads of mmsearch's batching worker
#   HTTP_THREADS=       serve --http-threads (empty: the server's default)
#   PEER_WORKERS=$THREADS   gunicorn sync workers of the peer, one torch/faiss thread each:
#                       the same number of cores' worth of compute as mmsearch
#   PEER_PYTHON=/usr/bin/python3   the interpreter with Debian's python3-torch, -faiss, -flask
#   WRK_THREADS=2       wrk -t (at most c); wrk runs on the same cores as the servers
#   QUERY_COUNT=1000    distinct query texts;   K=10 results per query
#   STAGES=1            0: skip the in-process stage costs (quicker smoke tests)
#   RESULTS=            folder for results.json, table.md, raw wrk outputs and server logs
#                       (default: a new folder under data/cache/bench-serve-runs/)
#
# On THREADS: mmsearch encodes and searches on ONE worker thread (the micro-batcher); --threads
# sets LibTorch's (and OpenMP's, so FAISS's) intra-op pool inside it. On 2 cores, 2 threads made
# batched HNSW search 2.4x faster per query and c=64 throughput 35% higher than THREADS=1.
# The peer gets the same cores as processes instead: PEER_WORKERS single-threaded workers.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# stop_tree, free_port, wait_healthy, mem_sample, summary_line
source scripts/bench/serve_lib.sh

BUILD="${BUILD:-build}"
MODEL="${MODEL:-data/models/default}"
ITEMS="${ITEMS:-100000}"
INDEX_TYPES="${INDEX_TYPES:-auto Flat}"
DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-5}"
CONCURRENCY="${CONCURRENCY:-1 8 64}"
SOAK="${SOAK:-60}"
SOAK_CONCURRENCY="${SOAK_CONCURRENCY:-64}"
SOAK_ON="${SOAK_ON:-auto}"
THREADS="${THREADS:-$(nproc)}"
HTTP_THREADS="${HTTP_THREADS:-}"
PEER_WORKERS="${PEER_WORKERS:-$THREADS}"
PEER_PYTHON="${PEER_PYTHON:-/usr/bin/python3}"
WRK_THREADS="${WRK_THREADS:-2}"
QUERY_COUNT="${QUERY_COUNT:-1000}"
K="${K:-10}"
STAGES="${STAGES:-1}"
WRK_TIMEOUT=10
LUA="scripts/bench/search_text.lua"
RESULTS="${RESULTS:-data/cache/bench-serve-runs/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RESULTS"
QUERIES="$RESULTS/queries.txt"
[[ " $INDEX_TYPES " == *" $SOAK_ON "* ]] || SOAK_ON="${INDEX_TYPES%% *}"

# ---- servers, and stopping them whatever happens ---------------------------------------------

# What runs in the background now (emptied once stopped, so that a pid reused later by
# another process is never signalled): the servers, a wrk run, a soak.
mmsearch_pid="" peer_pid="" wrk_pid="" soak_job=""
cleanup() {
  local pid
  for pid in "$soak_job" "$wrk_pid" "$mmsearch_pid" "$peer_pid"; do
    [ -z "$pid" ] || stop_tree "$pid"
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_mmsearch INDEX_DIR LOG, start_peer INDEX_DIR LOG: start one server on a free port and
# set ${name}_pid and ${name}_url (not waiting for it).
start_mmsearch() {
  local port args
  port=$(free_port)
  args=(serve --index "$1" --model "$MODEL" --port "$port" --threads "$THREADS")
  [ -n "$HTTP_THREADS" ] && args+=(--http-threads "$HTTP_THREADS")
  # The access log (one JSON line per request) goes to the log: the server's own statuses.
  "$BUILD/mmsearch" "${args[@]}" 2>"$2" &
  mmsearch_pid=$!
  mmsearch_url="http://127.0.0.1:$port"
}
start_peer() {
  local port
  port=$(free_port)
  OMP_NUM_THREADS=1 MMSEARCH_INDEX="$1" MMSEARCH_MODEL="$MODEL" \
    "$PEER_PYTHON" -m gunicorn --workers "$PEER_WORKERS" --worker-class sync \
    --bind "127.0.0.1:$port" --timeout 120 --pythonpath scripts/python \
    'peer_service:create_app()' >"$2" 2>&1 &
  peer_pid=$!
  peer_url="http://127.0.0.1:$port"
}

# run_wrk URL C SECONDS OFFSET OUT: wrk's output in OUT; prints its figures on one line.
run_wrk() {
  local t=$((WRK_THREADS < $2 ? WRK_THREADS : $2))
  # In the background and waited for: a signal to this script is handled at once.
  wrk -t"$t" -c"$2" -d"$3s" --latency --timeout "${WRK_TIMEOUT}s" -s "$LUA" "$1" \
    -- "$QUERIES" "$K" "$4" "$t" >"$5" 2>&1 &
  wrk_pid=$!
  wait "$wrk_pid" || true
  wrk_pid=""
  grep -q '^RESULT ' "$5" || { echo "bench_serve: wrk failed:"; tail -5 "$5"; exit 1; }
}

# ---- set-up ----------------------------------------------------------------------------------

# wrk from Debian, only when missing (as scripts/setup.sh installs packages).
if ! command -v wrk >/dev/null; then
  echo "bench_serve: installing wrk"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
# The peer's packages (python3-torch, -faiss, -flask, gunicorn) come with scripts/setup.sh.
peer_ready() { "$PEER_PYTHON" -c 'import faiss, flask, gunicorn, numpy, torch' 2>/dev/null; }
if ! peer_ready; then
  [ "${NO_BUILD:-0}" != 1 ] || { echo "bench_serve: $PEER_PYTHON lacks the peer's packages: run scripts/setup.sh"; exit 1; }
  scripts/setup.sh >/dev/null
  peer_ready || { echo "bench_serve: $PEER_PYTHON still cannot import faiss, flask, gunicorn, torch"; exit 1; }
fi
if [ "${NO_BUILD:-0}" != 1 ]; then
  [ -f "$BUILD/CMakeCache.txt" ] || scripts/setup.sh >/dev/null
  cmake --build "$BUILD" --target mmsearch serve_bench >/dev/null
fi

load() { cut -d' ' -f1-3 /proc/loadavg; }
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs || true)
load_start=$(load)
{
  echo "started_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc=$(nproc)"
  echo "cpu_model=${cpu_model:-unknown}"
  echo "mem_total_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
  echo "load_start=$load_start"
  echo "git_commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "git_modified_files=$(git status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
  echo "mmsearch_binary_mtime_utc=$(date -u -r "$BUILD/mmsearch" +%Y-%m-%dT%H:%M:%SZ)"
  echo "versions=wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null); python3-torch $(dpkg-query -W -f='${Version}' python3-torch 2>/dev/null); python3-faiss $(dpkg-query -W -f='${Version}' python3-faiss 2>/dev/null); python3-flask $(dpkg-query -W -f='${Version}' python3-flask 2>/dev/null); gunicorn $(dpkg-query -W -f='${Version}' gunicorn 2>/dev/null)"
  echo "model=$MODEL"
  echo "items=$ITEMS"
  echo "duration_s=$DURATION"
  echo "warmup_s=$WARMUP"
  echo "concurrency=$CONCURRENCY"
  echo "soak_s=$SOAK"
  echo "soak_concurrency=$SOAK_CONCURRENCY"
  echo "threads=$THREADS"
  echo "http_threads=${HTTP_THREADS:-default}"
  echo "peer_workers=$PEER_WORKERS"
  echo "wrk_threads=$WRK_THREADS"
  echo "wrk_timeout_s=$WRK_TIMEOUT"
  echo "k=$K"
} >"$RESULTS/meta.env"
echo "machine: $(nproc) cores, ${cpu_model:-unknown CPU}; load average at start: $load_start"
echo "results and logs: $RESULTS"

scripts/bench/make_queries.py --count "$QUERY_COUNT" >"$QUERIES"
{
  echo "queries_count=$(wc -l <"$QUERIES")"
  echo "queries_distinct=$(sort -u "$QUERIES" | wc -l)"
  echo "queries_sha256=$(sha256sum "$QUERIES" | cut -d' ' -f1)"
} >>"$RESULTS/meta.env"
echo "queries: $(wc -l <"$QUERIES") distinct texts (scripts/bench/make_queries.py), e.g. \"$(sed -n 2p "$QUERIES")\""

# ---- indexes and in-process stage costs -------------------------------------------------------

index_dir() {
  if [ "$1" = auto ]; then echo data/cache/bench-serve-index
  else echo "data/cache/bench-serve-index-$(tr '[:upper:]' '[:lower:]' <<<"$1" | tr -c 'a-z0-9\n' '-')"; fi
}
: >"$RESULTS/indexes.tsv"
labels=()
for type in $INDEX_TYPES; do
  dir=$(index_dir "$type")
  echo
  echo "== index $type: $dir ($ITEMS synthetic items: random unit vectors, not real embeddings) =="
  "$BUILD/serve_bench" make-index --model "$MODEL" --out "$dir" --items "$ITEMS" \
    --index-type "$type" | tee "$RESULTS/index.tmp"
  # The label is the type the index got (HNSW32 for auto at 100k), made safe for a folder name.
  label=$(sed -n 's/.*, type \(.*\) (requested.*/\1/p' "$RESULTS/index.tmp" | tr -c 'A-Za-z0-9.\n' '_')
  [ -n "$label" ] || { echo "bench_serve: serve_bench make-index printed no index type"; exit 1; }
  [ ! -e "$RESULTS/$label" ] || label="${label}_$type"
  mkdir -p "$RESULTS/$label"
  mv "$RESULTS/index.tmp" "$RESULTS/$label/index.txt"
  printf '%s\t%s\t%s\n' "$label" "$type" "$dir" >>"$RESULTS/indexes.tsv"
  labels+=("$label")
  [ "$type" = "$SOAK_ON" ] && echo "soak_index=$label" >>"$RESULTS/meta.env"
done
for label in "${labels[@]}"; do
  [ "$STAGES" = 1 ] || break
  dir=$(awk -F'\t' -v l="$label" '$1 == l { print $3 }' "$RESULTS/indexes.tsv")
  echo
  echo "== in-process stage costs on $label (serve_bench stages, compute threads $THREADS) =="
  "$BUILD/serve_bench" stages --model "$MODEL" --index "$dir" --queries "$QUERIES" \
    --threads "$THREADS" --k "$K" | tee "$RESULTS/$label/stages.txt"
done

# ---- load: both servers, interleaved ------------------------------------------------------------

for label in "${labels[@]}"; do
  dir=$(awk -F'\t' -v l="$label" '$1 == l { print $3 }' "$RESULTS/indexes.tsv")
  out="$RESULTS/$label"
  echo
  echo "== $label: starting mmsearch serve (--threads $THREADS) and the peer ($PEER_WORKERS gunicorn sync workers) =="
  start_mmsearch "$dir" "$out/mmsearch.log"
  start_peer "$dir" "$out/peer.log"
  wait_healthy mmsearch "$mmsearch_pid" "$mmsearch_url" "$out/mmsearch.log"
  wait_healthy peer "$peer_pid" "$peer_url" "$out/peer.log"
  echo "mmsearch: pid $mmsearch_pid on $mmsearch_url; peer: pid $peer_pid on $peer_url"
  mem_sample "$mmsearch_pid" >"$out/mmsearch-mem-start.txt"
  mem_sample "$peer_pid" >"$out/peer-mem-start.txt"
  scripts/bench/compare_answers.py "$mmsearch_url" "$peer_url" "$QUERIES" --k "$K" \
    | tee "$out/agreement.json"

  echo "-- ${DURATION} s per run after a ${WARMUP} s warm-up; wrk -t min(c, $WRK_THREADS), timeout ${WRK_TIMEOUT} s"
  for c in $CONCURRENCY; do
    for server in mmsearch peer; do
      url_var="${server}_url"
      # The warm-up starts elsewhere in the list (a quarter in), the measured run at its start.
      if [ "$WARMUP" -gt 0 ]; then
        run_wrk "${!url_var}" "$c" "$WARMUP" "$((QUERY_COUNT / 4))" "$out/$server-c$c-warmup.txt"
      fi
      # mmsearch's /metrics around the run: time in the server and micro-batch sizes.
      if [ "$server" = mmsearch ]; then curl -sf "$mmsearch_url/metrics" >"$out/$server-c$c-metrics-before.txt"; fi
      run_wrk "${!url_var}" "$c" "$DURATION" 0 "$out/$server-c$c.txt"
      if [ "$server" = mmsearch ]; then curl -sf "$mmsearch_url/metrics" >"$out/$server-c$c-metrics-after.txt"; fi
      printf '%-10s c=%-3d %-8s %s\n' "$label" "$c" "$server" "$(summary_line "$out/$server-c$c.txt")"
    done
  done

  if [ "$SOAK" -gt 0 ] && [ "$(sed -n 's/^soak_index=//p' "$RESULTS/meta.env")" = "$label" ]; then
    echo "-- soak: ${SOAK} s at c=$SOAK_CONCURRENCY per server, memory every 5 s"
    for server in mmsearch peer; do
      url_var="${server}_url"; pid_var="${server}_pid"
      run_wrk "${!url_var}" "$SOAK_CONCURRENCY" "$SOAK" 0 "$out/$server-soak.txt" &
      soak_job=$!
      t0=$(date +%s.%N)
      echo "0 $(mem_sample "${!pid_var}")" >"$out/$server-soak-mem.txt"
      for ((s = 5; s <= SOAK; s += 5)); do
        sleep "$(awk -v t0="$t0" -v s="$s" -v now="$(date +%s.%N)" 'BEGIN { d = t0 + s - now; print (d > 0 ? d : 0) }')"
        echo "$s $(mem_sample "${!pid_var}")" >>"$out/$server-soak-mem.txt"
      done
      wait "$soak_job"
      soak_job=""
      printf '%-10s soak   %-8s %s\n' "$label" "$server" "$(summary_line "$out/$server-soak.txt")"
    done
  fi
  curl -sf "$mmsearch_url/metrics" >"$out/mmsearch-metrics-end.txt"
  mem_sample "$mmsearch_pid" >"$out/mmsearch-mem-end.txt"
  mem_sample "$peer_pid" >"$out/peer-mem-end.txt"
  stop_tree "$mmsearch_pid"; mmsearch_pid=""
  stop_tree "$peer_pid"; peer_pid=""
done

echo "load_end=$(load)" >>"$RESULTS/meta.env"
echo "finished_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$RESULTS/meta.env"
echo
scripts/bench/serve_report.py "$RESULTS"
