#!/usr/bin/env bash
# Runs examples/gateway.rs --demo against the release server, started here
# with tokens on a free port of loopback and a fresh SQLite database.
#
#   bash .ci/gateway.sh [path-to-binary]
set -euo pipefail
cd "$(dirname "$0")/.."

binary="${1:-target/release/integration-service}"
work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
admin="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
validator="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

cargo build --locked --example gateway

INTEGRATION_ADMIN_TOKENS="$admin" INTEGRATION_VALIDATOR_TOKENS="$validator" \
    "$binary" --listen "127.0.0.1:$port" \
    --database-url "sqlite://$work/integration.db?mode=rwc" >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 100); do
    if "$binary" health-check --address "127.0.0.1:$port" >/dev/null 2>&1; then break; fi
    sleep 0.1
done

if ! INTEGRATION_ADMIN_TOKEN="$admin" INTEGRATION_VALIDATOR_TOKEN="$validator" \
    target/debug/examples/gateway --target "http://127.0.0.1:$port" --demo; then
    echo "--- server log" >&2
    cat "$work/server.log" >&2
    exit 1
fi
