#!/usr/bin/env bash
# Catch-up of N pipelined SET+INCR pairs (2N writes, 100k keys each) from A to B, in one
# of three set-ups (MODE):
#   twoway   tandem redis twoway between A and B (B idle: only A is written)
#   oneway   tandem redis sync A → B, B a bare target
#   replica  the same, B with a native replica attached (as two-way's B feeds tandem)
# tandem streams, is SIGSTOPped, the writes go to A, SIGCONT starts the clock, which stops
# when the last write is on B (a BLPOP on B, woken by it: polling would steal CPU). Prints the wall time and the CPU ticks (1/100 s) of tandem,
# of B, and idle ticks of the machine. PERFSECS > 0 samples tandem with perf into
# $PERF_OUT (PERF_B=1: samples B instead; SYSWIDE=1: the whole machine, by command;
# CALLGRAPH=fp: frame-pointer call graphs instead of DWARF).
# usage: MODE=twoway|oneway|replica bench/twoway_catchup.sh [N] [PERFSECS]
#        (build first: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-250000}; PS=${2:-0}; MODE=${MODE:-twoway}
BIN=${BIN:-target/release/tandem}
PERF_OUT=${PERF_OUT:-perf-twoway.data}
work=$(mktemp -d)
fp() { python3 -c 'import socket,random
while True:
  p=random.randint(20000,40000)
  try:
    s=socket.socket(); s.bind(("127.0.0.1",p)); s.close(); print(p); break
  except OSError: pass'; }
A=$(fp); B=$(fp); R=$(fp)
cleanup() { kill -CONT ${TP:-0} 2>/dev/null || true; kill ${TP:-0} 2>/dev/null || true; for p in $A $B $R; do redis-cli -p $p shutdown nosave >/dev/null 2>&1 || true; done; rm -rf "$work"; }
trap cleanup EXIT
for p in $A $B; do
  redis-server --port $p --bind 127.0.0.1 --save "" --appendonly no --dir $work --daemonize yes --logfile $work/$p.log --repl-backlog-size 512mb --client-output-buffer-limit "replica 0 0 0" --dbfilename $p.rdb >/dev/null
done
if [ "$MODE" = replica ]; then
  redis-server --port $R --bind 127.0.0.1 --save "" --appendonly no --dir $work --daemonize yes --logfile $work/r.log --dbfilename r.rdb --replicaof 127.0.0.1 $B >/dev/null
fi
for _ in $(seq 100); do redis-cli -p $A ping >/dev/null 2>&1 && redis-cli -p $B ping >/dev/null 2>&1 && break; sleep 0.1; done
case "$MODE" in
  twoway) $BIN redis twoway --a redis://127.0.0.1:$A --b redis://127.0.0.1:$B --spool-dir $work/spool 2>$work/tandem.log >/dev/null & ;;
  oneway|replica) $BIN redis sync --source redis://127.0.0.1:$A --target redis://127.0.0.1:$B --spool-dir $work/spool 2>$work/tandem.log >/dev/null & ;;
  *) echo "MODE must be twoway, oneway or replica" >&2; exit 2 ;;
esac
TP=$!
redis-cli -p $A set ready:a 1 >/dev/null
for _ in $(seq 300); do [ "$(redis-cli -p $B get ready:a)" = "1" ] && break; sleep 0.1; done
if [ "$MODE" = twoway ]; then
  redis-cli -p $B set ready:b 1 >/dev/null
  for _ in $(seq 300); do [ "$(redis-cli -p $A get ready:b)" = "1" ] && break; sleep 0.1; done
fi
BPID=$(redis-cli -p $B info server | tr -d '\r' | awk -F: '/^process_id/{print $2}')
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
kill -STOP $TP
redis-benchmark -p $A -P 100 -n $N -t set,incr -r 100000 -q >/dev/null 2>&1
redis-cli -p $A rpush bench:done 1 >/dev/null
t0=$(ticks $TP); b0=$(ticks $BPID)
St=$(date +%s.%N); I0=$(awk '/^cpu /{print $5+$6}' /proc/stat)
kill -CONT $TP
[ -n "${PERF_B:-}" ] && PERF_PID=$BPID
PP=""
if [ "$PS" != 0 ] && [ -n "${SYSWIDE:-}" ]; then perf record -e cpu-clock -F 999 -a -o "$PERF_OUT" -- sleep $PS >/dev/null 2>&1 & PP=$!; elif [ "$PS" != 0 ]; then perf record -e cpu-clock -F 999 --call-graph ${CALLGRAPH:-dwarf,16384} -p ${PERF_PID:-$TP} -o "$PERF_OUT" -- sleep $PS >/dev/null 2>&1 & PP=$!; fi
# One blocked client on B, woken by the batch that creates the list: no polling.
redis-cli -p $B blpop bench:done 120 >/dev/null
E=$(date +%s.%N); I1=$(awk '/^cpu /{print $5+$6}' /proc/stat)
t1=$(ticks $TP); b1=$(ticks $BPID)
echo "$MODE: $((2*N)) writes onto B in $(echo "$E - $St" | bc) s; tandem CPU $((t1-t0)) ticks, B $((b1-b0)) ticks, idle $((I1-I0)) ticks"
[ -n "$PP" ] && wait $PP || true
