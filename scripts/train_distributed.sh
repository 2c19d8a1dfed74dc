#!/usr/bin/env bash
# Starts the local ranks of a distributed `mmsearch train`, the way torchrun does: each process
# gets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, an equal share of this
# machine's cores (--threads, and CPU pinning where taskset exists), and if one rank fails
# the others are stopped (after a grace period in which they can report which rank failed).
#
#   scripts/train_distributed.sh --nproc N [--nnodes M --node-rank R --master HOST:PORT]
#                                [--grace SECONDS] [--no-pin] -- TRAIN_ARGS...
#
# TRAIN_ARGS are `mmsearch train`'s (--config, --out, --resume, --set, --dist-timeout, ...).
# One machine: --master defaults to 127.0.0.1 and a free port. Several machines: run the same
# command on each, with its own --node-rank, the same --nnodes and --master (node 0's address
# and a port open between the machines); see docs/distributed-training.md.
# MMSEARCH=/path/to/mmsearch picks the program (default build/mmsearch).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

nproc_per_node=""
nnodes=1
node_rank=0
master=""
grace=30
pin=1
while (($#)); do
  case "$1" in
    --nproc) nproc_per_node="${2:?--nproc needs a number}"; shift 2 ;;
    --nnodes) nnodes="${2:?--nnodes needs a number}"; shift 2 ;;
    --node-rank) node_rank="${2:?--node-rank needs a number}"; shift 2 ;;
    --master) master="${2:?--master needs HOST:PORT}"; shift 2 ;;
    --grace) grace="${2:?--grace needs seconds}"; shift 2 ;;
    --no-pin) pin=0; shift ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "train_distributed: unknown option '$1' (train arguments go after --)" >&2; exit 2 ;;
  esac
done
is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
is_count "$nproc_per_node" || { echo "train_distributed: --nproc must be a positive number" >&2; exit 2; }
is_count "$nnodes" || { echo "train_distributed: --nnodes must be a positive number" >&2; exit 2; }
[[ "$node_rank" =~ ^[0-9]+$ ]] && ((node_rank < nnodes)) ||
  { echo "train_distributed: --node-rank must be in [0, $((nnodes - 1))]" >&2; exit 2; }
(($#)) || { echo "train_distributed: no train arguments after --" >&2; exit 2; }

if [[ -z "$master" ]]; then
  if ((nnodes > 1)); then
    echo "train_distributed: --nnodes $nnodes needs --master HOST:PORT (node 0's address)" >&2
    exit 2
  fi
  # A free port for this one-machine run (bind port 0 and read it back).
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 29500)"
  master="127.0.0.1:$port"
fi
[[ "$master" == *:* ]] || { echo "train_distributed: --master must be HOST:PORT" >&2; exit 2; }
master_addr="${master%:*}"
master_port="${master##*:}"

bin="${MMSEARCH:-$root/build/mmsearch}"
[[ -x "$bin" ]] || { echo "train_distributed: no program at '$bin' (build it, or set MMSEARCH=)" >&2; exit 1; }

# An equal share of the cores each, never less than one.
cores="$(nproc)"
threads=$((cores / nproc_per_node))
((threads >= 1)) || threads=1
use_taskset=0
if ((pin)) && command -v taskset >/dev/null && ((cores >= nproc_per_node)); then use_taskset=1; fi

world=$((nnodes * nproc_per_node))
pids=()
declare -A rank_of
live=()
stopping=0

stop_all() {  # signal every rank still running
  local sig="$1"
  for pid in "${live[@]}"; do kill "-$sig" "$pid" 2>/dev/null || true; done
}
on_signal() {
  echo "train_distributed: interrupted; stopping every rank" >&2
  stopping=1
  stop_all TERM
}
trap on_signal INT TERM

echo "train_distributed: $nproc_per_node rank(s) on this node (node $node_rank of $nnodes, world size $world), master $master_addr:$master_port, $threads thread(s) each" >&2
for ((local = 0; local < nproc_per_node; ++local)); do
  rank=$((node_rank * nproc_per_node + local))
  launch=()
  if ((use_taskset)); then
    first=$((local * threads))
    launch=(taskset -c "$first-$((first + threads - 1))")
  fi
  env_vars=(RANK="$rank" WORLD_SIZE="$world" LOCAL_RANK="$local" MASTER_ADDR="$master_addr"
            MASTER_PORT="$master_port" OMP_NUM_THREADS="$threads")
  if ((rank == 0)); then
    # Rank 0 keeps the terminal: its progress bar and report are the run's.
    env "${env_vars[@]}" "${launch[@]}" "$bin" train --threads "$threads" "$@" &
  else
    env "${env_vars[@]}" "${launch[@]}" "$bin" train --threads "$threads" "$@" \
      > >(sed -u "s/^/[rank $rank] /") 2> >(sed -u "s/^/[rank $rank] /" >&2) &
  fi
  pids+=("$!")
  live+=("$!")
  rank_of[$!]="$rank"
done

# Wait for every rank. A one-second ticker wakes the loop so that, once a rank has failed, the
# others get `--grace` seconds to report and exit on their own, then TERM, then KILL.
status=0
failed_at=""
ticker=""
tick() { sleep 1 & ticker=$!; }
tick
while ((${#live[@]} > 0)); do
  done_pid=""
  set +e
  wait -n -p done_pid "${live[@]}" "$ticker"
  rc=$?
  set -e
  if [[ -z "$done_pid" ]]; then continue; fi  # a trapped signal interrupted the wait
  if [[ "$done_pid" == "$ticker" ]]; then
    tick
    if [[ -n "$failed_at" ]]; then
      waited=$((SECONDS - failed_at))
      if ((waited == grace)); then stop_all TERM; fi
      if ((waited >= grace + 10)); then stop_all KILL; fi
    fi
    continue
  fi
  remaining=()
  for pid in "${live[@]}"; do [[ "$pid" == "$done_pid" ]] || remaining+=("$pid"); done
  live=("${remaining[@]}")
  r="${rank_of[$done_pid]}"
  if ((rc != 0)) && [[ -z "$failed_at" ]]; then
    why="status $rc"
    ((rc > 128)) && why="signal $(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))"
    if ((!stopping)) && ((${#live[@]} > 0)); then
      echo "train_distributed: rank $r exited with $why; stopping the other ranks (in ${grace} s if they do not stop themselves)" >&2
    fi
    status=$rc
    failed_at=$SECONDS
  fi
done
kill "$ticker" 2>/dev/null || true
wait 2>/dev/null || true
exit "$status"
