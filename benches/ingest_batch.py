#!/usr/bin/env python3
"""Benchmark: holdfast ingest + batch vs. DuckDB on the same NDJSON event file.

One run = one command, e.g.

    python3 benches/ingest_batch.py --events 1000000
    python3 benches/ingest_batch.py --backfill      # 200,000 events over 1,100 days

Steps:
  1. Generate N events with ../shared/bench/gen_events.py (30 days, 3 % re-deliveries,
     seed 42), cached in the workdir as events-<N>-seed<S>.ndjson.  --days and --start
     widen the window (cached as events-<N>-<D>d-<start>-seed<S>.ndjson); --backfill is
     the many-partition case of issue 11: --events 200000 --days 1100 --start
     2023-01-01T00:00:00Z (about 4,400 partitions), cached as backfill-<N>.ndjson.
     --input PATH takes an existing NDJSON file instead.
  2. Build holdfast with `cargo build --release` (CARGO_TARGET_DIR defaults to
     /work/target-release if that directory exists), unless --binary is given.
  3. Outputs of an earlier invocation are removed first, then the script waits --settle
     seconds (70) if there were any: ext4 without a journal checks inodes freed in the last
     minutes one by one when it creates files, and a run right after a mass delete measures
     that scan. Each run then writes a new store (store-<i>, keyring outside it) and DuckDB
     a new duckdb-out-<i>; nothing is deleted between timed runs, and afterwards the last
     run's outputs are kept as store, keyring.json and duckdb-out.
     In the store: `holdfast init`, then `holdfast ingest` and `holdfast batch --format json`, the
     last two each timed under `/usr/bin/time -v` (wall, user, sys, peak RSS).
     Stored bytes = all files under <store>/lake/ + <store>/manifests/.
  4. Run ../shared/bench/run_duckdb.py (--dedup qualify) on the same file under
     `/usr/bin/time -v`, in a venv <workdir>/.venv-duckdb (created and
     `pip install duckdb` if missing).
  5. Print a comparison table and the exact commands, and write
     <workdir>/result-<N>.json (result-backfill-<N>.json for --backfill).

events/s = input lines / wall seconds as measured by /usr/bin/time for both tools, so
process start-up is included for both.  holdfast's wall is ingest + batch (init is not
counted); its peak RSS is the max of the two.  With --runs R > 1 every run is reported
and the table shows the median of each metric.

Standard library only; needs /usr/bin/time (Debian/Ubuntu: `apt-get install -y time`).
"""
import argparse
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

from benchlib import count_lines, dir_bytes, parse_time_v, rm

REPO = Path(__file__).resolve().parent.parent
TIME_BIN = "/usr/bin/time"
DAYS = 30
DUP_RATE = 0.03
# --backfill: a batch over three years of days, one partition per day and interaction type
BACKFILL = {"events": 200_000, "days": 1100, "start": "2023-01-01T00:00:00Z"}
DEFAULT_RELEASE_TARGET = Path("/work/target-release")

COMMANDS = []  # every external command run, in order, as a shell line (deduplicated)


# --------------------------------------------------------------------------- helpers

def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def fmt_cmd(argv, env=None):
    """Shell-quoted command line, with the extra environment variables in front."""
    prefix = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in (env or {}).items())
    line = shlex.join(str(a) for a in argv)
    return f"{prefix} {line}" if prefix else line


def run(argv, env=None, cwd=None, capture=True):
    """Run a command (recorded in COMMANDS); exit with its stderr on failure."""
    line = (f"(cd {shlex.quote(str(cwd))} && {fmt_cmd(argv, env)})" if cwd
            else fmt_cmd(argv, env))
    if line not in COMMANDS:
        COMMANDS.append(line)
    full_env = {**os.environ, **(env or {})}
    res = subprocess.run([str(a) for a in argv], env=full_env, cwd=cwd,
                         capture_output=capture, text=True)
    if res.returncode != 0:
        if capture:
            sys.stderr.write(res.stdout or "")
            sys.stderr.write(res.stderr or "")
        sys.exit(f"command failed (exit {res.returncode}): {fmt_cmd(argv, env)}")
    return res


