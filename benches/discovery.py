#!/usr/bin/env python3
"""Benchmark: discovery queries as whole processes, holdfast against the DuckDB CLI.

One command measures both partition counts of issue 11:

    python3 benches/discovery.py

  small     the 1M-event file (gen_events.py --events 1000000 --days 30 --dup-rate 0.03
            --seed 42): about 126 partitions
  backfill  200,000 events over 1,100 days (--days 1100 --start 2023-01-01T00:00:00Z):
            about 4,399 partitions

For each data set: a holdfast store (init, ingest, batch) and DuckDB's own hive lake of the
same events (../shared/bench/run_duckdb.py --dedup qualify: COPY ... PARTITION_BY year,
month, day, interaction_type), both built once (not timed; --reuse keeps them). Then each
query runs R times (--runs, default 7) as a fresh process, holdfast and DuckDB taking turns:
`holdfast query --format csv SQL` against `duckdb -csv -c "SET TimeZone = 'UTC'; SQL"` over
read_parquet('<lake>/**/*.parquet', hive_partitioning = true, hive_types = {...}). Both print
CSV with a header. Wall time is process start to exit (stdout to a pipe); peak RSS is the
process's own ru_maxrss from wait4. The table shows medians, the ratio holdfast / DuckDB
(above 1: holdfast slower) and the row counts of both.

Queries (the interaction id is that of the smallest event id; the agent the most frequent):
  point         count of one interaction_id, no date bound (both sets)
  agent_7d      one agent over 7 days (small): holdfast sql/discovery/by_agent.sql;
                DuckDB's lake keeps the first agent only (agent_id), so its row count
                can be lower
  daily_counts  count per day and type (both sets)
  month_count   one month's count, 2024-06 (backfill)

Standard library only; the DuckDB CLI comes from PyPI (`pip install duckdb duckdb-cli` into
<workdir>/.venv-duckdb, done once here). Does not build holdfast: the default binary is
/work/target-release/release/holdfast (--binary to override).
"""
import argparse
import csv
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import count_lines, dir_bytes, rm

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = Path("/work/target-release/release/holdfast")
SETS = {
    "small": {"events": 1_000_000, "days": 30, "start": None,
              "file": "events-1000000-seed42.ndjson",
              "queries": ["point", "agent_7d", "daily_counts"]},
    "backfill": {"events": 200_000, "days": 1100, "start": "2023-01-01T00:00:00Z",
                 "file": "backfill-200000.ndjson",
                 "queries": ["point", "month_count", "daily_counts"]},
}
WINDOW = ("2025-10-08T00:00:00Z", "2025-10-15T00:00:00Z")
BY_AGENT_FILE = "sql/discovery/by_agent.sql"
COMMANDS = []


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def shell(argv, env=None, cwd=None):
    pre = "".join(f"{k}={shlex.quote(str(v))} " for k, v in (env or {}).items())
    line = pre + " ".join(shlex.quote(str(a)) for a in argv)
    return f"(cd {shlex.quote(str(cwd))} && {line})" if cwd else line


