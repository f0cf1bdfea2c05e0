#!/usr/bin/env bash
# The load benchmark as docs/performance.md quotes it: every phase on PostgreSQL and
# on SQLite, the table on stdout, the same figures as JSON in
# target/load-bench.json (under $CARGO_TARGET_DIR if that is set).
# Starts the local PostgreSQL if it is not running, as .ci/run does; without
# PostgreSQL tools, or with BENCH_DATABASE_URL set to "", SQLite alone.
# On PostgreSQL, pgbench (from PATH) is the reference of GetIntegration;
# without it, that goal's row says so and the run goes on.
# Extra arguments go to the benchmark: `benches/run.sh --seconds 5`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${BENCH_DATABASE_URL+set}" ] && command -v pg_isready >/dev/null; then
    if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
        for _ in $(seq 30); do
            pg_isready -h 127.0.0.1 -p 5432 -q && break
            sleep 1
        done
    fi
    # Only used to create, and at the end drop, the databases bench_<random>
    # and (for pgbench) bench_pgbench_<random>.
    export BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
fi
if [ -n "${BENCH_DATABASE_URL:-}" ]; then
    backend=both
else
    backend=sqlite
fi

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
exec cargo bench --bench load -- --backend "$backend" --json "$target/load-bench.json" "$@"
