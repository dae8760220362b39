#!/usr/bin/env python3
"""Sweep rewrite benchmark: a store whose every record has expired, a legal hold on one
queue, then `holdfast sweep` timed as a whole process. Every file holds some held records,
so each is rewritten: its survivors are moved to a new file under a new DEK and the old file
is deleted. Each run starts from a fresh copy of the same store.

  python3 benches/sweep_rewrite.py [--events 300000] [--days 7] [--runs 3] [--binary PATH]
"""
import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from benchlib import Bench, dir_bytes, rm

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
    b = Bench(args.binary, args.workdir, "rewrite", args.events, args.days, 9)
    run, base, work, env, commands = b.run, b.store, b.work, b.env, b.commands
    report = b.build()
    queue, _, _ = b.hold_busiest_queue("BENCH-1")
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
        verify = run([args.binary, "verify", "--store", store, "--format", "json"], check=False)
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
    for c in commands[:6] + [commands[-2]]:
        print("  " + c)


if __name__ == "__main__":
    main()
