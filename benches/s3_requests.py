#!/usr/bin/env python3
"""Counts the S3 requests each command makes on a store in a moto bucket.

    python3 benches/s3_requests.py --input bench-out/events-250000-seed42.ndjson \\
        --binary target/debug/holdfast [--moto .venv-test/bin/moto_server] [--workdir DIR]

Starts `moto_server` on a free loopback port, then runs `init --create-bucket`, `ingest`,
`batch`, a query bounded to one day, a whole-store count, `sweep --dry-run` and `verify` on
`s3://<bucket>/store`, each against moto's access log: the number of requests a command made
is the number of requests moto logged while it ran (beside it, the `s3_requests` holdfast's
own JSON report counted, where the command has one). Prints a table
(requests per command, per 1M events for ingest and batch, and by kind) and the partition
count. moto is slow, so times are not reported: only requests, which it counts honestly.

Standard library only; moto from PyPI (`pip install "moto[server]"`; tests/run.sh installs it
into .venv-test).
"""
import argparse
import collections
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib import count_lines

REPO = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# werkzeug's access log line, colour codes and all: "GET /bucket/key?versions= HTTP/1.1" 200
ANSI = r"(?:\x1b\[[0-9;]*m)?"
REQUEST = re.compile(rf'"{ANSI}(GET|PUT|POST|DELETE|HEAD) ([^ "]*) HTTP/[0-9.]+{ANSI}" (\d+)')


def logged(path):
    """The requests in moto's access log so far: (method, path?query, status)."""
    if not path.exists():
        return []
    return REQUEST.findall(path.read_text(errors="replace"))


def kind(r):
    method, target, status = r
    query = target.split("?", 1)[1] if "?" in target else ""
    names = sorted({p.split("=")[0] for p in query.split("&") if p} & {
        "versions", "versionId", "retention", "legal-hold", "uploads", "uploadId",
        "list-type", "versioning", "object-lock", "partNumber"})
    return f"{method}{' ?' + '&'.join(names) if names else ''}{' ' + status if status >= '300' else ''}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--moto", default=str(REPO / ".venv-test/bin/moto_server"))
    ap.add_argument("--workdir")
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="s3req-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "moto.log"
    port = free_port()
    moto = subprocess.Popen([a.moto, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    events = count_lines(a.input)
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HOLDFAST_"))}
    run_env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench",
                   AWS_SECRET_ACCESS_KEY="bench-secret", AWS_REGION="us-east-1",
                   AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
                   HOLDFAST_STORE=f"s3://holdfast-bench-{port}/store",
                   HOLDFAST_KEYRING=str(work / "keyring.json"))
    steps = [
        ("init", ["init", "--create-bucket"]),
        ("ingest", ["ingest", a.input]),
        ("batch", ["batch", "--format", "json"]),
        ("query, one day", ["query", "--format", "csv",
                            "SELECT count(*) FROM events WHERE year = 2026 AND month = 1 AND day = 2"]),
        ("query, whole store", ["query", "--format", "csv", "SELECT count(*) FROM events"]),
        ("sweep --dry-run", ["sweep", "--dry-run"]),
        ("verify", ["verify", "--format", "json"]),
    ]
    rows, partitions = [], None
    try:
        for name, argv in steps:
            before = len(logged(log))
            out = subprocess.run([a.binary, *argv], env=run_env, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{name} failed: {out.stderr}")
            time.sleep(0.5)  # the log line comes after the answer
            new = logged(log)[before:]
            counted = ""
            if "--format" in argv and "json" in argv:
                report = json.loads(out.stdout)
                counted = report.get("s3_requests", "")
                if name == "batch":
                    partitions = report.get("partitions")
            kinds = collections.Counter(kind(r) for r in new)
            rows.append((name, len(new), counted, kinds))
    finally:
        moto.terminate()
    print(f"{events:,} events, {partitions} partitions, requests from moto's access log")
    print(f"{'command':<22}{'requests':>10}{'per 1M events':>15}{'own count':>11}  by kind")
    for name, n, counted, kinds in rows:
        per = f"{n * 1_000_000 / events:,.0f}" if name in ("ingest", "batch") else ""
        top = ", ".join(f"{k} {c}" for k, c in kinds.most_common(6))
        print(f"{name:<22}{n:>10,}{per:>15}{counted:>11}  {top}")


if __name__ == "__main__":
    main()
