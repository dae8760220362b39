#!/usr/bin/env python3
"""Benchmark: cold-process latency of discovery queries, holdfast vs. DuckDB on the same lake.

One run = one command, e.g.

    python3 benches/discovery.py --events 1000000

Steps:
  1. Generate N events with ../shared/bench/gen_events.py (30 days, 3 % re-deliveries,
     seed 42), cached in the workdir as events-<N>-seed<S>.ndjson (shared with
     ingest_batch.py).
  2. Build the lake, unless --reuse-store and <workdir>/discovery-store exists: fresh
     store <workdir>/discovery-store, keyring <workdir>/discovery-keyring.json (both
     deleted first, keyring passed as HOLDFAST_KEYRING), `holdfast init`,
     `holdfast ingest`, `holdfast batch --format json`.  Not timed.
  3. Pick the query arguments from the data, deterministically, with holdfast itself:
     the interaction id of the smallest event_id, the agent with the most events
     (ties: smallest id), and the fixed window [2025-10-08, 2025-10-15) UTC (the
     generator's events start 2025-10-01 and span 30 days).
  4. Run three queries R times each (--runs, default 5), holdfast and DuckDB alternating,
     every run a fresh process: point lookup by interaction id, one agent's events over
     7 days (holdfast: the named query sql/discovery/by_agent.sql), daily counts per
     interaction type.  DuckDB reads the store's Parquet files directly
     (read_parquet('<store>/lake/**/*.parquet', hive_partitioning = true, ...)) from
     `<venv>/bin/python -c "<script>"`; the venv is <workdir>/.venv-duckdb (created and
     `pip install duckdb` if missing).  Also timed R times: the start-up baselines
     `holdfast --version` and python + `import duckdb` + connect without a query.
  5. Check that both tools return the same number of rows per query, print the table
     and the exact commands, and write <workdir>/discovery-<N>.json.

Latency = wall seconds from process start to exit with all rows printed, measured with
time.perf_counter() around subprocess.run(); stdout is captured into a pipe (and only
parsed to count rows), so terminal rendering is not included.  Both sides print CSV
with a header line.  The table shows min and median over the R runs.

Standard library only.  Does not build holdfast: the default binary is
/work/target-release/release/holdfast (override with --binary).
"""
import argparse
import csv
import io
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import count_lines, dir_bytes, rm

REPO = Path(__file__).resolve().parent.parent
DAYS = 30
DUP_RATE = 0.03
DEFAULT_BINARY = Path("/work/target-release/release/holdfast")
STORE_NAME = "discovery-store"
KEYRING_NAME = "discovery-keyring.json"
META_NAME = "discovery-store.meta.json"   # which event file the store was built from

WINDOW_FROM = "2025-10-08T00:00:00Z"
WINDOW_TO = "2025-10-15T00:00:00Z"
WINDOW_FROM_TS = "2025-10-08 00:00:00+00"
WINDOW_TO_TS = "2025-10-15 00:00:00+00"
WINDOW_DAYS = (20251008, 20251015)          # the partition-day bounds by_agent.sql derives
BY_AGENT_FILE = "sql/discovery/by_agent.sql"

PICK_INTERACTION_SQL = "SELECT interaction_id FROM events ORDER BY event_id LIMIT 1"
PICK_AGENT_SQL = ("SELECT a AS agent FROM (SELECT unnest(agent_ids) AS a FROM events) "
                  "GROUP BY a ORDER BY count(*) DESC, a LIMIT 1")

COMMANDS = []  # every external command run, in order, as a shell line (deduplicated)


# --------------------------------------------------------------------------- helpers

def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def fmt_cmd(argv, env=None, cwd=None):
    """Shell-quoted command line, with the extra environment variables in front."""
    prefix = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in (env or {}).items())
    line = shlex.join(str(a) for a in argv)
    line = f"{prefix} {line}" if prefix else line
    return f"(cd {shlex.quote(str(cwd))} && {line})" if cwd else line


def record(line):
    if line not in COMMANDS:
        COMMANDS.append(line)


def run(argv, env=None, cwd=None, capture=True):
    """Run a command (recorded in COMMANDS); exit with its stderr on failure."""
    record(fmt_cmd(argv, env, cwd))
    full_env = {**os.environ, **{k: str(v) for k, v in (env or {}).items()}}
    res = subprocess.run([str(a) for a in argv], env=full_env, cwd=cwd,
                         capture_output=capture, text=True)
    if res.returncode != 0:
        if capture:
            sys.stderr.write(res.stdout or "")
            sys.stderr.write(res.stderr or "")
        sys.exit(f"command failed (exit {res.returncode}): {fmt_cmd(argv, env, cwd)}")
    return res