def timed(argv, workdir, label, env=None):
    """Run argv under `/usr/bin/time -v -o <file>`; return (stats dict, stdout)."""
    time_file = workdir / f"time-{label}.txt"
    res = run([TIME_BIN, "-v", "-o", time_file, *argv], env=env)
    stats = parse_time_v(time_file.read_text())
    stats["cpu_s"] = stats["user_s"] + stats["sys_s"]
    stats["max_rss_MB"] = stats["max_rss_kb"] * 1024 / 1e6  # time reports KiB; MB = 1e6 B
    return stats, res.stdout






def last_json_line(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    sys.exit(f"no JSON line in output:\n{text}")




# --------------------------------------------------------------------------- setup

def check_time_bin():
    if not os.access(TIME_BIN, os.X_OK):
        sys.exit(f"{TIME_BIN} is missing (GNU time is needed for peak RSS).\n"
                 f"Fix: apt-get update && apt-get install -y time")


def events_file_name(args):
    """Cache name of the generated file: the issue's names for the 30-day and backfill cases."""
    if args.days == DAYS and args.start is None:
        return f"events-{args.events}-seed{args.seed}.ndjson"
    if args.backfill and args.seed == 42:
        return f"backfill-{args.events}.ndjson"
    start = (args.start or "default").replace(":", "").replace("-", "")
    return f"events-{args.events}-{args.days}d-{start}-seed{args.seed}.ndjson"


def generate_events(args, workdir):
    """Generate (or reuse) the event file; return (path, line count, bytes).

    The file is cached by name; a cached file with the wrong line count (e.g. an
    interrupted earlier run) is regenerated.  --input skips generation.
    """
    if args.input:
        out = args.input
        lines = count_lines(out)
        log(f"using {out} ({lines} lines)")
        return out, lines, out.stat().st_size
    out = workdir / events_file_name(args)
    argv = [sys.executable, args.shared / "gen_events.py", "--events", args.events,
            "--days", args.days, "--dup-rate", DUP_RATE, "--seed", args.seed, "--out", out]
    if args.start is not None:
        argv[-2:-2] = ["--start", args.start]
    if out.exists() and count_lines(out) == args.events:
        log(f"reusing {out}")
        COMMANDS.append(fmt_cmd(argv) + "   # cached from an earlier run, not rerun now")
    else:
        log(f"generating {args.events} events -> {out}")
        run(argv)
    lines = count_lines(out)
    if lines != args.events:
        sys.exit(f"{out} has {lines} lines, expected {args.events}")
    return out, lines, out.stat().st_size


def build_holdfast(args):
    """Return the holdfast binary path, building it in release mode unless --binary."""
    if args.binary:
        binary = args.binary.resolve()
        if not os.access(binary, os.X_OK):
            sys.exit(f"--binary {binary} is not an executable file")
        return binary
    target = os.environ.get("CARGO_TARGET_DIR")
    if not target:
        target = str(DEFAULT_RELEASE_TARGET) if DEFAULT_RELEASE_TARGET.is_dir() else str(REPO / "target")
    log(f"cargo build --release (CARGO_TARGET_DIR={target})")
    run(["cargo", "build", "--release"], env={"CARGO_TARGET_DIR": target}, cwd=REPO, capture=False)
    return Path(target) / "release" / "holdfast"


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


def describe(cmd, default="?"):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO).stdout.strip() or default
    except OSError:
        return default


# --------------------------------------------------------------------------- runs

