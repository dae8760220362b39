"""Runs an export's snowflake/load.sh against fakesnow (an offline Snowflake emulator over
DuckDB, started here in server mode on 127.0.0.1), then counts what was loaded.

usage: fakesnow_load.py DIR   (run with the Python that has fakesnow[server] and
snowflake-connector-python); prints one JSON line: rows, distinct event ids, and the
sorted event ids' SHA-256.

fakesnow checks the plumbing, not Snowflake's typing: it has no CREATE FILE FORMAT (the
statement is passed through as a no-op, as is ALTER SESSION), ignores the Parquet format
options, and matches columns by Parquet leaf names, so the list columns (agent_ids,
participants) load as NULL there; scalars and timestamps load by name.
"""
import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import snowflake.connector


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    out = sys.argv[1]
    port = free_port()
    log = open(os.path.join(os.path.dirname(os.path.abspath(out)), "fakesnow.log"), "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "fakesnow", "-s", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        params = {
            "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False,
            "nop_regexes": ["(?s).*CREATE FILE FORMAT.*", "(?s).*ALTER SESSION.*"],
        }
        env = dict(os.environ)
        env.update({
            "SNOWFLAKE_ACCOUNT": "fakesnow", "SNOWFLAKE_USER": "fake", "SNOWFLAKE_PASSWORD": "snow",
            "SNOWFLAKE_HOST": "127.0.0.1", "SNOWFLAKE_PORT": str(port), "SNOWFLAKE_PROTOCOL": "http",
            "SNOWFLAKE_DATABASE": "holdfast", "SNOWFLAKE_SCHEMA": "export",
            "SNOWFLAKE_SESSION_PARAMETERS": json.dumps(params),
            "PYTHON": sys.executable,
            # no SnowSQL here: load.sh takes the Python connector
            "PATH": "/usr/bin:/bin",
        })
        done = subprocess.run(["sh", os.path.join(out, "snowflake", "load.sh")], env=env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            print("load.sh failed:", done.stdout, done.stderr, file=sys.stderr)
            sys.exit(1)
        conn = snowflake.connector.connect(
            account="fakesnow", user="fake", password="snow", host="127.0.0.1", port=port,
            protocol="http", database="holdfast", schema="export",
            session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
        )
        cur = conn.cursor()
        rows, distinct = cur.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM holdfast_events").fetchone()
        ids = [r[0] for r in cur.execute(
            "SELECT event_id FROM holdfast_events ORDER BY event_id").fetchall()]
        nulls = cur.execute(
            "SELECT count(*) FROM holdfast_events WHERE occurred_at IS NULL OR record_hash IS NULL"
        ).fetchone()[0]
        print(json.dumps({
            "rows": rows, "distinct": distinct, "null_required": nulls,
            "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
            "load_output": done.stdout.strip().splitlines()[-1:],
        }))
    finally:
        server.terminate()
        server.wait()


main()
