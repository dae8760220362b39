#!/usr/bin/env python3
"""Sweep planning benchmark: a store of ~4,000 partitions (about 3 years x 4 types), then
`holdfast sweep --dry-run` timed as a whole process, and (with strace) a count of the Parquet
files it opens, which must be zero: the plan reads manifests and the hold registry only.

  python3 benches/sweep_plan.py [--events 90000] [--days 1100] [--runs 5] [--binary PATH]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import rm

REPO = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=90000)
    ap.add_argument("--days", type=int, default=1100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--now", default="2032-06-01T00:00:00Z")
    ap.add_argument("--binary", type=Path, default=Path("/work/target-release/release/holdfast"))
    ap.add_argument("--workdir", type=Path, default=REPO / "bench-out")
    args = ap.parse_args()
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"{args.binary} missing: CARGO_TARGET_DIR=/work/target-release cargo build --release")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    events = work / f"sweep-events-{args.events}-{args.days}.ndjson"
    store, keyring = work / "sweep-store", work / "sweep-keyring.json"
    env = dict(os.environ, HOLDFAST_KEYRING=str(keyring))
    commands = []

    def run(argv, **kw):
        commands.append(" ".join(str(a) for a in argv))
        return subprocess.run([str(a) for a in argv], env=env, check=True, capture_output=True, text=True, **kw)

    if not events.exists():
        run([sys.executable, REPO.parent / "shared/bench/gen_events.py", "--events", args.events, "--days", args.days, "--seed", 8, "--out", events])
    rm(store)
    rm(keyring)
    run([args.binary, "init", "--store", store])
    run([args.binary, "ingest", "--store", store, events])
    import json
    report = json.loads(run([args.binary, "batch", "--store", store, "--format", "json"]).stdout)
    batch = f"{report['stored']} events in {report['files']} files"
    partitions = len(list((store / "manifests").glob("year=*/month=*/day=*/interaction_type=*")))
    walls = []
    sweep = [args.binary, "sweep", "--store", store, "--dry-run", "--now", args.now]
    for _ in range(args.runs):
        t0 = time.perf_counter()
        run(sweep)
        walls.append(time.perf_counter() - t0)
    opened = "strace not installed"
    if shutil.which("strace"):
        trace = work / "sweep-strace.txt"
        run(["strace", "-f", "-e", "trace=openat", "-o", trace] + sweep)
        opened = sum(1 for line in open(trace) if ".parquet" in line)
    # placing a hold with no date range reads the index columns of every file
    rows = run([args.binary, "query", "--store", store, "--format", "ndjson",
                "SELECT queue_id, count(*) AS n FROM events WHERE queue_id IS NOT NULL GROUP BY queue_id ORDER BY n DESC LIMIT 1"]).stdout
    hold = work / "sweep-hold.json"
    hold.write_text(json.dumps({"holdId": "BENCH-Q", "status": "ACTIVE", "scope": {"queueIds": [json.loads(rows.splitlines()[0])["queue_id"]]}}))
    t0 = time.perf_counter()
    placed = run([args.binary, "hold", "apply", "--store", store, "--actor", "counsel", "--file", hold]).stdout.strip()
    apply_wall = time.perf_counter() - t0
    print(f"partitions: {partitions}; batch: {batch.strip()}")
    print(f"sweep --dry-run (process wall, {args.runs} runs): min {min(walls):.3f} s, median {statistics.median(walls):.3f} s")
    print(f"Parquet files opened by the plan: {opened}")
    print(f"hold apply on the busiest queue, no date range (process wall, 1 run): {apply_wall:.3f} s; {placed}")
    print("commands:")
    for c in commands[: 4] + [commands[-3], commands[-1]]:
        print("  " + c)


if __name__ == "__main__":
    main()