def run_holdfast(binary, events_path, workdir, i):
    """Fresh store (store-<i>): init, timed ingest, timed batch; return the measurements."""
    store = workdir / f"store-{i}"
    keyring = workdir / f"keyring-{i}.json"
    env = {"HOLDFAST_KEYRING": keyring}
    run([binary, "init", "--store", store], env=env)
    ingest, _ = timed([binary, "ingest", "--store", store, events_path], workdir, "ingest", env)
    # a batch consumes at most `batch.max_input_mb` of landing (4 GiB by default); a scheduler
    # runs the next one for the rest: batches until nothing waits, times summed, RSS the max
    batch, report, batches = None, {}, 0
    while True:
        b, out = timed([binary, "batch", "--store", store, "--format", "json"], workdir, "batch",
                       env)
        r = json.loads(out)
        if isinstance(r, list):  # tolerate a one-element JSON array
            r = r[0]
        batches += 1
        batch = b if batch is None else {
            **batch, **{k: batch[k] + b[k] for k in ("wall_s", "user_s", "sys_s", "cpu_s")},
            "max_rss_MB": max(batch["max_rss_MB"], b["max_rss_MB"])}
        for k, v in r.items():
            report[k] = report.get(k, 0) + v if isinstance(v, int) and k in report else v
        if not r.get("segments_waiting"):
            break
    batch["batches"] = batches
    lake_bytes, lake_files = dir_bytes(store / "lake")
    man_bytes, man_files = dir_bytes(store / "manifests")
    return {
        "ingest": ingest,
        "batch": batch,
        "wall_s": ingest["wall_s"] + batch["wall_s"],
        "cpu_s": ingest["cpu_s"] + batch["cpu_s"],
        "max_rss_MB": max(ingest["max_rss_MB"], batch["max_rss_MB"]),
        "stored_events": report.get("stored"),
        "lake_bytes": lake_bytes, "lake_files": lake_files,
        "manifests_bytes": man_bytes, "manifests_files": man_files,
        "stored_bytes": lake_bytes + man_bytes,
        "batch_report": {k: report.get(k) for k in
                         ("stored", "duplicates_in_batch", "already_stored", "quarantined",
                          "files", "partitions", "bytes_written")},
    }


def run_duckdb(py, shared, events_path, lines, workdir, i):
    out_dir = workdir / f"duckdb-out-{i}"
    stats, out = timed([py, shared / "run_duckdb.py", "--input", events_path, "--out", out_dir,
                        "--dedup", "qualify", "--lines", lines], workdir, "duckdb")
    report = last_json_line(out)
    stored_bytes, files = dir_bytes(out_dir)
    return {
        **stats,
        "version": report.get("engine", "duckdb ?").split(" ", 1)[-1],
        "stored_events": report.get("rows_out"),
        "stored_bytes": stored_bytes, "stored_files": files,
        "copy_seconds": report.get("copy_seconds"),
        "own_events_per_s": report.get("events_per_s"),
        "report": report,
    }


OUTPUTS = ("store", "keyring.json", "duckdb-out")


def settle_after_cleanup(workdir, settle):
    """Removes the outputs of earlier invocations, then waits `settle` seconds if it removed
    any. ext4 without a journal (this project's machine) skips inodes freed in the last 60 s
    (6 min while their table block is dirty) when it allocates new ones, checking each: a run
    that starts right after tens of thousands of files were deleted spends most of its time
    in that scan (perf: find_inode_bit, recently_deleted), holdfast more than DuckDB because it
    creates three times the files (data files, manifests, lock records) and folders."""
    old = [p for p in workdir.iterdir()
           if p.name in OUTPUTS or re.fullmatch(r"(store|keyring|duckdb-out)-\d+(\.json)?", p.name)]
    for p in old:
        rm(p)
    if old and settle > 0:
        os.sync()
        log(f"removed {len(old)} outputs of an earlier run; waiting {settle} s for ext4 to reuse their inodes")
        time.sleep(settle)


def keep_last_outputs(workdir, runs):
    """Each run writes its own outputs, none deleted between timed runs; afterwards the last
    run's are kept under the plain names (store, keyring.json, duckdb-out) for the scripts that
    read them, the others removed."""
    for i in range(1, runs + 1):
        for name, numbered in (("store", f"store-{i}"), ("keyring.json", f"keyring-{i}.json"),
                               ("duckdb-out", f"duckdb-out-{i}")):
            p = workdir / numbered
            if not p.exists():
                continue
            if i == runs:
                p.rename(workdir / name)
            else:
                rm(p)


def derive(m, lines, in_bytes):
    """Add the rate / size metrics shared by both tools."""
    m["events_per_s"] = lines / m["wall_s"] if m["wall_s"] else float("nan")
    m["input_MB_per_s"] = in_bytes / 1e6 / m["wall_s"] if m["wall_s"] else float("nan")
    m["stored_MB"] = m["stored_bytes"] / 1e6
    se = m.get("stored_events")
    m["stored_bytes_per_event"] = m["stored_bytes"] / se if se else float("nan")
    return m


