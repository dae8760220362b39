#!/usr/bin/env bash
# Runs every test of holdfast: the formatting and lint checks, unit and property tests, the
# integration tests that drive the real binary (crash, tamper, pipeline), and the reader checks
# (pyarrow and DuckDB read the lake).
# Installs what it needs: a Python venv with the readers, in .venv-test/ (gitignored).
#
# Tests run a `test-hooks` build (HOLDFAST_NOW pins the clock, HOLDFAST_FAILPOINT aborts at a
# named point, HOLDFAST_TEST_OS_USER stands in another person). A plain build, the one users
# get, is built first and kept aside: a test runs it to show that it ignores them.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-test
readers="duckdb==2.0.1 pyarrow==26.0.1"
if ! "$venv/bin/python" -c "import duckdb, pyarrow" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check $readers
fi
export HOLDFAST_TEST_PYTHON="$PWD/$venv/bin/python"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
target="${CARGO_TARGET_DIR:-target}"

# guard rails: formatting, and the lints (clippy.toml encodes rules of the design: time only
# from the clock, the environment only in cli) with and without the test hooks
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --all-targets --features test-hooks -- -D warnings

cargo build --locked --bin holdfast
mkdir -p "$target/plain"
cp "$target/debug/holdfast" "$target/plain/holdfast"
export HOLDFAST_PLAIN_BIN="$PWD/$target/plain/holdfast"
case "$target" in /*) export HOLDFAST_PLAIN_BIN="$target/plain/holdfast" ;; esac

cargo test --locked --features test-hooks "$@"
