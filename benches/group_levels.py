#!/usr/bin/env python3
"""How groups of records compress at a few zstd levels (data file format 3 seals a tenant's
records of a file in groups of up to 128).

    python3 -m venv /tmp/zvenv && /tmp/zvenv/bin/pip install zstandard
    /tmp/zvenv/bin/python benches/group_levels.py bench-out/events-1000000-seed42.ndjson

Takes the first 300,000 lines, cuts each (day, interaction type, tenant)'s lines into groups
of 128, and prints per level the compressed bytes per record (before the 28 bytes of nonce
and tag a group) and the best of 3 timings.
"""

import sys
import time

import zstandard as zs

from benchlib import lines_by_partition

GROUP = 128


def main(path: str) -> None:
    parts = lines_by_partition(path, 300_000, by_tenant=True)
    groups = []
    for recs in parts.values():
        for i in range(0, len(recs), GROUP):
            groups.append(b"".join(recs[i:i + GROUP]))
    total = sum(map(len, groups))
    records = sum(len(r) for r in parts.values())
    print(f"{len(groups)} groups, {records} records, {total / 1e6:.1f} MB")
    for level in (-1, 1, 2, 3):
        c = zs.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            out = sum(len(c.compress(g)) for g in groups)
            best = min(best, time.perf_counter() - t)
        print(f"level {level}: {out / records:.1f} bytes a record, {total / best / 1e6:.0f} MB/s")


if __name__ == "__main__":
    main(sys.argv[1])