def timed_run(argv, env=None, cwd=None):
    """One cold process: (wall seconds, stdout text).  Output goes to a pipe."""
    record(fmt_cmd(argv, env, cwd))
    argv = [str(a) for a in argv]
    full_env = {**os.environ, **{k: str(v) for k, v in (env or {}).items()}}
    t0 = time.perf_counter()
    res = subprocess.run(argv, env=full_env, cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.stderr.write(res.stdout.decode(errors="replace"))
        sys.stderr.write(res.stderr.decode(errors="replace"))
        sys.exit(f"command failed (exit {res.returncode}): {fmt_cmd(argv, env, cwd)}")
    return wall, res.stdout.decode()


def csv_rows(text):
    """CSV text -> list of rows (quoted fields with newlines handled)."""
    return list(csv.reader(io.StringIO(text)))


def data_rows(text):
    """Number of data rows in CSV output with a header line."""
    return max(0, len(csv_rows(text)) - 1)


def sql_str(s):
    """SQL string literal."""
    return "'" + s.replace("'", "''") + "'"








def describe(cmd, default="?"):
    try:
        return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                              cwd=REPO).stdout.strip() or default
    except OSError:
        return default


# --------------------------------------------------------------------------- setup

def generate_events(args, workdir):
    """Generate (or reuse) the event file; return (path, line count).

    Same cache as ingest_batch.py; a cached file with the wrong line count (e.g. an
    interrupted earlier run) is regenerated.
    """
    out = workdir / f"events-{args.events}-seed{args.seed}.ndjson"
    argv = [sys.executable, args.shared / "gen_events.py", "--events", args.events,
            "--days", DAYS, "--dup-rate", DUP_RATE, "--seed", args.seed, "--out", out]
    if out.exists() and count_lines(out) == args.events:
        log(f"reusing {out}")
        record(fmt_cmd(argv) + "   # cached from an earlier run, not rerun now")
    else:
        log(f"generating {args.events} events -> {out}")
        run(argv)
    lines = count_lines(out)
    if lines != args.events:
        sys.exit(f"{out} has {lines} lines, expected {args.events}")
    return out, lines


def holdfast_binary(args):
    binary = (args.binary or DEFAULT_BINARY).resolve()
    if not os.access(binary, os.X_OK):
        hint = ("" if args.binary else
                "\nBuild it first: (cd /work/main && CARGO_TARGET_DIR=/work/target-release "
                "cargo build --release), or pass --binary PATH")
        sys.exit(f"holdfast binary {binary} is not an executable file{hint}")
    return binary


def duckdb_python(workdir):
    """Python of <workdir>/.venv-duckdb, created with duckdb installed if missing."""
    venv = workdir / ".venv-duckdb"
    py = venv / "bin" / "python"
    ok = py.exists() and subprocess.run([py, "-c", "import duckdb"],
                                        capture_output=True).returncode == 0
    if not ok:
        log(f"creating {venv} and installing duckdb")
        rm(venv)
        run([sys.executable, "-m", "venv", venv])
        run([py, "-m", "pip", "install", "--quiet", "duckdb"])
    return py


def check_reuse(args, workdir):
    """With --reuse-store, fail early (before generating events) on a store of other data."""
    meta_path = workdir / META_NAME
    if not (args.reuse_store and (workdir / STORE_NAME).is_dir() and meta_path.exists()):
        return
    meta = json.loads(meta_path.read_text())
    if (meta.get("events"), meta.get("seed")) != (args.events, args.seed):
        sys.exit(f"{workdir / STORE_NAME} holds {meta.get('events')} events (seed "
                 f"{meta.get('seed')}), not {args.events} (seed {args.seed}); "
                 f"run without --reuse-store to rebuild it")