def median_of(runs):
    """Median of every numeric leaf over a list of (nested) result dicts."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: median_of([r[k] for r in runs]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(runs)
    return first


# --------------------------------------------------------------------------- output

def num(v, digits):
    """Thousands-separated number, '-' for None / NaN."""
    if v is None or v != v:
        return "-"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    """a/b as '1.23x', '-' when either side is missing, zero or NaN."""
    return f"{a / b:.2f}x" if a and b and a == a and b == b else "-"


def print_table(hf, dk, lines, in_bytes, title):
    print(f"\n== {title}: {lines:,} input lines, {in_bytes / 1e6:,.1f} MB ==")
    rows = [
        ("events/s (wall, /usr/bin/time)", "events_per_s", 0),
        ("input MB/s (wall)", "input_MB_per_s", 1),
        ("wall s", "wall_s", 2),
        ("CPU s (user+sys)", "cpu_s", 2),
        ("peak RSS MB", "max_rss_MB", 1),
        ("stored events", "stored_events", 0),
        ("stored MB", "stored_MB", 2),
        ("stored bytes / stored event", "stored_bytes_per_event", 0),
    ]
    w = 32
    print(f"{'metric':<{w}} {'holdfast':>14} {'duckdb':>14} {'holdfast/duckdb':>16}")
    for label, key, digits in rows:
        a = hf[key]
        b = dk[key] if dk else None
        print(f"{label:<{w}} {num(a, digits):>14} {num(b, digits):>14} {ratio(a, b):>16}")
    if dk:
        print(f"{'events/s (duckdb copy_seconds)':<{w}} {'-':>14} "
              f"{num(dk['own_events_per_s'], 0):>14} {'':>16}"
              f"  (COPY only: {dk['copy_seconds']:.3f} s)")

    print(f"\n{'holdfast stage':<16} {'wall s':>9} {'peak RSS MB':>12} {'user s':>9} "
          f"{'sys s':>9} {'user+sys s':>11}")
    for stage in ("ingest", "batch"):
        s = hf[stage]
        label = f"batch x{s['batches']}" if s.get("batches", 1) > 1 else stage
        print(f"{label:<16} {s['wall_s']:>9.2f} {s['max_rss_MB']:>12.1f} {s['user_s']:>9.2f} "
              f"{s['sys_s']:>9.2f} {s['cpu_s']:>11.2f}")

    print(f"\nholdfast stored: lake {hf['lake_bytes']:,.0f} B ({hf['lake_files']:.0f} files) + "
          f"manifests {hf['manifests_bytes']:,.0f} B ({hf['manifests_files']:.0f} files) = "
          f"{hf['stored_bytes']:,.0f} B")
    print("holdfast batch report: " + json.dumps(hf["batch_report"]))
    if dk:
        print(f"duckdb stored: {dk['stored_bytes']:,.0f} B in {dk['stored_files']:.0f} files "
              f"(duckdb {dk['version']}, rows_out {dk['stored_events']})")


def print_run_lines(runs):
    print("\nper run:")
    print(f"{'run':>4} {'hf wall s':>10} {'hf RSS MB':>10} {'hf ev/s':>10} "
          f"{'dk wall s':>10} {'dk RSS MB':>10} {'dk ev/s':>10}")
    for i, r in enumerate(runs, 1):
        hf, dk = r["holdfast"], r["duckdb"]
        dk_cols = (f"{dk['wall_s']:>10.2f} {dk['max_rss_MB']:>10.1f} {dk['events_per_s']:>10,.0f}"
                   if dk else f"{'-':>10} {'-':>10} {'-':>10}")
        print(f"{i:>4} {hf['wall_s']:>10.2f} {hf['max_rss_MB']:>10.1f} "
              f"{hf['events_per_s']:>10,.0f} {dk_cols}")


# --------------------------------------------------------------------------- main

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=None,
                    help="input lines (default 1000000; 200000 with --backfill)")
    ap.add_argument("--days", type=int, default=None,
                    help=f"days the events span (default {DAYS}; {BACKFILL['days']} with --backfill)")
    ap.add_argument("--start", default=None,
                    help="start of the time window, e.g. 2023-01-01T00:00:00Z (default: the "
                         f"generator's; {BACKFILL['start']} with --backfill)")
    ap.add_argument("--backfill", action="store_true",
                    help="the many-partition case: --events 200000 --days 1100 --start "
                         "2023-01-01T00:00:00Z unless given")
    ap.add_argument("--input", type=Path,
                    help="an existing NDJSON event file (no generation; --events etc. unused)")
    ap.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    ap.add_argument("--runs", type=int, default=1, help="repeat R times, report each + median")
    ap.add_argument("--skip-duckdb", action="store_true", help="measure holdfast only")
    ap.add_argument("--settle", type=int, default=70,
                    help="seconds to wait after removing earlier outputs (default 70; 0: none)")
    ap.add_argument("--binary", type=Path, help="holdfast binary to use (skips cargo build)")
    ap.add_argument("--workdir", type=Path, default=REPO / "bench-out",
                    help="scratch dir (default <repo>/bench-out)")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "bench",
                    help="dir with gen_events.py and run_duckdb.py (default <repo>/../shared/bench)")
    args = ap.parse_args()
    preset = BACKFILL if args.backfill else {"events": 1_000_000, "days": DAYS, "start": None}
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.input:
        args.input = args.input.resolve()
    if args.events <= 0 or args.runs <= 0 or args.days <= 0:
        ap.error("--events and --runs must be positive")
    args.workdir = args.workdir.resolve()
    args.shared = args.shared.resolve()
    return args


def main():
    args = parse_args()
    check_time_bin()
    for script in ("gen_events.py", "run_duckdb.py"):
        if not (args.shared / script).exists():
            sys.exit(f"{args.shared / script} not found (use --shared DIR)")
    args.workdir.mkdir(parents=True, exist_ok=True)

    events_path, lines, in_bytes = generate_events(args, args.workdir)
    binary = build_holdfast(args)
    py = None if args.skip_duckdb else duckdb_python(args.workdir)

    settle_after_cleanup(args.workdir, args.settle)
    runs = []
    for i in range(1, args.runs + 1):
        log(f"run {i}/{args.runs}: holdfast")
        hf = derive(run_holdfast(binary, events_path, args.workdir, i), lines, in_bytes)
        dk = None
        if py:
            log(f"run {i}/{args.runs}: duckdb")
            dk = derive(run_duckdb(py, args.shared, events_path, lines, args.workdir, i),
                        lines, in_bytes)
        runs.append({"holdfast": hf, "duckdb": dk})
    keep_last_outputs(args.workdir, args.runs)

    hf_sum = median_of([r["holdfast"] for r in runs])
    dk_sum = median_of([r["duckdb"] for r in runs]) if py else None

    env_info = {
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "holdfast_binary": str(binary), "holdfast_version": describe([binary, "--version"]),
        "git": describe(["git", "rev-parse", "--short", "HEAD"])
               + (" (dirty)" if describe(["git", "status", "--porcelain"], "") else ""),
        "duckdb_version": dk_sum["version"] if dk_sum else None,
    }
    print(f"\nholdfast: {env_info['holdfast_version']} ({binary}), git {env_info['git']}")
    if "/debug/" in str(binary):
        print("WARNING: this is a DEBUG build; numbers are not representative")
    if dk_sum:
        print(f"duckdb: {dk_sum['version']}")
    print(f"host: {env_info['host']}, {env_info['cpus']} CPUs")

    if args.runs > 1:
        print_run_lines(runs)
    title = f"median of {args.runs} runs" if args.runs > 1 else "result"
    case = "input " + str(events_path) if args.input else (
        f"{args.days} days from {args.start or 'the generator default'}"
        + (" (--backfill)" if args.backfill else ""))
    title += f", {case}"
    print_table(hf_sum, dk_sum, lines, in_bytes, title)

    print("\ncommands run:")
    for c in COMMANDS:
        print("  " + c)

    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"events": lines, "seed": args.seed, "days": args.days, "start": args.start,
                   "backfill": args.backfill, "dup_rate": DUP_RATE,
                   "runs": args.runs, "input_file": str(events_path), "input_lines": lines,
                   "input_bytes": in_bytes},
        "env": env_info,
        "median": {"holdfast": hf_sum, "duckdb": dk_sum},
        "ratios_holdfast_over_duckdb": None if not dk_sum else {
            "events_per_s": hf_sum["events_per_s"] / dk_sum["events_per_s"],
            "peak_rss": hf_sum["max_rss_MB"] / dk_sum["max_rss_MB"],
            "stored_bytes": hf_sum["stored_bytes"] / dk_sum["stored_bytes"],
        },
        "runs": runs,
        "commands": COMMANDS,
    }
    kind = "backfill-" if args.backfill else ""
    out = args.workdir / f"result-{kind}{lines}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
