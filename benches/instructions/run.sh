#!/usr/bin/env bash
# Instructions the server executes per warm ValidateClient, counted by
# valgrind's callgrind: the same for the same binary and inputs whatever
# else the machine does, so two builds compare on a noisy machine.
#
#   benches/instructions/run.sh BINARY...
#
# For each binary: starts it under callgrind (SQLite in a temporary
# directory, no tokens, JSON logs, on loopback), checks one client 200 and
# then 1,200 times (one call after another, each run on a fresh server),
# and prints (instructions at 1,200 - at 200) / 1,000: start-up, seeding and
# the background tasks cancel out. Needs valgrind and the Python client's
# environment (`bash .ci/python.sh` makes it).
#
# To compare a change, build the commit before it into another target
# directory and pass both binaries:
#   git worktree add /tmp/before <commit>
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release)
#   benches/instructions/run.sh /tmp/before-target/release/integration-service target/release/integration-service
set -euo pipefail
cd "$(dirname "$0")/../.."

python="$PWD/.ci/.venv-python/bin/python"
if [ ! -x "$python" ] || [ ! -d clients/python/src/centralauth_integration/centralauth ]; then
    echo "no Python client environment: run 'bash .ci/python.sh' once" >&2
    exit 1
fi
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }

# Instructions of one server's whole life, with N checks.
count() {
    local binary=$1 checks=$2 dir port pid
    dir="$(mktemp -d)"
    port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    (cd "$dir" && exec env -u RUST_LOG valgrind --tool=callgrind \
        --callgrind-out-file="$dir/callgrind.out" "$binary" --listen "127.0.0.1:$port" \
        --database-url "sqlite://$dir/db?mode=rwc" --log-format json >"$dir/log" 2>&1) &
    pid=$!
    "$python" benches/instructions/drive.py "127.0.0.1:$port" "$checks"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    grep '^summary:' "$dir/callgrind.out" | cut -d' ' -f2
    rm -rf "$dir"
}

for binary in "$@"; do
    binary="$(realpath "$binary")"
    low="$(count "$binary" 200)"
    high="$(count "$binary" 1200)"
    echo "$binary: $(( (high - low) / 1000 )) instructions per warm ValidateClient"
done
