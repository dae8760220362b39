#!/usr/bin/env python3
"""Benchmark: `holdfast export` against DuckDB's COPY (SELECT ...) TO ... (FORMAT PARQUET)
over the same lake files, in the same run (issue 15).

    python3 benches/export.py

Data: the 1M-event file of issue 11 (../shared/bench/gen_events.py --events 1000000
--days 30 --dup-rate 0.03 --seed 42), found in bench-out/ or generated. One holdfast store
(init, ingest, batch; not timed; --reuse keeps it when built from the same file by the same
binary). Then R runs (--runs, default 3) of each mode, holdfast and DuckDB taking turns,
each a fresh process whose wall time and peak RSS (ru_maxrss from wait4) are measured:

  index       every committed event's index columns (the analytics extract):
              `holdfast export --target parquet` against DuckDB copying the same 17
              columns (record_hash as hex, expired rows left out) from
              read_parquet('<store>/lake/**/*.parquet', hive_partitioning = true)
  production  the events of 3 days (about 100k) decrypted into typed columns for a case:
              `holdfast export --decrypt --case BENCH --from .. --until ..` against DuckDB
              copying the same rows' index columns and the encrypted payload as it is.
              DuckDB cannot decrypt: its side is the cost of moving the same rows, not of
              opening them.

Both write zstd Parquet (DuckDB: COMPRESSION zstd, ROW_GROUP_SIZE 1048576, one file). The
table shows medians: rows/s, output MB/s (bytes written per second of wall time), peak RSS,
and the ratio holdfast / DuckDB for speed (above 1: holdfast faster) and RSS. `export
verify` on the last holdfast output is timed once as well.

Standard library only; DuckDB's Python package comes from a venv <workdir>/.venv-duckdb
(created once). Does not build holdfast: the default binary is
/work/target-release/release/holdfast (--binary to override).
"""
import argparse
import getpass
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import dir_bytes, rm

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = Path("/work/target-release/release/holdfast")
EVENTS = "events-1000000-seed42.ndjson"
DAYS = ("2025-10-01", "2025-10-03")
INDEX = ("event_id, interaction_id, tenant_id, interaction_type, source_platform, state, "
         "direction, occurred_at, ingested_at, queue_id, agent_ids, wrap_up_code, disposition, "
         "schema_version, policy_id, expires_at")
COMMANDS = []


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def line_of(argv, env=None):
    pre = "".join(f"{k}={shlex.quote(str(v))} " for k, v in (env or {}).items())
    return pre + " ".join(shlex.quote(str(a)) for a in argv)