def build_store(args, binary, events_path, workdir):
    """Fresh store from the event file (or reuse one); return info about the lake."""
    store = workdir / STORE_NAME
    keyring = workdir / KEYRING_NAME
    meta_path = workdir / META_NAME
    env = {"HOLDFAST_KEYRING": keyring}
    want = {"events": args.events, "seed": args.seed, "input_file": str(events_path)}

    if args.reuse_store and store.is_dir():
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
        if meta is None:
            log(f"WARNING: reusing {store} without {meta_path.name}; "
                f"cannot tell which event file it holds")
        elif any(meta.get(k) != v for k, v in want.items()):
            sys.exit(f"{store} was built from {meta.get('input_file')} "
                     f"({meta.get('events')} events), not {events_path}; "
                     f"run without --reuse-store to rebuild it")
        log(f"reusing {store}")
        record(f"# {store} reused (--reuse-store), not rebuilt: no init / ingest / batch run")
        report = (meta or {}).get("batch_report")
        reused = True
    else:
        log(f"building {store} from {events_path}")
        rm(store)
        rm(keyring)
        rm(meta_path)
        t0 = time.perf_counter()
        run([binary, "init", "--store", store], env=env)
        run([binary, "ingest", "--store", store, events_path], env=env)
        out = run([binary, "batch", "--store", store, "--format", "json"], env=env).stdout
        build_s = time.perf_counter() - t0
        report = json.loads(out)
        if isinstance(report, list):  # tolerate a one-element JSON array
            report = report[0]
        report = {k: report.get(k) for k in
                  ("stored", "duplicates_in_batch", "already_stored", "quarantined",
                   "files", "bytes_written")}
        meta_path.write_text(json.dumps({**want, "binary": str(binary), "build_s": build_s,
                                         "built": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime()),
                                         "batch_report": report}, indent=2) + "\n")
        reused = False

    lake_bytes, lake_files = dir_bytes(store / "lake")
    if lake_files == 0:
        sys.exit(f"{store}/lake holds no files")
    return {"store": str(store), "keyring": str(keyring), "reused": reused,
            "lake_bytes": lake_bytes, "lake_files": lake_files, "batch_report": report}, env


def pick_one(binary, store, env, sql, what):
    rows = csv_rows(run([binary, "query", "--store", store, "--format", "csv", sql],
                        env=env).stdout)
    if len(rows) < 2 or not rows[1] or not rows[1][0]:
        sys.exit(f"could not pick {what}: query returned no row: {sql}")
    return rows[1][0]


# --------------------------------------------------------------------------- queries

def parquet_source(store):
    glob = f"{store}/lake/**/*.parquet"
    return (f"read_parquet({sql_str(glob)}, hive_partitioning = true, hive_types = "
            "{'year': INTEGER, 'month': INTEGER, 'day': INTEGER, "
            "'interaction_type': VARCHAR})")


def duckdb_script(sql):
    """One-line Python program: connect in memory, run sql, print CSV with a header."""
    if sql is None:  # start-up baseline: interpreter + import + connect, no query
        return "import duckdb; con = duckdb.connect()"
    return ("import csv, sys, duckdb; con = duckdb.connect(); "
            "con.execute(\"SET TimeZone = 'UTC'\"); "
            f"cur = con.execute({sql!r}); "
            "w = csv.writer(sys.stdout, lineterminator='\\n'); "
            "w.writerow([d[0] for d in cur.description]); "
            "w.writerows(cur.fetchall())")


def build_queries(binary, store, py, env, interaction_id, agent):
    """[(name, description, holdfast (argv, cwd), duckdb argv or None)]."""
    src = parquet_source(store)
    point_cols = "event_id, interaction_id, state, occurred_at, interaction_type, queue_id"
    point_hf = f"SELECT {point_cols} FROM events WHERE interaction_id = {sql_str(interaction_id)}"
    point_dk = f"SELECT {point_cols} FROM {src} WHERE interaction_id = {sql_str(interaction_id)}"

    agent_dk = ("SELECT tenant_id, interaction_id, event_id, state, occurred_at, "
                "interaction_type, queue_id, disposition "
                f"FROM {src} WHERE list_contains(agent_ids, {sql_str(agent)}) "
                f"AND occurred_at >= TIMESTAMPTZ {sql_str(WINDOW_FROM_TS)} "
                f"AND occurred_at < TIMESTAMPTZ {sql_str(WINDOW_TO_TS)} "
                f"AND year*10000+month*100+day BETWEEN {WINDOW_DAYS[0]} AND {WINDOW_DAYS[1]} "
                "ORDER BY occurred_at, event_id")

    daily = ("SELECT year, month, day, interaction_type, count(*) AS n FROM {} "
             "GROUP BY 1,2,3,4 ORDER BY 1,2,3,4")

    hf = [binary, "query", "--store", store, "--format", "csv"]
    queries = [
        ("point", f"point lookup (interaction_id = {interaction_id})",
         (hf + [point_hf], None), point_dk),
        ("agent_7d", f"agent {agent}, 7 days ({BY_AGENT_FILE})",
         (hf + ["--file", BY_AGENT_FILE, "--param", f"agent={agent}",
                "--param", f"from={WINDOW_FROM}", "--param", f"to={WINDOW_TO}"], REPO),
         agent_dk),
        ("daily_counts", "daily counts per interaction_type",
         (hf + [daily.format("events")], None), daily.format(src)),
    ]
    return [(name, desc, hf_cmd,
             [py, "-c", duckdb_script(dk_sql)] if py else None)
            for name, desc, hf_cmd, dk_sql in queries]


