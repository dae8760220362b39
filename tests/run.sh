#!/usr/bin/env bash
# Runs every test of holdfast: unit and property tests, the integration tests that drive the
# real binary (crash, tamper, pipeline), and the reader checks (pyarrow and DuckDB read the lake).
# Installs what it needs: a Python venv with the readers, in .venv-test/ (gitignored).
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
cargo test --locked "$@"
