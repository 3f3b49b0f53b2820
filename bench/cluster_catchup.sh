#!/usr/bin/env bash
# Catch-up of N pipelined SET+INCR pairs (2N writes, 100k keys each) from a standalone
# source into a 3-master cluster target (ONE=1: into one standalone target instead):
# tandem streams, is SIGSTOPped, the writes go to the source, SIGCONT starts the clock,
# which stops when the last write is on the target. Prints the wall time and the CPU
# ticks (1/100 s) of tandem, of the target server(s), and idle ticks of the machine.
# PERFSECS > 0 samples tandem with perf (DWARF call graphs) into $PERF_OUT.
# usage: bench/cluster_catchup.sh [N] [PERFSECS]   (build first: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-250000}; PS=${2:-0}
BIN=${BIN:-target/release/tandem}
PERF_OUT=${PERF_OUT:-perf-cluster.data}
work=$(mktemp -d)
fp() { python3 -c 'import socket,random
while True:
  p=random.randint(20000,40000)
  try:
    s=socket.socket(); s.bind(("127.0.0.1",p)); s.close(); b=socket.socket(); b.bind(("127.0.0.1",p+10000)); b.close(); print(p); break
  except OSError: pass'; }
S=$(fp); P1=$(fp); P2=$(fp); P3=$(fp)
cleanup() { kill -CONT ${TP:-0} 2>/dev/null || true; kill ${TP:-0} 2>/dev/null || true; for p in $S $P1 $P2 $P3; do redis-cli -p $p shutdown nosave >/dev/null 2>&1 || true; done; rm -rf "$work"; }
trap cleanup EXIT
redis-server --port $S --bind 127.0.0.1 --save "" --appendonly no --dir $work --daemonize yes --logfile $work/s.log --repl-backlog-size 512mb --client-output-buffer-limit "replica 0 0 0" >/dev/null
if [ -n "${ONE:-}" ]; then
  redis-server --port $P1 --bind 127.0.0.1 --save "" --appendonly no --dir $work --daemonize yes --logfile $work/p.log >/dev/null
  NODES="$P1"
else
  for p in $P1 $P2 $P3; do mkdir -p $work/$p; redis-server --port $p --bind 127.0.0.1 --save "" --appendonly no --dir $work/$p --daemonize yes --logfile $work/$p.log --cluster-enabled yes --cluster-config-file nodes.conf >/dev/null; done
  NODES="$P1 $P2 $P3"
fi
for _ in $(seq 100); do redis-cli -p $P1 ping >/dev/null 2>&1 && redis-cli -p $S ping >/dev/null 2>&1 && break; sleep 0.1; done
if [ -z "${ONE:-}" ]; then
  for _ in $(seq 100); do redis-cli -p $P3 ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli --cluster create 127.0.0.1:$P1 127.0.0.1:$P2 127.0.0.1:$P3 --cluster-yes >/dev/null 2>&1 || true
  for _ in $(seq 200); do redis-cli -p $P1 cluster info | grep -q "cluster_state:ok" && redis-cli -p $P3 cluster info | grep -q "cluster_state:ok" && break; sleep 0.1; done
fi
$BIN redis sync --source redis://127.0.0.1:$S --target redis://127.0.0.1:$P1 ${EXTRA:-} 2>"$work/tandem.log" >/dev/null &
TP=$!
redis-cli -p $S set ready 1 >/dev/null
for _ in $(seq 300); do [ "$(redis-cli -c -p $P1 get ready 2>/dev/null)" = "1" ] && break; sleep 0.1; done
PIDS="$(for p in $NODES; do redis-cli -p $p info server | tr -d '\r' | awk -F: '/^process_id/{print $2}'; done)"
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
sum() { t=0; for p in $PIDS; do t=$((t+$(ticks $p))); done; echo $t; }
kill -STOP $TP
redis-benchmark -p $S -P 100 -n $N -t set,incr -r 100000 -q >/dev/null 2>&1
redis-cli -p $S set done 1 >/dev/null
t0=$(ticks $TP); m0=$(sum)
St=$(date +%s.%N); I0=$(awk '/^cpu /{print $5+$6}' /proc/stat)
kill -CONT $TP
PP=""
if [ "$PS" != 0 ]; then perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p $TP -o "$PERF_OUT" -- sleep $PS >/dev/null 2>&1 & PP=$!; fi
for _ in $(seq 30000); do [ "$(redis-cli -c -p $P1 get done 2>/dev/null)" = "1" ] && break; sleep 0.002; done
E=$(date +%s.%N); I1=$(awk '/^cpu /{print $5+$6}' /proc/stat)
t1=$(ticks $TP); m1=$(sum)
echo "applied $((2*N)) writes in $(echo "$E - $St" | bc) s; tandem CPU $((t1-t0)) ticks, targets $((m1-m0)) ticks, idle $((I1-I0)) ticks (both cores)"
[ -n "$PP" ] && wait $PP || true
