#!/usr/bin/env bash
# Two-way under a burst: N random SETs on each side at once (KEYS: the key space,
# default 100M), tandem redis twoway between two fresh servers; prints the time to
# write and to converge, tandem's peak RSS, the conflict counters and the most writes
# the conflict detector remembered.
# usage: bench/twoway_burst.sh [N]
# (build first: CARGO_TARGET_DIR=target/rel cargo build --release; BIN= to override)
set -euo pipefail
N=${1:-1000000}; BIN=${BIN:-$(dirname "$0")/../target/rel/release/tandem}
work=$(mktemp -d); A=27311; B=27312
for p in $A $B; do redis-server --port $p --bind 127.0.0.1 --save "" --appendonly no --dir $work --daemonize yes --logfile $work/$p.log --repl-backlog-size 512mb --client-output-buffer-limit "replica 0 0 0" --dbfilename $p.rdb >/dev/null; done
sleep 0.5
$BIN redis twoway --a redis://127.0.0.1:$A --b redis://127.0.0.1:$B --spool-dir $work/spool --metrics-addr 127.0.0.1:27399 2>$work/tandem.log >/dev/null & TP=$!
P1=; P2=; MP=
trap 'kill $TP $P1 $P2 $MP 2>/dev/null; for p in $A $B; do redis-cli -p $p shutdown nosave >/dev/null 2>&1; done; rm -rf $work' EXIT INT TERM
for i in $(seq 100); do grep -q "incremental" $work/tandem.log 2>/dev/null && [ $(grep -c "to=\"incremental\"" $work/tandem.log) -ge 2 ] && break; sleep 0.2; done
sleep 1
t0=$(date +%s.%N)
redis-benchmark -p $A -t set -n $N -r ${KEYS:-100000000} -P 200 -q >/dev/null & P1=$!
redis-benchmark -p $B -t set -n $N -r ${KEYS:-100000000} -P 200 -q >/dev/null & P2=$!
( m=0; while kill -0 $TP 2>/dev/null; do v=$(curl -s 127.0.0.1:27399/metrics | grep "^tandem_conflict_detector_writes " | awk '{print $2}'); [ -n "$v" ] && echo "$v" >> $work/dw; sleep 0.2; done ) & MP=$!
wait $P1 $P2
t1=$(date +%s.%N)
# Converged: the sizes agree and, for 3 s, no conflict was copied and none waits to be
# compared (the time is that of the first such poll); then 2,000 random keys are
# compared by DUMP (DEBUG DIGEST cannot leave out tandem's own keys, which differ).
m() { curl -s 127.0.0.1:27399/metrics | { grep "^$1 " || true; } | awk '{print $2}' | sort -g | tail -1; }
last=""; still=0
for i in $(seq 1200); do
  a=$(redis-cli -p $A dbsize); b=$(redis-cli -p $B dbsize); r=$(m tandem_conflicts_resolved_total); u=$(m tandem_conflicts_unchecked)
  if [ "$a" = "$b" ] && [ "$r" = "$last" ] && [ "${u:-0}" = "0" ]; then still=$((still+1)); else still=0; t2=$(date +%s.%N); fi
  last=$r
  [ $still -ge 3 ] && break
  sleep 1
done
differ=0
for i in $(seq 2000); do k=$(redis-cli -p $A randomkey); [ "$(redis-cli -p $A dump "$k" | md5sum)" = "$(redis-cli -p $B dump "$k" | md5sum)" ] || differ=$((differ+1)); done
echo "burst ${N}x2 written in $(echo "$t1-$t0"|bc) s, converged after $(echo "$t2-$t0"|bc) s; dbsize A=$a B=$b; $differ of 2000 random keys differ"
grep -E "VmHWM|VmRSS" /proc/$TP/status; curl -s 127.0.0.1:27399/metrics | grep -E "^tandem_(conflict|detector)" | head; echo "detector writes max: $(sort -g $work/dw | tail -1)"; kill $MP 2>/dev/null || true
