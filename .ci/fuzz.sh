#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ (issue 21; fuzz/README.md) for a bounded time and number of runs,
# and fails on a crash (a panic is one: a broken invariant), a leak, an out-of-memory or a timeout.
#
# Each target starts from a fresh scratch corpus directory (where libFuzzer writes what it finds) with the
# committed seeds of fuzz/corpus/<target> as a second, read-only directory: a run never writes into the
# repository. For each target it prints the executions and the peak RSS libFuzzer reports; a failing input
# is kept in $FUZZ_ARTIFACTS (default fuzz/artifacts/, git-ignored) and printed in hex to the log.
#
# Sanitizer: none by default (FUZZ_SANITIZER=address for AddressSanitizer). The project forbids unsafe code
# (workspace lint), so what ASan adds is checking the C and C++ below us (SQLite, ring), at the price of a
# build measured at 2x4.5 min on the 2-core machine vs 2x3 min without, and of runs 2-3x slower (see the
# measurements in fuzz/README.md). Panics, libFuzzer's -rss_limit_mb / -malloc_limit_mb (OOM) and -timeout
# work the same without it; leaks are only detected with it (LeakSanitizer).
#
# The binaries are built once under the cargo lock, then run directly (what `cargo fuzz run` does after its
# build), so the lock is not held while fuzzing.
#
# Usage: bash .ci/fuzz.sh               (after .ci/install-tools.sh: it installs cargo-fuzz)
# Env:   FUZZ_SECONDS=60   longest run per target     FUZZ_RUNS=2000000   most inputs per target
#        FUZZ_TARGETS="jsonrpc_guard backend_answer embedded_question"
#        FUZZ_SANITIZER=none|address   FUZZ_ARTIFACTS=dir   CARGO_BUILD_LOCK=/tmp/cargo-build.lock
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=/dev/null
source .ci/env.sh

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_RUNS="${FUZZ_RUNS:-2000000}"
FUZZ_TARGETS="${FUZZ_TARGETS:-jsonrpc_guard backend_answer embedded_question}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}"
FUZZ_ARTIFACTS="${FUZZ_ARTIFACTS:-fuzz/artifacts}"
CARGO_BUILD_LOCK="${CARGO_BUILD_LOCK:-/tmp/cargo-build.lock}"

log() { printf '[fuzz] %s\n' "$*" >&2; }
die() { printf '[fuzz] ERROR: %s\n' "$*" >&2; exit 1; }

# Per target: the largest input and the dictionary. A question is at most 5,000 characters (up to 4 bytes
# each, plus the selector byte); JSON-RPC bodies and backend answers get 64 KiB.
max_len() { case "$1" in embedded_question) echo 20001 ;; *) echo 65536 ;; esac; }
dict() { case "$1" in embedded_question) echo fuzz/dicts/question.dict ;; *) echo fuzz/dicts/json.dict ;; esac; }

rustup run nightly rustc --version >/dev/null 2>&1 \
  || die "the nightly toolchain is missing (rustup toolchain list): cargo fuzz needs it"
command -v cargo-fuzz >/dev/null 2>&1 || die "cargo-fuzz is not on PATH: run bash .ci/install-tools.sh"

start=$(date +%s)
build_start=$start
log "building ${FUZZ_TARGETS// /, } ($(cargo-fuzz --version), sanitizer $FUZZ_SANITIZER, $(rustup run nightly rustc --version))"
# -a: debug assertions (and overflow checks) on, so an arithmetic overflow is a crash too. --release is
# cargo fuzz's default.
for target in $FUZZ_TARGETS; do
  flock "$CARGO_BUILD_LOCK" cargo +nightly fuzz build --fuzz-dir fuzz --sanitizer "$FUZZ_SANITIZER" -a "$target"
done
build_seconds=$(($(date +%s) - build_start))
log "built in ${build_seconds}s"

triple="$(rustup run nightly rustc -vV | awk '/^host:/ {print $2}')"
bin_dir="fuzz/target/$triple/release"
mkdir -p "$FUZZ_ARTIFACTS"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

failed=()
summary=()
for target in $FUZZ_TARGETS; do
  [[ -d "fuzz/corpus/$target" ]] || die "no committed corpus fuzz/corpus/$target"
  mkdir -p "$scratch/$target"
  out="$scratch/$target.log"
  log "$target: up to ${FUZZ_SECONDS}s / $FUZZ_RUNS runs, from $(find "fuzz/corpus/$target" -type f | wc -l) seeds"
  run_start=$(date +%s)
  status=0
  # Leak detection exists only with ASan's LeakSanitizer.
  leaks=0
  [[ "$FUZZ_SANITIZER" == address ]] && leaks=1
  "$bin_dir/$target" "$scratch/$target" "fuzz/corpus/$target" \
    -max_total_time="$FUZZ_SECONDS" -runs="$FUZZ_RUNS" -rss_limit_mb=512 -malloc_limit_mb=512 \
    -max_len="$(max_len "$target")" -timeout=10 -dict="$(dict "$target")" -detect_leaks=$leaks \
    -print_final_stats=1 -artifact_prefix="$FUZZ_ARTIFACTS/$target-" >"$out" 2>&1 || status=$?
  seconds=$(($(date +%s) - run_start))
  execs="$(awk '/^stat::number_of_executed_units:/ {print $2}' "$out")"
  rss="$(awk '/^stat::peak_rss_mb:/ {print $2}' "$out")"
  rate="$(awk '/^stat::average_exec_per_sec:/ {print $2}' "$out")"
  line="$target: ${execs:-?} executions in ${seconds}s (${rate:-?}/s), peak RSS ${rss:-?} MB, corpus +$(find "$scratch/$target" -type f | wc -l)"
  if ((status != 0)); then
    kind="$(grep -oE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer): [a-z-]+|deadly signal|timeout after|out-of-memory' "$out" | head -n1 || true)"
    log "$target FAILED (exit $status${kind:+: $kind}); the end of its log:"
    tail -n 60 "$out" >&2
    for artifact in "$FUZZ_ARTIFACTS/$target"-*; do
      [[ -f "$artifact" ]] || continue
      log "input $artifact ($(stat -c %s "$artifact") bytes), first 4 KiB in hex:"
      head -c 4096 "$artifact" | od -An -tx1 -v >&2
      log "reproduce: cargo +nightly fuzz run --fuzz-dir fuzz $target $artifact"
    done
    failed+=("$target")
    line="$line: FAILED${kind:+ ($kind)}"
  fi
  log "$line"
  summary+=("$line")
done

echo
echo "== fuzz summary (sanitizer $FUZZ_SANITIZER, build ${build_seconds}s, total $(($(date +%s) - start))s)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  die "failed: ${failed[*]}"
fi
