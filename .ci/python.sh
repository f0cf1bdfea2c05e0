#!/usr/bin/env bash
# The Python client (clients/python) against the real server binary:
# installs the package in a venv, generates its stubs afresh from proto/,
# runs its tests (which start servers of their own), then runs the example
# flow against one server started here.
#
#   bash .ci/python.sh [path-to-binary]    # default target/release/integration-service
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

binary="$(realpath -m "${1:-target/release/integration-service}")"
if [ ! -x "$binary" ]; then
    echo "no server binary at $binary (cargo build --release, or pass its path)" >&2
    exit 1
fi

step "venv"
venv="$PWD/.ci/.venv-python"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
python="$venv/bin/python"
"$python" --version
"$python" -m pip install --quiet --disable-pip-version-check -e 'clients/python[dev]'

step "generate"
rm -rf clients/python/src/centralauth_integration/centralauth
"$python" clients/python/generate.py

step "pytest"
INTEGRATION_BIN="$binary" "$python" -m pytest -q clients/python/tests

step "examples/flow.py"
workdir="$(mktemp -d)"
server_pid=""
stop() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap stop EXIT

admin_token="$("$python" -c 'import secrets; print(secrets.token_hex(32))')"
validator_token="$("$python" -c 'import secrets; print(secrets.token_hex(32))')"
# A free port of loopback, asked of the kernel; the server is started on it
# right after.
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
target="127.0.0.1:$port"

env -u RUST_LOG -u DATABASE_URL \
    INTEGRATION_ADMIN_TOKENS="$admin_token" \
    INTEGRATION_VALIDATOR_TOKENS="$validator_token" \
    "$binary" serve --listen "$target" --database-url "sqlite://$workdir/db?mode=rwc" \
    >"$workdir/server.log" 2>&1 &
server_pid=$!

ready=""
for _ in $(seq 100); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        break
    fi
    if "$binary" health-check --address "$target" >/dev/null 2>&1; then
        ready=yes
        break
    fi
    sleep 0.2
done
if [ -z "$ready" ]; then
    echo "the server did not become SERVING; its log:" >&2
    cat "$workdir/server.log" >&2
    exit 1
fi

INTEGRATION_ADMIN_TOKEN="$admin_token" INTEGRATION_VALIDATOR_TOKEN="$validator_token" \
    "$python" clients/python/examples/flow.py --target "$target"
