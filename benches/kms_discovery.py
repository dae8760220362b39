#!/usr/bin/env python3
"""Benchmark: discovery decrypting 1,000 records spread over about 100 files, KEK in OpenBao
Transit and in the local keyring: time and KMS calls, cold and warm.

    python3 benches/kms_discovery.py --binary <release build> --runs 5 \\
        [--workdir bench-out/kms-discovery] [--bao .venv-test/bin/bao]

Builds two stores of the same 1,000 events (gen_events.py --events 1000 --days 25, one batch:
one data file, so one DEK, per partition). Cold: `holdfast query --decrypt` of every record,
a new process, so every DEK is unwrapped. Warm: the same statement twice in one `holdfast sql
--decrypt` session; the second finds the DEKs in the session's cache (at most 1,024 entries,
5 minutes). Warm time = the two-statement session minus a one-statement session (medians).
KMS calls: the `kms.unwraps` of each `decrypt` audit entry (holdfast's count), and the
`transit/decrypt` requests in OpenBao's audit log (the server's). Local keyring alongside.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from kms_batch import audit_calls, build_store, run, start_bao, store_env, timed

REPO = Path(__file__).resolve().parent.parent
GEN = REPO.parent / "shared" / "bench" / "gen_events.py"
QUERY = "SELECT count(record) AS n FROM decrypted"


def decrypt_entries(binary, store, env):
    out = run(binary, ["audit", "list", "--store", store, "--format", "ndjson"], env)
    rows = [json.loads(l) for l in out.splitlines()]
    return [json.loads(r["details"]) for r in rows if r["action"] == "decrypt"]


def build(binary, kind, workdir, events, env):
    store, report = build_store(binary, kind, workdir, [events], env)
    return store, report["files"], report["stored"]


def measure(binary, kind, store, workdir, env, bao):
    res = {}
    gate = ["--decrypt", "--case", "BENCH-KMS"]
    offset = bao["audit"].stat().st_size if bao["audit"].exists() else 0
    res["cold"] = timed([binary, "query", "--store", store, *gate, "--format", "csv", QUERY],
                        env, workdir, f"cold-{kind}")
    calls, offset = audit_calls(bao["audit"], offset)
    res["cold"]["server_unwraps"] = sum(n for p, n in calls.items()
                                        if p.startswith("transit/decrypt/"))
    res["cold"]["unwraps"] = decrypt_entries(binary, store, env)[-1]["kms"]["unwraps"]
    for n in (1, 2):
        stdin = workdir / f"stdin-{n}.sql"
        stdin.write_text(f"{QUERY};\n" * n)
        with open(stdin, "rb") as f:
            r = subprocess.run(["/usr/bin/time", "-v", "-o", workdir / f"time-sql{n}-{kind}.txt",
                                binary, "sql", "--store", store, *gate], env=env, stdin=f,
                               capture_output=True)
        if r.returncode != 0:
            sys.exit(r.stderr.decode()[-2000:])
        text = (workdir / f"time-sql{n}-{kind}.txt").read_text()
        wall = [l for l in text.splitlines() if "Elapsed (wall clock)" in l][0].split(": ")[1]
        res[f"sql{n}_s"] = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    last = decrypt_entries(binary, store, env)[-2:]
    # each decrypt entry counts its own statement's calls
    res["warm_unwraps"] = last[1]["kms"]["unwraps"]
    res["warm_s"] = res["sql2_s"] - res["sql1_s"]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench-out" / "kms-discovery")
    ap.add_argument("--bao", default=str(REPO / ".venv-test" / "bin" / "bao"))
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    binary = a.binary.resolve()
    events = a.workdir / "events-1000.ndjson"
    if not events.exists():
        with open(events, "wb") as out:
            subprocess.run([sys.executable, GEN, "--events", "1000", "--days", "25",
                            "--dup-rate", "0", "--seed", "7"], stdout=out, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc, addr, token, audit = start_bao(a.bao, Path(tmp))
        bao = {"addr": addr, "token": token, "audit": audit}
        try:
            stores, runs = {}, []
            for kind in ("local", "transit"):
                env = store_env(a.workdir, kind, bao)
                stores[kind] = (*build(binary, kind, a.workdir, events.resolve(), env), env)
            for i in range(a.runs):
                print(f"[bench] run {i + 1}/{a.runs}", file=sys.stderr)
                runs.append({k: measure(binary, k, s[0], a.workdir, s[3], bao)
                             for k, s in stores.items()})
        finally:
            proc.kill()
            proc.wait()
    files = {k: v[1] for k, v in stores.items()}
    records = {k: v[2] for k, v in stores.items()}
    print(f"discovery over {records} records in {files} files, {a.runs} runs, binary {a.binary}")
    print(f"{'':34s} {'local':>10s} {'transit':>10s} {'transit/local':>14s}")

    def med(kind, f):
        return statistics.median(f(r[kind]) for r in runs)

    rows = (("cold query wall s", lambda r: r["cold"]["wall_s"]),
            ("warm statement s (sql2 - sql1)", lambda r: r["warm_s"]),
            ("cold unwraps (holdfast's count)", lambda r: r["cold"]["unwraps"]),
            ("warm unwraps (holdfast's count)", lambda r: r["warm_unwraps"]))
    for name, f in rows:
        lo, tr = med("local", f), med("transit", f)
        ratio = f"{tr / lo:13.3f}x" if lo else "             -"
        print(f"{name:34s} {lo:10.3f} {tr:10.3f} {ratio}")
    print("cold transit/decrypt requests OpenBao logged (median): "
          f"{med('transit', lambda r: r['cold']['server_unwraps']):.0f}")


if __name__ == "__main__":
    main()
