# Shell helpers shared by the scripts that start `mmsearch serve` and load it with wrk
# (scripts/bench_serve.sh, scripts/soak.sh). Sourced, not run; needs bash, curl, python3.

# stop_tree PID: TERM to PID (gunicorn's master passes it on to its workers), KILL to it and
# its children if they are still there after 15 s.
stop_tree() {
  local pid=$1 kids
  kill -0 "$pid" 2>/dev/null || return 0
  kids=$(pgrep -P "$pid" || true)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  # shellcheck disable=SC2086
  kill -KILL "$pid" $kids 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_healthy NAME PID URL LOG: until GET URL/healthz answers (the peer hashes the model and
# the index file at start-up: tens of seconds under load); exits the script when PID dies or
# 180 s pass.
wait_healthy() {
  local name=$1 pid=$2 url=$3 log=$4 me
  me=$(basename "$0" .sh)
  for _ in $(seq 900); do
    curl -sf "$url/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "$me: $name exited:"; tail -5 "$log"; exit 1; }
    sleep 0.2
  done
  echo "$me: $name did not come up in 180 s: $log"
  exit 1
}

# mem_sample PID: "RSS_KiB PSS_KiB PROCESSES" of PID and its children (gunicorn's master and
# its workers; for mmsearch, the one process). RSS counts shared pages once per process; PSS
# splits them.
mem_sample() {
  local pid rss=0 pss=0 n=0 r p
  for pid in "$1" $(pgrep -P "$1" || true); do
    r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
    p=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
    rss=$((rss + ${r:-0})); pss=$((pss + ${p:-0})); n=$((n + 1))
  done
  echo "$rss $pss $n"
}

# summary_line WRK_OUTPUT: the figures of scripts/bench/search_text.lua's RESULT and FAILURES
# lines on one line.
summary_line() {
  awk '/^RESULT / || /^FAILURES / { for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
       END { printf "%9.1f req/s  p50 %8.2f ms  p99 %8.2f ms  failures %s\n", f["rps"], f["p50_ms"], f["p99_ms"], f["total"] }' "$1"
}
