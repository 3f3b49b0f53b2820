#!/usr/bin/env bash
# Catch-up of N pipelined SET+INCR pairs (2N writes): the applier (a native replica, or
# tandem) is frozen with SIGSTOP while the writes go to the source, then resumed; the
# clock runs from SIGCONT until the applier's offset reaches the source's. With CPU=1 it
# also prints the CPU split between tandem and the target server during the catch-up.
# usage: bench/catchup.sh native|tandem [N]      (build first: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?native or tandem}; N=${2:-1000000}
BIN=${BIN:-target/release/tandem}
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SRC=$(free_port); DST=$(free_port); AP=""
cleanup() {
  [ -n "$AP" ] && kill -CONT "$AP" 2>/dev/null || true
  [ -n "${TP:-}" ] && kill "$TP" 2>/dev/null || true
  for p in "$SRC" "$DST"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
for p in "$SRC" "$DST"; do
  redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" --daemonize yes \
    --logfile "$work/r$p.log" --repl-diskless-sync-delay 0 --repl-backlog-size 512mb \
    --client-output-buffer-limit "replica 0 0 0" >/dev/null
done
for _ in $(seq 100); do redis-cli -p "$DST" ping >/dev/null 2>&1 && redis-cli -p "$SRC" ping >/dev/null 2>&1 && break; sleep 0.1; done
offset_of_source() { redis-cli -p "$SRC" info replication | tr -d '\r' | awk -F: '/^master_repl_offset/{print $2}'; }
if [ "$MODE" = native ]; then
  redis-cli -p "$DST" replicaof 127.0.0.1 "$SRC" >/dev/null
  for _ in $(seq 100); do redis-cli -p "$DST" info replication | grep -q "master_link_status:up" && break; sleep 0.1; done
  AP=$(redis-cli -p "$DST" info server | tr -d '\r' | awk -F: '/^process_id/{print $2}')
  applied() { redis-cli -p "$DST" info replication | tr -d '\r' | awk -F: '/^slave_repl_offset/{print $2}'; }
else
  "$BIN" redis sync --source "redis://127.0.0.1:$SRC" --target "redis://127.0.0.1:$DST" 2>"$work/tandem.log" &
  TP=$!; AP=$TP
  for _ in $(seq 100); do [ "$(redis-cli -p "$DST" hget __tandem:ckpt:default state)" = "incr" ] && break; sleep 0.1; done
  applied() { redis-cli -p "$DST" hget __tandem:ckpt:default offset; }
fi
DSTPID=$(redis-cli -p "$DST" info server | tr -d '\r' | awk -F: '/^process_id/{print $2}')
kill -STOP "$AP"
redis-benchmark -p "$SRC" -P 100 -n "$N" -t set,incr -r 100000 -q >/dev/null 2>&1
WANT=$(offset_of_source)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
AP0=$(ticks "$AP"); DST0=$(ticks "$DSTPID")
S=$(date +%s.%N)
kill -CONT "$AP"; STOPPED_AP=$AP; AP=""
# PERF_TARGET=SECS: sample the target server (perf, cpu-clock) while it applies.
if [ -n "${PERF_TARGET:-}" ]; then
  perf record -e cpu-clock -F 999 -g -p "$DSTPID" -o "${PERF_OUT:-perf-target.data}" -- sleep "$PERF_TARGET" >/dev/null 2>&1 &
fi
# PERF_TANDEM=SECS: sample tandem itself (DWARF call graphs) while it applies.
if [ -n "${PERF_TANDEM:-}" ] && [ "$MODE" = tandem ]; then
  perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$STOPPED_AP" -o "${PERF_OUT:-perf-tandem.data}" -- sleep "$PERF_TANDEM" >/dev/null 2>&1 &
fi
if [ -n "${CPU:-}" ] && [ "$MODE" = tandem ]; then
  (sleep 1
   DP=$(redis-cli -p "$DST" info server | tr -d '\r' | awk -F: '/^process_id/{print $2}')
   t() { awk '{print $14+$15}' "/proc/$1/stat"; }
   a1=$(t "$STOPPED_AP"); b1=$(t "$DP"); sleep 3; a2=$(t "$STOPPED_AP"); b2=$(t "$DP")
   echo "CPU over 3 s: tandem $((a2-a1))%, target redis-server $((b2-b1))% of one core (100 ticks/s)") &
  CPU_PID=$!
fi
for _ in $(seq 60000); do G=$(applied); [ "${G:-0}" -ge "$WANT" ] && break; sleep 0.01; done
E=$(date +%s.%N)
AP1=$(ticks "$STOPPED_AP"); DST1=$(ticks "$DSTPID")
echo "$MODE applied $((2*N)) writes ($WANT bytes of stream) in $(echo "$E - $S" | bc) s"
if [ "$MODE" = tandem ]; then
  echo "CPU seconds: tandem $(echo "($AP1-$AP0)/100" | bc -l | cut -c1-5), target redis-server $(echo "($DST1-$DST0)/100" | bc -l | cut -c1-5)"
else
  echo "CPU seconds: replica redis-server $(echo "($AP1-$AP0)/100" | bc -l | cut -c1-5)"
fi
if [ -n "${CPU_PID:-}" ]; then wait "$CPU_PID"; fi
