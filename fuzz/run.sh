#!/usr/bin/env bash
# Builds the fuzz targets and runs each one for SECONDS (default 30) from its
# committed corpus, one after the other. Exits non-zero if any target finds
# an input that fails its checks; libFuzzer writes such an input to
# fuzz/artifacts/<target>/, and `cargo fuzz run <target> <file>` replays it.
#
#   fuzz/run.sh [SECONDS]
#
# Works with a stable toolchain alone. cargo-fuzz builds with
# AddressSanitizer unless told otherwise, and that needs the nightly-only
# -Zsanitizer; the coverage instrumentation itself takes only stable -C
# flags. The service forbids unsafe code, so the targets run without a
# sanitizer. FUZZ_SANITIZER=address asks for ASan anyway, with
# RUSTC_BOOTSTRAP=1 to let a stable rustc take -Zsanitizer.
#
# New inputs found by a run go to fuzz/target/corpus/<target>/ (ignored by
# git) and are reused by later runs; fuzz/corpus/ is only read. To add one to
# the committed corpus, minimize it first (`cargo fuzz tmin`, `cargo fuzz
# cmin`): tests/fuzz_corpus.rs replays every committed input on each
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-30}"
sanitizer="${FUZZ_SANITIZER:-none}"
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cargo fuzz build --sanitizer "$sanitizer"

failed=()
for target in $(cargo fuzz list); do
    printf '\n==> fuzz %s for %ss\n' "$target" "$seconds"
    scratch="target/corpus/$target"
    mkdir -p "$scratch"
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    printf '\nfuzz: failing inputs found by: %s (see fuzz/artifacts/)\n' "${failed[*]}" >&2
    exit 1
fi
printf '\nfuzz: no failing input found in %ss per target\n' "$seconds"
