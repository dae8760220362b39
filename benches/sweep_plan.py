#!/usr/bin/env python3
"""Sweep planning benchmark: a store of ~4,000 partitions (about 3 years x 4 types), then
`holdfast sweep --dry-run` timed as a whole process, and (with strace) a count of the Parquet
files it opens, which must be zero: the plan reads manifests and the hold registry only.

  python3 benches/sweep_plan.py [--events 90000] [--days 1100] [--runs 5] [--binary PATH]
"""
import argparse
import shutil
import statistics
import time
from pathlib import Path

from benchlib import Bench

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
    b = Bench(args.binary, args.workdir, "sweep", args.events, args.days, 8)
    run, store, work, commands = b.run, b.store, b.work, b.commands
    report = b.build()
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
    _, placed, apply_wall = b.hold_busiest_queue("BENCH-Q")
    print(f"partitions: {partitions}; batch: {batch.strip()}")
    print(f"sweep --dry-run (process wall, {args.runs} runs): min {min(walls):.3f} s, median {statistics.median(walls):.3f} s")
    print(f"Parquet files opened by the plan: {opened}")
    print(f"hold apply on the busiest queue, no date range (process wall, 1 run): {apply_wall:.3f} s; {placed}")
    print("commands:")
    for c in commands[: 4] + [commands[-3], commands[-1]]:
        print("  " + c)


if __name__ == "__main__":
    main()