def summarize(walls):
    return {"min_s": min(walls), "median_s": statistics.median(walls), "runs_s": walls}


def measure(queries, baselines, runs, env):
    """Every command `runs` times, holdfast and DuckDB alternating."""
    results = {}
    for name, cmds in baselines:
        log(f"baseline {name}: {runs} runs")
        walls = [timed_run(cmds)[0] for _ in range(runs)]
        results[name] = summarize(walls)

    for name, desc, (hf_argv, hf_cwd), dk_argv in queries:
        log(f"{name}: {runs} runs each")
        hf_walls, dk_walls = [], []
        hf_rows = dk_rows = None
        for _ in range(runs):
            wall, out = timed_run(hf_argv, env=env, cwd=hf_cwd)
            hf_walls.append(wall)
            n = data_rows(out)
            if hf_rows is not None and n != hf_rows:
                log(f"WARNING: {name}: holdfast returned {n} rows, earlier run {hf_rows}")
            hf_rows = n
            if dk_argv:
                wall, out = timed_run(dk_argv)
                dk_walls.append(wall)
                n = data_rows(out)
                if dk_rows is not None and n != dk_rows:
                    log(f"WARNING: {name}: duckdb returned {n} rows, earlier run {dk_rows}")
                dk_rows = n
        hf = {**summarize(hf_walls), "rows": hf_rows,
              "command": fmt_cmd(hf_argv, env, hf_cwd)}
        dk = ({**summarize(dk_walls), "rows": dk_rows, "command": fmt_cmd(dk_argv)}
              if dk_argv else None)
        results[name] = {
            "description": desc, "holdfast": hf, "duckdb": dk,
            "ratio_median_holdfast_over_duckdb":
                hf["median_s"] / dk["median_s"] if dk and dk["median_s"] else None,
            "rows_match": None if dk is None else hf_rows == dk_rows,
        }
    return results


# --------------------------------------------------------------------------- output

def secs(v):
    return "-" if v is None else f"{v:.3f}"


def print_table(results, query_names, baseline_names, title):
    print(f"\n== {title} ==")
    w = 14
    print(f"{'query':<{w}} {'holdfast min / median s':>24} {'duckdb min / median s':>24} "
          f"{'ratio':>7} {'rows':>16}")
    for name in query_names:
        r = results[name]
        hf, dk = r["holdfast"], r["duckdb"]
        hf_s = f"{secs(hf['min_s'])} / {secs(hf['median_s'])}"
        dk_s = f"{secs(dk['min_s'])} / {secs(dk['median_s'])}" if dk else "-"
        ratio = r["ratio_median_holdfast_over_duckdb"]
        ratio_s = f"{ratio:.2f}x" if ratio else "-"
        rows = (f"{hf['rows']:,}" if dk is None or r["rows_match"]
                else f"{hf['rows']:,} != {dk['rows']:,}")
        print(f"{name:<{w}} {hf_s:>24} {dk_s:>24} {ratio_s:>7} {rows:>16}")

    hf_base = results.get("holdfast_noop")
    dk_base = results.get("duckdb_noop")
    hf_b = f"{secs(hf_base['min_s'])} / {secs(hf_base['median_s'])}" if hf_base else "-"
    dk_b = f"{secs(dk_base['min_s'])} / {secs(dk_base['median_s'])}" if dk_base else "-"
    print(f"{'start-up only':<{w}} {hf_b:>24} {dk_b:>24}")
    print("  (start-up only: holdfast = `holdfast --version`; "
          "duckdb = python + import duckdb + connect, no query)")

    print(f"\nmedian minus start-up median (s):")
    print(f"{'query':<{w}} {'holdfast':>10} {'duckdb':>10}")
    for name in query_names:
        r = results[name]
        hf_net = r["holdfast"]["median_s"] - hf_base["median_s"]
        dk_net = (r["duckdb"]["median_s"] - dk_base["median_s"]
                  if r["duckdb"] and dk_base else None)
        print(f"{name:<{w}} {hf_net:>10.3f} {secs(dk_net):>10}")

    for name in query_names:
        r = results[name]
        if r["rows_match"] is False:
            print(f"WARNING: {name}: row counts differ: holdfast {r['holdfast']['rows']}, "
                  f"duckdb {r['duckdb']['rows']}")


