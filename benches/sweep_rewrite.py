#!/usr/bin/env python3
"""Sweep rewrite benchmark: a store whose every record has expired, a legal hold on one
queue, then `holdfast sweep` timed as a whole process. Every file holds some held records,
so each is rewritten: its survivors are moved to a new file under a new DEK and the old file
is deleted. Each run starts from a fresh copy of the same store.

  python3 benches/sweep_rewrite.py [--events 300000] [--days 7] [--runs 3] [--binary PATH]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import dir_bytes, rm

REPO = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--now", default="2040-01-01T00:00:00Z", help="sweep time: after every record's expiry")
    ap.add_argument("--binary", type=Path, default=Path("/work/target-release/release/holdfast"))
    ap.add_argument("--workdir", type=Path, default=REPO / "bench-out")
    args = ap.parse_args()
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"{args.binary} missing: CARGO_TARGET_DIR=/work/target-release cargo build --release")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    events = work / f"rewrite-events-{args.events}-{args.days}.ndjson"
    base, keyring = work / "rewrite-store", work / "rewrite-keyring.json"
    env = dict(os.environ, HOLDFAST_KEYRING=str(keyring))
    commands = []

    def run(argv):
        commands.append(" ".join(str(a) for a in argv))
        return subprocess.run([str(a) for a in argv], env=env, check=True, capture_output=True, text=True)

    if not events.exists():
        run([sys.executable, REPO.parent / "shared/bench/gen_events.py", "--events", args.events, "--days", args.days, "--seed", 9, "--out", events])
    rm(base)
    rm(keyring)
    run([args.binary, "init", "--store", base])
    run([args.binary, "ingest", "--store", base, events])
    report = json.loads(run([args.binary, "batch", "--store", base, "--format", "json"]).stdout)
    # the busiest queue is held
    rows = run([args.binary, "query", "--store", base, "--format", "ndjson",
                "SELECT queue_id, count(*) AS n FROM events WHERE queue_id IS NOT NULL GROUP BY queue_id ORDER BY n DESC LIMIT 1"]).stdout
    queue = json.loads(rows.splitlines()[0])["queue_id"]
    hold = work / "rewrite-hold.json"
    hold.write_text(json.dumps({"holdId": "BENCH-1", "status": "ACTIVE", "scope": {"queueIds": [queue]}}))
    run([args.binary, "hold", "apply", "--store", base, "--actor", "counsel", "--file", hold])
    before, _ = dir_bytes(base / "lake")

    walls, result = [], None
    for i in range(args.runs):
        store = work / f"rewrite-store-run{i}"
        rm(store)
        shutil.copytree(base, store)
        sweep = [args.binary, "sweep", "--store", store, "--now", args.now, "--format", "json"]
        t0 = time.perf_counter()
        out = run(sweep)
        walls.append(time.perf_counter() - t0)
        result = json.loads(out.stdout)
        verify = subprocess.run([str(args.binary), "verify", "--store", str(store), "--format", "json"], env=env, capture_output=True, text=True)
        if verify.returncode != 0:
            sys.exit(f"verify failed after the sweep: {verify.stdout}")
        after, _ = dir_bytes(store / "lake")
        rm(store)
    scanned = result["records_kept"] + result["records_removed"]
    med = statistics.median(walls)
    print(f"store: {report['stored']} events in {report['files']} files, {before / 1e6:.1f} MB of data files; hold on queue {queue}")
    print(f"sweep: {result['files_rewritten']} files rewritten, {result['records_kept']} records kept, "
          f"{result['records_removed']} removed, {result['files_removed']} old files deleted; data files after: {after / 1e6:.1f} MB")
    print(f"sweep (process wall, {args.runs} runs): min {min(walls):.3f} s, median {med:.3f} s; "
          f"{scanned / med:,.0f} records/s, {before / 1e6 / med:.0f} MB/s of data files swept")
    print("commands:")
    for c in commands[:6] + [commands[-1]]:
        print("  " + c)


if __name__ == "__main__":
    main()