def run(argv, env=None, cwd=None):
    line = shell(argv, env, cwd)
    if line not in COMMANDS:
        COMMANDS.append(line)
    r = subprocess.run([str(a) for a in argv], env={**os.environ, **(env or {})}, cwd=cwd,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {line}\n{r.stderr}")
    return r.stdout


def timed(argv, env=None, cwd=None):
    """(wall seconds, peak RSS bytes, stdout) of one fresh process."""
    line = shell(argv, env, cwd)
    if line not in COMMANDS:
        COMMANDS.append(line)
    t0 = time.perf_counter()
    p = subprocess.Popen([str(a) for a in argv], env={**os.environ, **(env or {})}, cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {line}")
    return wall, usage.ru_maxrss * 1024, out.decode()


def rows(text):
    return max(0, len(list(csv.reader(io.StringIO(text)))) - 1)


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def venv(workdir):
    v = workdir / ".venv-duckdb"
    if not (v / "bin" / "duckdb").exists():
        log(f"creating {v} (pip install duckdb duckdb-cli)")
        run([sys.executable, "-m", "venv", v])
        run([v / "bin" / "pip", "install", "-q", "duckdb", "duckdb-cli"])
    return v


def events_file(args, name, spec):
    for d in (args.workdir, Path("/work/main/bench-out")):
        if (d / spec["file"]).exists():
            return d / spec["file"]
    out = args.workdir / spec["file"]
    gen = [sys.executable, args.shared / "gen_events.py", "--events", spec["events"],
           "--days", spec["days"], "--dup-rate", "0.03", "--seed", "42", "--out", out]
    if spec["start"]:
        gen += ["--start", spec["start"]]
    log(f"generating {out}")
    run(gen)
    return out


def build(args, binary, py, name, spec):
    """The holdfast store (per --tag) and DuckDB's lake of one data set; --reuse keeps each
    when it was built from the same file (and, for the store, by the same binary)."""
    src = events_file(args, name, spec)
    d = args.workdir / f"discovery-{name}"
    store, keyring = d / f"store-{args.tag}", d / f"keyring-{args.tag}.json"
    lake = d / "duckdb-lake"
    env = {"HOLDFAST_KEYRING": str(keyring)}
    d.mkdir(parents=True, exist_ok=True)
    meta, lake_meta = d / f"store-{args.tag}.meta.json", d / "duckdb-lake.meta.json"
    want = {"input": str(src), "binary": str(binary)}
    if args.reuse and meta.exists() and json.loads(meta.read_text()) == want:
        log(f"{name}: reusing {store}")
    else:
        log(f"{name}: building {store} from {src}")
        for p in (store, keyring, meta):
            rm(p)
        run([binary, "init", "--store", store], env)
        run([binary, "ingest", "--store", store, src], env)
        run([binary, "batch", "--store", store, "--format", "json"], env)
        meta.write_text(json.dumps(want) + "\n")
    if args.reuse and lake_meta.exists() and json.loads(lake_meta.read_text()) == {"input": str(src)}:
        log(f"{name}: reusing {lake}")
    else:
        rm(lake)
        run([py / "bin" / "python", args.shared / "run_duckdb.py", "--input", src,
             "--out", lake, "--dedup", "qualify"])
        lake_meta.write_text(json.dumps({"input": str(src)}) + "\n")
    partitions = sum(1 for _ in (store / "manifests").glob("year=*/month=*/day=*/interaction_type=*"))
    return {"store": store, "lake": lake, "env": env, "input": src, "partitions": partitions,
            "lake_files": dir_bytes(store / "lake")[1], "duckdb_files": dir_bytes(lake)[1]}


def queries(binary, py, b, names):
    hf = [binary, "query", "--store", b["store"], "--format", "csv"]
    first = run(hf + ["SELECT interaction_id, agent_ids[1] AS a FROM events ORDER BY event_id LIMIT 1"],
                b["env"])
    interaction = list(csv.reader(io.StringIO(first)))[1][0]
    src = (f"read_parquet({sql_str(str(b['lake']) + '/**/*.parquet')}, hive_partitioning = true, "
           "hive_types = {'year': INTEGER, 'month': INTEGER, 'day': INTEGER, "
           "'interaction_type': VARCHAR})")
    point = "SELECT count(*) AS n FROM {} WHERE interaction_id = " + sql_str(interaction)
    daily = ("SELECT year, month, day, interaction_type, count(*) AS n FROM {} "
             "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")
    month = "SELECT count(*) AS n FROM {} WHERE year = 2024 AND month = 6"
    out = {}
    for name in names:
        if name == "agent_7d":
            pick = run(hf + ["SELECT a FROM (SELECT unnest(agent_ids) AS a FROM events) "
                             "GROUP BY a ORDER BY count(*) DESC, a LIMIT 1"], b["env"])
            agent = list(csv.reader(io.StringIO(pick)))[1][0]
            hf_argv = hf + ["--file", BY_AGENT_FILE, "--param", f"agent={agent}",
                            "--param", f"from={WINDOW[0]}", "--param", f"to={WINDOW[1]}"]
            dk = (f"SELECT interaction_id, event_id, occurred_at, interaction_type, queue_id FROM {src} "
                  f"WHERE agent_id = {sql_str(agent)} AND occurred_at >= TIMESTAMPTZ {sql_str(WINDOW[0])} "
                  f"AND occurred_at < TIMESTAMPTZ {sql_str(WINDOW[1])} "
                  "AND year * 10000 + month * 100 + day BETWEEN 20251008 AND 20251015 "
                  "ORDER BY occurred_at, event_id")
            out[name] = (hf_argv, REPO, dk)
        else:
            sql = {"point": point, "daily_counts": daily, "month_count": month}[name]
            out[name] = (hf + [sql.format("events")], None, sql.format(src))
    return {k: (h, cwd, [py / "bin" / "duckdb", "-csv", "-c", f"SET TimeZone = 'UTC'; {d}"])
            for k, (h, cwd, d) in out.items()}, interaction


def measure(runs, b, qs, binary, py):
    res = {}
    base = {"holdfast": [binary, "--version"], "duckdb": [py / "bin" / "duckdb", "-csv", "-c", "SELECT 1"]}
    for name, (hf, cwd, dk) in qs.items():
        log(f"{name}: {runs} runs each")
        t = {"holdfast": [], "duckdb": []}
        for _ in range(runs):
            t["holdfast"].append(timed(hf, b["env"], cwd))
            t["duckdb"].append(timed(dk))
        res[name] = {tool: {"wall_s": [w for w, _, _ in v], "rss_bytes": [r for _, r, _ in v],
                            "rows": rows(v[-1][2]), "command": shell(hf, b["env"], cwd) if tool == "holdfast" else shell(dk)}
                     for tool, v in t.items()}
    for tool, argv in base.items():
        v = [timed(argv) for _ in range(runs)]
        res[f"start-up ({tool})"] = {tool: {"wall_s": [w for w, _, _ in v], "rss_bytes": [r for _, r, _ in v]}}
    return res


def med(v):
    return statistics.median(v)


def table(name, b, res):
    print(f"\n== {name}: {b['partitions']:,} partitions, {b['lake_files']:,} holdfast files, "
          f"{b['duckdb_files']:,} DuckDB files ({b['input'].name}) ==")
    print(f"{'query':<14} {'holdfast ms':>11} {'duckdb ms':>10} {'ratio':>6} "
          f"{'holdfast MB':>11} {'duckdb MB':>10} {'rows hf / dk':>14}")
    for q, r in res.items():
        if q.startswith("start-up"):
            continue
        hf, dk = r["holdfast"], r["duckdb"]
        ratio = med(hf["wall_s"]) / med(dk["wall_s"])
        print(f"{q:<14} {med(hf['wall_s']) * 1e3:>11.0f} {med(dk['wall_s']) * 1e3:>10.0f} {ratio:>5.2f}x "
              f"{med(hf['rss_bytes']) / 1e6:>11.0f} {med(dk['rss_bytes']) / 1e6:>10.0f} "
              f"{hf['rows']:>6,} / {dk['rows']:<6,}")
    for q, r in res.items():
        if q.startswith("start-up"):
            tool, v = next(iter(r.items()))
            print(f"{q:<22} {med(v['wall_s']) * 1e3:>6.0f} ms {med(v['rss_bytes']) / 1e6:>6.0f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per query and tool (median reported)")
    ap.add_argument("--sets", default="small,backfill", help="comma-separated: small, backfill")
    ap.add_argument("--reuse", action="store_true", help="keep stores and lakes built from the same file")
    ap.add_argument("--binary", type=Path, default=DEFAULT_BINARY)
    ap.add_argument("--tag", default="holdfast",
                    help="names the holdfast store (store-<tag>), e.g. before / after")
    ap.add_argument("--workdir", type=Path, default=REPO / "bench-out")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "bench")
    args = ap.parse_args()
    if not (args.shared / "run_duckdb.py").exists():
        args.shared = Path("/work/shared/bench")
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"{args.binary} missing (CARGO_TARGET_DIR=/work/target-release cargo build --release)")
    py = venv(args.workdir)
    result = {"binary": str(args.binary), "runs": args.runs,
              "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                    capture_output=True, text=True).stdout.strip(),
              "duckdb": run([py / "bin" / "duckdb", "-csv", "-noheader", "-c", "SELECT version()"]).strip(),
              "sets": {}}
    for name in args.sets.split(","):
        spec = SETS[name]
        b = build(args, args.binary, py, name, spec)
        qs, interaction = queries(args.binary, py, b, spec["queries"])
        res = measure(args.runs, b, qs, args.binary, py)
        table(name, b, res)
        result["sets"][name] = {"partitions": b["partitions"], "interaction_id": interaction,
                                "input": str(b["input"]), "results": res}
    print(f"\nholdfast {args.binary} (git {result['git']}), DuckDB CLI {result['duckdb']}, "
          f"{os.cpu_count()} CPUs; medians of {args.runs} runs")
    print("\ncommands run:")
    for c in COMMANDS:
        print("  " + c)
    out = args.workdir / f"discovery-{args.tag}.json"
    out.write_text(json.dumps({**result, "commands": COMMANDS}, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