# --------------------------------------------------------------------------- main

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="input lines (default 1000000)")
    ap.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    ap.add_argument("--runs", type=int, default=5,
                    help="runs per query and tool (default 5); min and median are reported")
    ap.add_argument("--reuse-store", action="store_true",
                    help=f"keep <workdir>/{STORE_NAME} if it exists (built from the same file)")
    ap.add_argument("--skip-duckdb", action="store_true", help="measure holdfast only")
    ap.add_argument("--binary", type=Path,
                    help=f"holdfast binary (default {DEFAULT_BINARY}; never built here)")
    ap.add_argument("--workdir", type=Path, default=REPO / "bench-out",
                    help="scratch dir (default <repo>/bench-out)")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "bench",
                    help="dir with gen_events.py (default <repo>/../shared/bench)")
    args = ap.parse_args()
    if args.events <= 0 or args.runs <= 0:
        ap.error("--events and --runs must be positive")
    args.workdir = args.workdir.resolve()
    args.shared = args.shared.resolve()
    return args


def main():
    args = parse_args()
    if not (args.shared / "gen_events.py").exists():
        sys.exit(f"{args.shared / 'gen_events.py'} not found (use --shared DIR)")
    if not (REPO / BY_AGENT_FILE).exists():
        sys.exit(f"{REPO / BY_AGENT_FILE} not found")
    args.workdir.mkdir(parents=True, exist_ok=True)

    binary = holdfast_binary(args)
    check_reuse(args, args.workdir)
    events_path, lines = generate_events(args, args.workdir)
    py = None if args.skip_duckdb else duckdb_python(args.workdir)
    lake, env = build_store(args, binary, events_path, args.workdir)
    store = Path(lake["store"])

    log("picking query arguments")
    interaction_id = pick_one(binary, store, env, PICK_INTERACTION_SQL, "an interaction id")
    agent = pick_one(binary, store, env, PICK_AGENT_SQL, "an agent")

    queries = build_queries(binary, store, py, env, interaction_id, agent)
    baselines = [("holdfast_noop", [binary, "--version"])]
    if py:
        baselines.append(("duckdb_noop", [py, "-c", duckdb_script(None)]))
    results = measure(queries, baselines, args.runs, env)
    query_names = [q[0] for q in queries]

    dk_version = describe([py, "-c", "import duckdb; print(duckdb.__version__)"]) if py else None
    env_info = {
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "holdfast_binary": str(binary), "holdfast_version": describe([binary, "--version"]),
        "git": describe(["git", "rev-parse", "--short", "HEAD"])
               + (" (dirty)" if describe(["git", "status", "--porcelain"], "") else ""),
        "duckdb_python": str(py) if py else None, "duckdb_version": dk_version,
    }
    print(f"\nholdfast: {env_info['holdfast_version']} ({binary}), git {env_info['git']}")
    if "/debug/" in str(binary):
        print("WARNING: this is a DEBUG build; numbers are not representative")
    if py:
        print(f"duckdb: {dk_version} ({py})")
    print(f"host: {env_info['host']}, {env_info['cpus']} CPUs")
    print(f"lake: {store}/lake, {lake['lake_files']:,} files, {lake['lake_bytes'] / 1e6:,.2f} MB"
          f"{' (reused)' if lake['reused'] else ''}; built from {events_path.name} "
          f"({lines:,} lines); batch: {json.dumps(lake['batch_report'])}")
    print(f"arguments: interaction_id={interaction_id}  agent={agent}  "
          f"window=[{WINDOW_FROM}, {WINDOW_TO})")

    print_table(results, query_names, [b[0] for b in baselines],
                f"cold-process latency, {args.runs} runs each, ratio = holdfast median / "
                f"duckdb median")

    print("\ncommands run:")
    for c in COMMANDS:
        print("  " + c)

    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"events": args.events, "seed": args.seed, "days": DAYS, "dup_rate": DUP_RATE,
                   "runs": args.runs, "input_file": str(events_path), "input_lines": lines,
                   "reuse_store": args.reuse_store},
        "env": env_info,
        "lake": lake,
        "arguments": {"interaction_id": interaction_id, "agent": agent,
                      "from": WINDOW_FROM, "to": WINDOW_TO,
                      "pick_interaction_sql": PICK_INTERACTION_SQL,
                      "pick_agent_sql": PICK_AGENT_SQL},
        "results": results,
        "commands": COMMANDS,
    }
    out = args.workdir / f"discovery-{args.events}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
