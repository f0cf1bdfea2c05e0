#!/usr/bin/env bash
# The reference page of the Integration tab (ui/), end to end: builds it,
# serves it with `vite preview`, starts the server with gRPC-Web, the CORS
# origin of that page and an admin token, and runs the browser test in
# Debian's Chromium. Screenshots of every step end up in ui/artifacts/.
#
#   bash .ci/ui.sh [path-to-binary]     (default target/release/integration-service)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
started=$SECONDS

step() { printf '\n==> %s\n' "$*"; }

binary="${1:-target/release/integration-service}"
case "$binary" in /*) ;; *) binary="$root/$binary" ;; esac
if [ ! -x "$binary" ]; then
    echo "no server binary at $binary: build it with 'cargo build --release', or pass its path" >&2
    exit 1
fi

step "Chromium"
if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null

cd ui
step "npm ci"
node --version
# Reuse node_modules while it was installed from this very lock file.
stamp=node_modules/.installed-from-lock
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ]; then
    echo "node_modules is up to date with package-lock.json"
else
    npm ci --no-audit --no-fund
    echo "$lock_sum" >"$stamp"
fi

step "npm run generate && npm run build"
npm run generate
npm run build

free_port() {
    node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

wait_for() { # name, command...
    local name="$1"
    shift
    for _ in $(seq 100); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "$name did not come up" >&2
    return 1
}

rm -rf artifacts
mkdir -p artifacts
work="$(mktemp -d)"
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
    if [ "$status" -ne 0 ]; then
        for log in artifacts/server.log artifacts/preview.log; do
            [ -f "$log" ] && { echo "--- last lines of ui/$log"; tail -n 30 "$log"; }
        done
    fi
    echo "ui.sh took $((SECONDS - started)) s"
    exit "$status"
}
trap cleanup EXIT

ui_port="$(free_port)"
ui_url="http://127.0.0.1:$ui_port"
step "vite preview on $ui_url"
./node_modules/.bin/vite preview --port "$ui_port" --strictPort --host 127.0.0.1 >artifacts/preview.log 2>&1 &
pids+=($!)

grpc_port="$(free_port)"
grpc_url="http://127.0.0.1:$grpc_port"
admin_token="$(openssl rand -hex 32)"
# VerifyDomain asks this resolver: a loopback port where nothing answers, so
# no look-up leaves the machine and verification fails as it should.
dns_port="$(free_port)"
step "integration-service on $grpc_url (gRPC-Web, CORS origin $ui_url)"
INTEGRATION_ADMIN_TOKENS="$admin_token" RUST_LOG="${RUST_LOG:-info,sqlx=warn}" \
    "$binary" \
    --listen "127.0.0.1:$grpc_port" \
    --database-url "sqlite://$work/db?mode=rwc" \
    --grpc-web \
    --cors-allow-origin "$ui_url" \
    --dns-resolver "127.0.0.1:$dns_port" \
    >artifacts/server.log 2>&1 &
pids+=($!)

wait_for "vite preview" curl -fsS -o /dev/null "$ui_url/"
wait_for "integration-service" "$binary" health-check --address "127.0.0.1:$grpc_port"
echo "both up"

step "browser test"
UI_URL="$ui_url/" GRPC_URL="$grpc_url" ADMIN_TOKEN="$admin_token" \
    node --test --test-reporter=spec e2e/flow.test.mjs

echo
echo "screenshots: $(ls artifacts/*.png | wc -l) in ui/artifacts/"
