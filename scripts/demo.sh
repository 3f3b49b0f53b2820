#!/usr/bin/env bash
# A live demo on local servers: two redis-servers on free loopback ports, data of every
# kind on the first, `tandem redis sync` into the second, live writes that follow, then
# a comparison. Installs redis-server from apt when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server is missing; installing it from apt" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
cargo build --release --quiet
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SRC=$(free_port); DST=$(free_port)
cleanup() {
  if [ -n "${TANDEM_PID:-}" ]; then kill "$TANDEM_PID" 2>/dev/null || true; fi
  redis-cli -p "$SRC" shutdown nosave >/dev/null 2>&1 || true
  redis-cli -p "$DST" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
for p in "$SRC" "$DST"; do
  redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --repl-diskless-sync-delay 0 --daemonize yes --logfile "$work/redis-$p.log" >/dev/null
done
for _ in $(seq 100); do redis-cli -p "$DST" ping >/dev/null 2>&1 && redis-cli -p "$SRC" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "source :$SRC, target :$DST"
echo "writing 20000 keys of every type to the source…"
python3 - <<'PY' | redis-cli -p "$SRC" --pipe >/dev/null
import sys
def cmd(*a):
    out = "*%d\r\n" % len(a) + "".join("$%d\r\n%s\r\n" % (len(str(x).encode()), x) for x in a)
    sys.stdout.write(out)
for i in range(4000):
    cmd("SET", f"str:{i}", f"value-{i}")
    cmd("RPUSH", f"list:{i%100}", i)
    cmd("SADD", f"set:{i%100}", i)
    cmd("ZADD", f"zset:{i%100}", i / 3, f"m{i}")
    cmd("HSET", f"hash:{i%100}", f"f{i}", i)
cmd("XADD", "stream", "*", "event", "demo")
cmd("SET", "ttl-key", "expires", "EX", "3600")
PY
./target/release/tandem redis sync --source "redis://127.0.0.1:$SRC" --target "redis://127.0.0.1:$DST" \
  --metrics-addr 127.0.0.1:0 2> "$work/tandem.log" &
TANDEM_PID=$!
caught_up() {
  local want got
  want=$(redis-cli -p "$SRC" info replication | tr -d '\r' | awk -F: '/^master_repl_offset/{print $2}')
  got=$(redis-cli -p "$DST" hget __tandem:ckpt:default offset)
  [ "$(redis-cli -p "$DST" hget __tandem:ckpt:default state)" = "incr" ] && [ "$want" = "$got" ]
}
for _ in $(seq 300); do caught_up && break; sleep 0.1; done
echo "full sync done: target has $(redis-cli -p "$DST" dbsize) keys (one is tandem's checkpoint)"
echo "live writes on the source: INCR counter ×1000, a MULTI/EXEC, a script…"
for i in $(seq 1000); do echo "INCR counter"; done | redis-cli -p "$SRC" >/dev/null
printf 'MULTI\nSET tx:a 1\nLPUSH tx:b x\nEXEC\n' | redis-cli -p "$SRC" >/dev/null
redis-cli -p "$SRC" eval "redis.call('SET', KEYS[1], ARGV[1]) return 1" 1 scripted yes >/dev/null
for _ in $(seq 300); do caught_up && break; sleep 0.1; done
echo "target: counter=$(redis-cli -p "$DST" get counter) tx:b=$(redis-cli -p "$DST" lrange tx:b 0 -1) scripted=$(redis-cli -p "$DST" get scripted) ttl-key TTL=$(redis-cli -p "$DST" ttl ttl-key)s"
echo "source offset $(redis-cli -p "$SRC" info replication | tr -d '\r' | awk -F: '/^master_repl_offset/{print $2}'), tandem's checkpoint on the target: $(redis-cli -p "$DST" hget __tandem:ckpt:default offset)"
echo "WAIT on the source counts tandem as a replica once the target has the write: $(redis-cli -p "$SRC" set w 1 >/dev/null; redis-cli -p "$SRC" wait 1 2000)"
kill -INT "$TANDEM_PID"; wait "$TANDEM_PID" || true; TANDEM_PID=""
echo "tandem stopped cleanly (Ctrl-C finishes the batch in flight); its log:"
sed -e 's/^/  /' "$work/tandem.log"
