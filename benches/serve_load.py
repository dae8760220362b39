#!/usr/bin/env python3
"""Benchmark: `holdfast serve` under load, against a do-nothing server on the same HTTP stack.

One command (after a release build of the binary and the two examples):

    CARGO_TARGET_DIR=/work/target-release cargo build --release --bin holdfast --example load --example null_server
    python3 benches/serve_load.py

For each mode (single events at concurrency 64; 100-event NDJSON bodies at concurrency 8; single
events of one tenant only at concurrency 64), and
each of --runs rounds, alternating which goes first: `examples/load` drives a fresh
`holdfast serve` (new store, local keyring, batches every 10 s meanwhile) for --seconds, then
the same against `examples/null_server`, which reads each body and answers 202 keeping
nothing. holdfast runs under /usr/bin/time -v (CPU, peak RSS). After each holdfast run the
server batches what is left; then every acknowledged event id is looked up in the lake
(missing ones fail the run). Prints medians, holdfast's request rate as a ratio to the
do-nothing server's, and the commands; writes <workdir>/serve-load.json.

With --durable-floor the single-event modes also run examples/null_server each round with a
durable acknowledgement, twice: answering once the body is appended to one file and
fdatasynced (--append), and once it is in a new file per group, fsynced, with its folder
fsynced (--objects).
Neither parses, checks a token or encrypts: they bound what a server that acknowledges only
durable events can reach on this machine and stack, and a second table gives holdfast's rate
as a ratio to each.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def start(argv, env, stderr):
    p = subprocess.Popen([str(a) for a in argv], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        p.kill()
        sys.exit(f"{argv[0]} said {line!r}")
    return p, line.split("listening on ", 1)[1].strip()


def metric(base, name):
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def time_stats(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("Maximum resident set size"):
            out["rss_mb"] = int(line.rsplit(" ", 1)[1]) / 1024
        elif line.startswith("User time"):
            out["user_s"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("System time"):
            out["sys_s"] = float(line.rsplit(" ", 1)[1])
    out["cpu_s"] = out.get("user_s", 0) + out.get("sys_s", 0)
    return out


def holdfast_run(a, bins, work, tokens_map, mode, i, commands):
    run_dir = work / f"run-{mode['name']}-{i}"
    run_dir.mkdir(parents=True)
    env = dict(os.environ, HOLDFAST_KEYRING=str(run_dir / "keys" / "keyring.json"))
    pipeline = run_dir / "serve.toml"
    pipeline.write_text(
        f'[store]\npath = "{run_dir / "store"}"\n[serve]\nlisten = "127.0.0.1:0"\n'
        f'tokens = "{work / "tokens.toml"}"\nbatch_every_secs = 10\n'
    )
    timing = run_dir / "time.txt"
    argv = ["/usr/bin/time", "-v", "-o", timing, bins["holdfast"], "serve", "--pipeline", pipeline]
    commands.append(" ".join(map(str, argv)))
    server, base = start(argv, env, open(run_dir / "serve.log", "w"))
    acked = run_dir / "acked.txt"
    load = [bins["load"], "--url", base, "--tokens", tokens_map, "--input", mode["input"],
            "--concurrency", mode["concurrency"], "--batch", mode["batch"],
            "--seconds", a.seconds, "--acked", acked]
    commands.append(" ".join(map(str, load)))
    result = json.loads(subprocess.run([str(x) for x in load], check=True, capture_output=True, text=True).stdout)
    # let the schedule take what is left in landing
    t0 = time.time()
    while time.time() - t0 < 120:
        if metric(base, "holdfast_landing_backlog_segments") == 0:
            break
        time.sleep(0.5)
    result["catch_up_s"] = time.time() - t0
    # SIGTERM to holdfast itself (the child of /usr/bin/time), so that time reports on it
    children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
    for c in children:
        os.kill(int(c), signal.SIGTERM)
    server.wait()
    result.update(time_stats(timing))
    # a batch after the server stopped takes whatever it left in landing (there should be
    # nothing: the schedule caught up above)
    left = json.loads(subprocess.run([str(bins["holdfast"]), "batch", "--store", str(run_dir / "store"), "--format", "json"],
                                     env=env, check=True, capture_output=True, text=True).stdout)
    result["left_for_a_final_batch"] = left["segments"]
    # every acknowledged id is in the lake
    ids = set(acked.read_text().split())
    out = subprocess.run([str(bins["holdfast"]), "query", "--store", str(run_dir / "store"), "--format", "csv",
                          "SELECT event_id FROM events"], env=env, check=True, capture_output=True, text=True).stdout
    stored = set(out.split()[1:])
    result["acked_unique"] = len(ids)
    result["missing"] = len(ids - stored)
    return result


def null_run(a, bins, tokens_map, mode, commands, argv=None):
    argv = argv or [bins["null"]]
    server, base = start(argv, dict(os.environ), subprocess.DEVNULL)
    load = [bins["load"], "--url", base, "--tokens", tokens_map, "--input", mode["input"],
            "--concurrency", mode["concurrency"], "--batch", mode["batch"], "--seconds", a.seconds]
    commands.append(" ".join(map(str, argv)) + " & " + " ".join(map(str, load)))
    result = json.loads(subprocess.run([str(x) for x in load], check=True, capture_output=True, text=True).stdout)
    server.kill()
    server.wait()
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1000000)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--target", default=os.environ.get("CARGO_TARGET_DIR", "/work/target-release"))
    p.add_argument("--bin-dir", help="where holdfast and examples/ are (default: TARGET/release)")
    p.add_argument("--workdir", default=str(REPO / "bench-out" / "serve"))
    p.add_argument("--settle", type=int, default=70,
                   help="seconds to wait after removing an earlier invocation's stores (ext4 without a "
                        "journal is slow to allocate inodes for a minute after mass deletes)")
    p.add_argument("--durable-floor", action="store_true",
                   help="also run examples/null_server in each round with durable answers, twice: once "
                        "the body is appended to one file and fdatasynced (nothing else: the most any "
                        "durable server can reach here), and once it is in a new fsynced file per "
                        "group with its folder fsynced (the least a store of create-only objects costs)")
    a = p.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    # stores are kept until the next invocation: deleting one right before a run slows the run
    old = sorted(work.glob("run-*")) + sorted(work.glob("durable-*"))
    for d in old:
        subprocess.run(["rm", "-rf", str(d)], check=True)
    if old and a.settle > 0:
        print(f"removed {len(old)} stores of an earlier run; waiting {a.settle} s", file=sys.stderr)
        time.sleep(a.settle)
    target = Path(a.bin_dir) if a.bin_dir else Path(a.target) / "release"
    bins = {"holdfast": target / "holdfast", "load": target / "examples" / "load", "null": target / "examples" / "null_server"}
    for b in bins.values():
        if not b.exists():
            sys.exit(f"{b} missing: CARGO_TARGET_DIR={a.target} cargo build --release --bin holdfast --example load --example null_server")
    events = work / f"events-{a.events}.ndjson"
    if not events.exists():
        gen = REPO.parent / "shared" / "bench" / "gen_events.py"
        subprocess.run([sys.executable, str(gen), "--events", str(a.events), "--days", "30", "--seed", "42",
                        "--out", str(events)], check=True, capture_output=True)
    tenants = sorted({json.loads(l)["tenantId"] for l in events.read_text().splitlines() if l})
    tokens_file, tokens_map = work / "tokens.toml", work / "tokens.json"
    if tokens_file.exists():
        tokens_file.unlink()
    mapping = {}
    for t in tenants:
        out = subprocess.run([str(bins["holdfast"]), "token", "add", "--tokens", str(tokens_file), "--principal",
                              f"load-{t[:8]}", "--tenant", t, "--source", "canonical"],
                             check=True, capture_output=True, text=True).stdout.strip()
        mapping[t] = out
    tokens_map.write_text(json.dumps(mapping))
    # the same single events from one tenant only: a group commit writes one segment per tenant,
    # so this shows what the tenant count costs (the target is on the mixed file)
    one = work / f"events-{a.events}-one-tenant.ndjson"
    if not one.exists():
        with events.open() as src, one.open("w") as dst:
            dst.writelines(l for l in src if l.strip() and json.loads(l)["tenantId"] == tenants[0])
    modes = [{"name": "single", "concurrency": 64, "batch": 1, "input": events},
             {"name": "batch100", "concurrency": 8, "batch": 100, "input": events},
             {"name": "single-one-tenant", "concurrency": 64, "batch": 1, "input": one}]
    commands, results = [], {m["name"]: {"holdfast": [], "null": [], "durable": [], "objects": []} for m in modes}
    for i in range(a.runs):
        for m in modes:
            order = ["holdfast", "null"] if i % 2 == 0 else ["null", "holdfast"]
            if a.durable_floor and m["batch"] == 1:  # the target is on single events
                order[1:1] = ["durable", "objects"]
            for who in order:
                if who == "holdfast":
                    r = holdfast_run(a, bins, work, tokens_map, m, i, commands)
                    if r["missing"]:
                        sys.exit(f"{m['name']} run {i}: {r['missing']} acknowledged events are not in the lake")
                elif who == "durable":
                    append = work / f"durable-{m['name']}-{i}.ndjson"
                    r = null_run(a, bins, tokens_map, m, commands, [bins["null"], "--append", append])
                    append.unlink()  # gigabytes after a run of 100-event bodies
                elif who == "objects":
                    folder = work / f"durable-objects-{m['name']}-{i}"
                    # kept until the next invocation, like the stores: deleting thousands of
                    # files here would slow the next run's file creation (see --settle)
                    r = null_run(a, bins, tokens_map, m, commands, [bins["null"], "--objects", folder])
                else:
                    r = null_run(a, bins, tokens_map, m, commands)
                results[m["name"]][who].append(r)
                print(f"{m['name']} run {i} {who}: {json.dumps(r)}", file=sys.stderr)
        if i == 0:
            first_round = len(commands)
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    print("| mode | holdfast req/s | null req/s | ratio | holdfast events/s | p50 / p99 ms | CPU s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for m in modes:
        h, n = results[m["name"]]["holdfast"], results[m["name"]]["null"]
        ratios = [x["requests_per_s"] / y["requests_per_s"] for x, y in zip(h, n)]
        print(f"| {m['name']} (c={m['concurrency']}, {m['batch']}/request) | {med(h, 'requests_per_s'):,.0f} | "
              f"{med(n, 'requests_per_s'):,.0f} | {statistics.median(ratios):.2f} (runs {min(ratios):.2f}-{max(ratios):.2f}) | "
              f"{med(h, 'events_per_s'):,.0f} | {med(h, 'p50_ms'):.1f} / {med(h, 'p99_ms'):.1f} | "
              f"{med(h, 'cpu_s'):.1f} | {med(h, 'rss_mb'):.0f} |")
    if a.durable_floor:
        print("\n| mode | floor | floor req/s | floor / null | holdfast / floor |")
        print("|---|---|---|---|---|")
        for m in (m for m in modes if m["batch"] == 1):
            for k, what in (("durable", "append + fdatasync"), ("objects", "new file + fsync + folder fsync")):
                h, n, d = (results[m["name"]][x] for x in ("holdfast", "null", k))
                floor = [x["requests_per_s"] / y["requests_per_s"] for x, y in zip(d, n)]
                ours = [x["requests_per_s"] / y["requests_per_s"] for x, y in zip(h, d)]
                print(f"| {m['name']} | {what} | {med(d, 'requests_per_s'):,.0f} | {statistics.median(floor):.2f} "
                      f"(runs {min(floor):.2f}-{max(floor):.2f}) | {statistics.median(ours):.2f} |")
    (work / "serve-load.json").write_text(json.dumps(results, indent=1))
    print("\nevery acknowledged event was found in the lake after each holdfast run")
    print("commands (one round):")
    for c in commands[:first_round]:
        print("  " + c)


if __name__ == "__main__":
    main()