def run(argv, env=None):
    line = line_of(argv, env)
    if line not in COMMANDS:
        COMMANDS.append(line)
    r = subprocess.run([str(a) for a in argv], env={**os.environ, **(env or {})},
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {line}\n{r.stderr}")
    return r.stdout


def timed(argv, env=None):
    """(wall seconds, peak RSS bytes) of one fresh process."""
    line = line_of(argv, env)
    if line not in COMMANDS:
        COMMANDS.append(line)
    t0 = time.perf_counter()
    p = subprocess.Popen([str(a) for a in argv], env={**os.environ, **(env or {})},
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {line}\n{err.decode()}")
    return wall, usage.ru_maxrss * 1024


def venv(workdir):
    v = workdir / ".venv-duckdb"
    if not (v / "bin" / "python").exists() or subprocess.run(
            [v / "bin" / "python", "-c", "import duckdb"], capture_output=True).returncode:
        log(f"creating {v} (pip install duckdb)")
        run([sys.executable, "-m", "venv", v])
        run([v / "bin" / "pip", "install", "-q", "duckdb"])
    return v / "bin" / "python"


def events_file(args):
    for d in (args.workdir, REPO / "bench-out"):
        if (d / EVENTS).exists():
            return d / EVENTS
    out = args.workdir / EVENTS
    log(f"generating {out}")
    run([sys.executable, args.shared / "gen_events.py", "--events", 1_000_000, "--days", 30,
         "--dup-rate", "0.03", "--seed", "42", "--out", out])
    return out


def build(args, binary):
    src = events_file(args)
    d = args.workdir / "export-bench"
    store, keyring, meta = d / "store", d / "keyring.json", d / "store.meta.json"
    env = {"HOLDFAST_KEYRING": str(keyring)}
    d.mkdir(parents=True, exist_ok=True)
    want = {"input": str(src), "binary": str(binary),
            "binary_mtime": os.path.getmtime(binary)}
    if args.reuse and meta.exists() and json.loads(meta.read_text()) == want:
        log(f"reusing {store}")
    else:
        log(f"building {store} from {src}")
        for p in (store, keyring, meta):
            rm(p)
        run([binary, "init", "--store", store], env)
        run([binary, "ingest", "--store", store, src], env)
        run([binary, "batch", "--store", store, "--format", "json"], env)
        meta.write_text(json.dumps(want) + "\n")
    return store, env, d


def duckdb_copy(py, store, out, production):
    lake = str(store / "lake") + "/**/*.parquet"
    where = "expires_at > now()"
    cols = INDEX + ", lower(hex(record_hash)) AS record_hash"
    if production:
        where += (f" AND occurred_at >= TIMESTAMPTZ '{DAYS[0]}T00:00:00Z'"
                  f" AND occurred_at < TIMESTAMPTZ '{DAYS[1]}T00:00:00Z' + INTERVAL 1 DAY")
        cols += ", payload"
    sql = (f"SET TimeZone = 'UTC'; COPY (SELECT {cols} FROM read_parquet('{lake}', "
           f"hive_partitioning = true, hive_types = {{'interaction_type': VARCHAR}}) WHERE {where}) "
           f"TO '{out}' (FORMAT PARQUET, COMPRESSION zstd, ROW_GROUP_SIZE 1048576)")
    return [py, "-c", "import duckdb, sys; c = duckdb.connect(); [c.execute(s) for s in sys.argv[1].split('; ')]", sql]


def rows_of(py, path):
    glob = f"{path}/data/*.parquet" if path.is_dir() else str(path)
    out = run([py, "-c", "import duckdb, sys; print(duckdb.connect().execute("
               "f\"SELECT count(*) FROM read_parquet('{sys.argv[1]}')\").fetchone()[0])", glob])
    return int(out.strip())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", type=Path, default=DEFAULT_BINARY)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench-out")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "bench")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="keep the store of an earlier run")
    ap.add_argument("--json", type=Path, help="write the raw figures here")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    py = venv(args.workdir)
    store, env, d = build(args, args.binary)
    modes = {
        "index": ([], False),
        # a production names its actor: the OS user's own name
        "production": (["--decrypt", "--case", "BENCH", "--actor", getpass.getuser(),
                        "--from", DAYS[0], "--until", DAYS[1]], True),
    }
    res = {}
    for mode, (extra, production) in modes.items():
        res[mode] = {"holdfast": [], "duckdb": []}
        for i in range(args.runs):
            out = d / f"out-{mode}"
            rm(out)
            w, r = timed([args.binary, "export", "--store", store, "--target", "parquet",
                          "--out", out] + extra, env)
            size, _ = dir_bytes(out / "data")
            res[mode]["holdfast"].append({"wall_s": w, "rss": r, "bytes": size})
            dk = d / f"duckdb-{mode}.parquet"
            rm(dk)
            w, r = timed(duckdb_copy(py, store, dk, production))
            res[mode]["duckdb"].append({"wall_s": w, "rss": r, "bytes": dk.stat().st_size})
            log(f"{mode} run {i + 1}: holdfast {res[mode]['holdfast'][-1]['wall_s']:.2f} s, "
                f"duckdb {w:.2f} s")
        res[mode]["rows"] = {"holdfast": rows_of(py, d / f"out-{mode}"),
                             "duckdb": rows_of(py, d / f"duckdb-{mode}.parquet")}
        w, _ = timed([args.binary, "export", "verify", d / f"out-{mode}", "--store", store], env)
        res[mode]["verify_s"] = w
    med = lambda xs, k: statistics.median(x[k] for x in xs)
    print(f"\n{'mode':<11} {'tool':<9} {'rows':>9} {'wall s':>7} {'rows/s':>10} {'MB out':>7} "
          f"{'MB/s':>6} {'peak RSS MB':>12}")
    for mode in modes:
        r = res[mode]
        for tool in ("holdfast", "duckdb"):
            w, rss, b = med(r[tool], "wall_s"), med(r[tool], "rss"), med(r[tool], "bytes")
            n = r["rows"][tool]
            print(f"{mode:<11} {tool:<9} {n:>9} {w:>7.2f} {n / w:>10.0f} {b / 1e6:>7.1f} "
                  f"{b / 1e6 / w:>6.1f} {rss / 1e6:>12.0f}")
        h, k = r["holdfast"], r["duckdb"]
        print(f"{mode:<11} ratio     speed {med(k, 'wall_s') / med(h, 'wall_s'):.2f}x "
              f"(above 1: holdfast faster), RSS {med(h, 'rss') / med(k, 'rss'):.2f}x, "
              f"export verify {r['verify_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    print("\ncommands:")
    for c in COMMANDS:
        print("  " + c)


main()
