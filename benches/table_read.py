#!/usr/bin/env python3
"""Benchmark: reading a holdfast store as a Delta table (delta-rs, polars) against a hive glob
of its lake in DuckDB, in the same run (issue 16).

    python3 benches/table_read.py [--store DIR] [--runs 5]

The store defaults to the one benches/export.py builds (bench-out/export-bench/store, 1M
events over 30 days, about 120 files); `holdfast table rebuild` writes its log first when it
has none (not timed). Each measurement is a fresh Python process (the test venv,
.venv-test, which has deltalake, polars and DuckDB), readers taking turns, medians of R runs:

  open        load the table's state only: DeltaTable(root) (the log read), against DuckDB
              listing the glob (SELECT count(*) over the file list, no data read)
  first_row   the first row of event_id
  all_rows    every row of event_id, tenant_id, occurred_at

Then the log read against the number of versions: the same files published as 1 version and
as N (one per partition, `--versions`), DeltaTable(root) timed for each, so that the cost of a
long log without checkpoints shows.
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

REPO = Path(__file__).resolve().parent.parent
PY = REPO / ".venv-test" / "bin" / "python"
BINARY = Path("/work/target-release/release/holdfast")

SNIPPETS = {
    ("deltalake", "open"): "import deltalake; deltalake.DeltaTable(ROOT).version()",
    ("polars", "open"): "import polars as pl; pl.scan_delta(ROOT).collect_schema()",
    ("duckdb", "open"): "import duckdb; duckdb.connect().execute(f\"SELECT count(*) FROM glob('{ROOT}/lake/**/*.parquet')\").fetchall()",
    ("deltalake", "first_row"): "import deltalake; t = deltalake.DeltaTable(ROOT); d = t.to_pyarrow_dataset(); d.head(1, columns=['event_id'])",
    ("polars", "first_row"): "import polars as pl; pl.scan_delta(ROOT).select('event_id').head(1).collect()",
    ("duckdb", "first_row"): "import duckdb; duckdb.connect().execute(f\"SELECT event_id FROM read_parquet('{ROOT}/lake/**/*.parquet', hive_partitioning = true) LIMIT 1\").fetchall()",
    ("deltalake", "all_rows"): "import deltalake; print(deltalake.DeltaTable(ROOT).to_pyarrow_table(columns=['event_id', 'tenant_id', 'occurred_at']).num_rows)",
    ("polars", "all_rows"): "import polars as pl; print(pl.scan_delta(ROOT).select('event_id', 'tenant_id', 'occurred_at').collect().height)",
    ("duckdb", "all_rows"): "import duckdb; print(duckdb.connect().execute(f\"SELECT event_id, tenant_id, occurred_at FROM read_parquet('{ROOT}/lake/**/*.parquet', hive_partitioning = true)\").to_arrow_table().num_rows)",
}


def timed(code, root):
    t0 = time.perf_counter()
    # os._exit: with pyarrow 26 and deltalake 1.6.6 a process that made a delta-rs dataset
    # segfaults at interpreter exit, after its work is done
    tail = "\nimport os, sys; sys.stdout.flush(); os._exit(0)"
    r = subprocess.run([str(PY), "-c", f"ROOT = {str(root)!r}\n{code}{tail}"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed: {code}\n{r.stderr}")
    return wall, r.stdout.strip()


def log_versions(root):
    return sorted(p for p in (root / "_delta_log").glob("*.json"))


def spread_log(src, dst, per_version):
    """A copy of the store's table whose log adds the same files over many versions (one
    add each); data files are symlinked, not copied."""
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "_delta_log").mkdir(parents=True)
    os.symlink(src / "lake", dst / "lake")
    lines = []
    for f in log_versions(src):
        lines += [l for l in f.read_text().splitlines() if l]
    head = [l for l in lines if '"protocol"' in l or '"metaData"' in l]
    adds = [l for l in lines if l.startswith('{"add"')]
    info = json.dumps({"commitInfo": {"timestamp": 0, "operation": "WRITE"}})
    (dst / "_delta_log" / f"{0:020}.json").write_text("\n".join([info] + head + adds[:per_version]) + "\n")
    v = 1
    for i in range(per_version, len(adds), per_version):
        (dst / "_delta_log" / f"{v:020}.json").write_text("\n".join([info] + adds[i:i + per_version]) + "\n")
        v += 1
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, default=REPO / "bench-out" / "export-bench" / "store")
    ap.add_argument("--keyring", type=Path, default=REPO / "bench-out" / "export-bench" / "keyring.json")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    root = args.store.resolve()
    if not log_versions(root):
        subprocess.run([str(BINARY), "table", "rebuild", "--store", str(root)], check=True,
                       env={**os.environ, "HOLDFAST_KEYRING": str(args.keyring)}, capture_output=True)
    res = {}
    for what in ("open", "first_row", "all_rows"):
        for i in range(args.runs):
            for reader in ("deltalake", "polars", "duckdb"):
                w, out = timed(SNIPPETS[(reader, what)], root)
                res.setdefault((what, reader), []).append(w)
                if out:
                    res.setdefault((what, reader, "rows"), out)
    print(f"store {root}: {len(log_versions(root))} log version(s)")
    print(f"{'measure':<10} {'delta-rs':>9} {'polars':>9} {'duckdb glob':>12}   (medians of {args.runs}, whole processes, s)")
    for what in ("open", "first_row", "all_rows"):
        row = [statistics.median(res[(what, r)]) for r in ("deltalake", "polars", "duckdb")]
        print(f"{what:<10} {row[0]:>9.3f} {row[1]:>9.3f} {row[2]:>12.3f}")
    print("rows:", {r: res.get(("all_rows", r, "rows")) for r in ("deltalake", "polars", "duckdb")})
    # the log read against the number of versions (no checkpoints)
    tmp = REPO / "bench-out" / "table-versions"
    for per in (100000, 10, 1):
        n = spread_log(root, tmp, per)
        walls = [timed(SNIPPETS[("deltalake", "open")], tmp)[0] for _ in range(args.runs)]
        print(f"log of {n:>5} version(s): DeltaTable() {statistics.median(walls):.3f} s")
    shutil.rmtree(tmp)


main()
