"""Helpers shared by the benchmark drivers (ingest_batch.py, discovery.py, commit_floor.py)."""
import getpass
import os
import re
import shutil
import sys


def dir_bytes(path):
    """(total bytes, file count) of all regular files below path."""
    total = files = 0
    for root, _, names in os.walk(path):
        for n in names:
            p = os.path.join(root, n)
            if os.path.isfile(p) and not os.path.islink(p):
                total += os.path.getsize(p)
                files += 1
    return total, files


def count_lines(path):
    n = 0
    with open(path, "rb") as f:
        for buf in iter(lambda: f.read(1 << 24), b""):
            n += buf.count(b"\n")
    return n


def parse_elapsed(text):
    """'h:mm:ss' or 'm:ss.ss' -> seconds."""
    secs = 0.0
    for part in text.strip().split(":"):
        secs = secs * 60 + float(part)
    return secs


def parse_time_v(text):
    """Pick wall, user, sys and peak RSS out of GNU time -v output."""
    def grab(pattern):
        m = re.search(pattern, text, re.MULTILINE)
        if not m:
            sys.exit(f"could not find {pattern!r} in /usr/bin/time output:\n{text}")
        return m.group(1)

    return {
        "wall_s": parse_elapsed(grab(r"Elapsed \(wall clock\) time \([^)]*\): (\S+)")),
        "user_s": float(grab(r"User time \(seconds\): (\S+)")),
        "sys_s": float(grab(r"System time \(seconds\): (\S+)")),
        "max_rss_kb": int(grab(r"Maximum resident set size \(kbytes\): (\d+)")),
    }


def rm(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class Bench:
    """A holdfast store under `workdir` built from `gen_events.py` output, and a runner that
    records every command it runs (to print them for repeating)."""

    def __init__(self, binary, workdir, name, events, days, seed):
        import subprocess
        import sys
        from pathlib import Path
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary} missing: CARGO_TARGET_DIR=/work/target-release cargo build --release")
        self.binary, self.work = binary, workdir
        self.work.mkdir(parents=True, exist_ok=True)
        self.events = self.work / f"{name}-events-{events}-{days}.ndjson"
        self.store, self.keyring = self.work / f"{name}-store", self.work / f"{name}-keyring.json"
        self.env = dict(os.environ, HOLDFAST_KEYRING=str(self.keyring))
        self.commands = []
        self._subprocess = subprocess
        if not self.events.exists():
            gen = Path(__file__).resolve().parent.parent.parent / "shared/bench/gen_events.py"
            self.run([sys.executable, gen, "--events", events, "--days", days, "--seed", seed, "--out", self.events])

    def run(self, argv, check=True):
        self.commands.append(" ".join(str(a) for a in argv))
        return self._subprocess.run([str(a) for a in argv], env=self.env, check=check, capture_output=True, text=True)

    def build(self):
        """A fresh store holding the events; returns the batch report."""
        import json
        rm(self.store)
        rm(self.keyring)
        self.run([self.binary, "init", "--store", self.store])
        self.run([self.binary, "ingest", "--store", self.store, self.events])
        return json.loads(self.run([self.binary, "batch", "--store", self.store, "--format", "json"]).stdout)

    def hold_busiest_queue(self, hold_id, store=None):
        """Places a legal hold (no date range) on the queue with the most events; returns the
        queue id, what `hold apply` printed and its process wall time."""
        import json
        import time
        store = store or self.store
        rows = self.run([self.binary, "query", "--store", store, "--format", "ndjson",
                         "SELECT queue_id, count(*) AS n FROM events WHERE queue_id IS NOT NULL GROUP BY queue_id ORDER BY n DESC LIMIT 1"]).stdout
        queue = json.loads(rows.splitlines()[0])["queue_id"]
        body = self.work / f"{hold_id}.json"
        body.write_text(json.dumps({"holdId": hold_id, "status": "ACTIVE", "scope": {"queueIds": [queue]}}))
        t0 = time.perf_counter()
        placed = self.run([self.binary, "hold", "apply", "--store", store, "--actor", getpass.getuser(), "--file", body]).stdout.strip()
        return queue, placed, time.perf_counter() - t0


def lines_by_partition(path, limit, by_tenant=False):
    """The first `limit` lines of an NDJSON event file, by (day, interaction type) and, with
    `by_tenant`, tenant: what one data file of holdfast holds (and, in format 3, one group)."""
    import collections
    import json

    parts = collections.defaultdict(list)
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            if i >= limit:
                break
            line = line.rstrip(b"\n")
            d = json.loads(line)
            key = (d["occurredAt"][:10], d["interaction"]["interactionType"])
            if by_tenant:
                key += (d.get("tenantId"),)
            parts[key].append(line)
    return parts

