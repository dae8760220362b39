#!/usr/bin/env python3
"""Benchmark: what a durable commit of the backfill's partitions costs this filesystem alone,
side by side with DuckDB's whole backfill in the same run.

    python3 benches/commit_floor.py --input bench-out/backfill-200000.ndjson --runs 3

The partitions are those of the input file (day of `occurredAt` x interaction type: 4,399 for
the backfill of ingest_batch.py). For each layout below, a thread pool of 32 (as many file steps
as holdfast's batch has in flight) creates the folders and writes every partition's objects,
then syncs every new folder once; nothing is encoded, compressed or encrypted, so a batch
that writes this layout cannot take less time than this on this machine:

  holdfast        data file + manifest + lock record, each in its own year=/month=/day=/
                  interaction_type= tree (lake/, manifests/, _locks/lake/), each fsynced
  one-tree        the same three objects in the partition's one folder, each fsynced
  data-durable    the data file only, fsynced
  data-unsynced   the data file only, no fsync (what DuckDB's COPY ... PARTITION_BY leaves)

Object sizes are the backfill's averages (data 26,720 B, manifest 1,719 B, lock record 119 B;
ingest_batch.py --backfill prints the first two). Then ../shared/bench/run_duckdb.py runs the
whole backfill (read, dedupe, partition, write Parquet) under /usr/bin/time. Rounds alternate
which goes first; every output goes to a new folder and all are removed at the end (ext4
without a journal is slow to allocate inodes for a minute after mass deletes: the next
invocation waits --settle seconds if it removed anything).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import count_lines, parse_time_v, rm

REPO = Path(__file__).resolve().parent.parent
SIZES = {"data": 26_720, "manifest": 1_719, "lock": 119}
LAYOUTS = {
    "holdfast": [("lake/{p}/part-b.parquet", "data", True),
                 ("manifests/{p}/v00000000000000000001.json", "manifest", True),
                 ("_locks/lake/{p}/part-b.parquet.lock.json", "lock", True)],
    "one-tree": [("lake/{p}/part-b.parquet", "data", True),
                 ("lake/{p}/_manifest.v00000000000000000001.json", "manifest", True),
                 ("lake/{p}/_lock.part-b.parquet.json", "lock", True)],
    "data-durable": [("lake/{p}/part-b.parquet", "data", True)],
    "data-unsynced": [("lake/{p}/part-b.parquet", "data", False)],
}


def partitions(path):
    """The input's partitions, `year=/month=/day=/interaction_type=`, sorted."""
    out = set()
    with open(path) as f:
        for line in f:
            try:
                e = json.loads(line)
                day = e["occurredAt"][:10]
                t = e["interaction"]["interactionType"]
            except (ValueError, KeyError, TypeError):
                continue
            y, m, d = day.split("-")
            out.add(f"year={y}/month={m}/day={d}/interaction_type={t}")
    return sorted(out)


def write_layout(root, parts, objects):
    payload = os.urandom(max(SIZES.values()))
    synced = any(s for _, _, s in objects)

    def one(p):
        dirs = []
        for pattern, kind, sync in objects:
            target = os.path.join(root, pattern.format(p=p))
            folder = os.path.dirname(target)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            dirs.append(folder)
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            try:
                os.write(fd, payload[: SIZES[kind]])
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        return dirs

    def sync_dir(d):
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    before, t0 = os.times(), time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        new = set()
        for folders in pool.map(one, parts):
            for d in folders:
                while d != root and d not in new:
                    new.add(d)
                    d = os.path.dirname(d)
        if synced:
            list(pool.map(sync_dir, sorted(new) + [root]))
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"wall_s": time.monotonic() - t0, "cpu_s": cpu, "folders": len(new),
            "objects": len(parts) * len(objects)}


def duckdb(py, shared, events, lines, out, time_file):
    subprocess.run(["/usr/bin/time", "-v", "-o", str(time_file), str(py), str(shared / "run_duckdb.py"),
                    "--input", str(events), "--out", str(out), "--dedup", "qualify", "--lines", str(lines)],
                   check=True, capture_output=True)
    t = parse_time_v(time_file.read_text())
    return {"wall_s": t["wall_s"], "cpu_s": t["user_s"] + t["sys_s"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help="NDJSON events (the backfill file)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workdir", default=str(REPO / "bench-out" / "commit-floor"))
    p.add_argument("--shared", default=str(REPO.parent / "shared" / "bench"))
    p.add_argument("--duckdb-python", help="a Python with duckdb (default: <repo>/bench-out/.venv-duckdb, "
                   "created by ingest_batch.py)")
    p.add_argument("--settle", type=int, default=70)
    a = p.parse_args()
    work = Path(a.workdir)
    if work.exists():
        rm(work)
        print(f"removed the outputs of an earlier run; waiting {a.settle} s", file=sys.stderr)
        time.sleep(a.settle)
    work.mkdir(parents=True)
    py = Path(a.duckdb_python) if a.duckdb_python else REPO / "bench-out" / ".venv-duckdb" / "bin" / "python"
    if not py.exists():
        sys.exit(f"{py} missing: run benches/ingest_batch.py once (it creates it), or pass --duckdb-python")
    parts = partitions(a.input)
    lines = count_lines(a.input)
    results = {k: [] for k in [*LAYOUTS, "duckdb"]}
    for i in range(a.runs):
        order = [*LAYOUTS, "duckdb"] if i % 2 == 0 else ["duckdb", *reversed(LAYOUTS)]
        for k in order:
            if k == "duckdb":
                r = duckdb(py, Path(a.shared), a.input, lines, work / f"duckdb-{i}", work / f"time-{i}.txt")
            else:
                r = write_layout(str(work / f"{k}-{i}"), parts, LAYOUTS[k])
            results[k].append(r)
            print(f"run {i} {k}: {json.dumps(r)}", file=sys.stderr)
    med = lambda k, m: statistics.median(r[m] for r in results[k])
    print(f"{len(parts):,} partitions of {a.input}; medians of {a.runs} runs\n")
    print("| layout | objects | folders | wall s | CPU s | wall / DuckDB's whole backfill |")
    print("|---|---|---|---|---|---|")
    for k in LAYOUTS:
        ratios = [x["wall_s"] / y["wall_s"] for x, y in zip(results[k], results["duckdb"])]
        print(f"| {k} | {results[k][0]['objects']:,} | {results[k][0]['folders']:,} | {med(k, 'wall_s'):.2f} | "
              f"{med(k, 'cpu_s'):.2f} | {statistics.median(ratios):.2f} (runs {min(ratios):.2f}-{max(ratios):.2f}) |")
    print(f"| DuckDB, whole backfill | | | {med('duckdb', 'wall_s'):.2f} | {med('duckdb', 'cpu_s'):.2f} | 1 |")
    rm(work)


if __name__ == "__main__":
    main()
