#!/usr/bin/env python3
"""What a payload column of sealed groups of records would cost in Parquet (a layout holdfast
does not have yet; see docs/performance.md, issue 11).

    .venv-test/bin/python benches/group_payload.py [--rows 7700] [--group 64] [--bytes 246]

Every row's payload is the sealed group it belongs to (random bytes stand in for ciphertext),
so a row stays readable on its own; the group's bytes repeat on each of its rows. Written four
ways with pyarrow (zstd): plain binary, dictionary-encoded binary (default and 64 MiB
dictionary pages) and an Arrow dictionary type. Prints bytes per row on disk, and the time
and Arrow memory to read the file back.
"""
import argparse
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=7700, help="rows in the file (a busy partition)")
    ap.add_argument("--group", type=int, default=64, help="records per sealed group")
    ap.add_argument("--bytes", type=int, default=246, help="sealed bytes per record in a group")
    ap.add_argument("--out", default="/tmp/group_payload.parquet")
    a = ap.parse_args()
    n, g = a.rows, a.group
    groups = [os.urandom(g * a.bytes) for _ in range((n + g - 1) // g)]
    payload = pa.array([groups[i // g] for i in range(n)], pa.binary())
    ids = [f"e{i}" for i in range(n)]
    plain = pa.table({"event_id": ids, "payload": payload})
    typed = pa.table({"event_id": ids, "payload": payload.dictionary_encode()})
    big = 64 << 20
    ways = (
        ("binary, no dictionary", plain, {"use_dictionary": False}),
        ("binary, dictionary pages", plain, {"use_dictionary": ["payload"]}),
        ("binary, 64 MiB dictionary pages", plain,
         {"use_dictionary": ["payload"], "dictionary_pagesize_limit": big}),
        ("Arrow dictionary type", typed,
         {"use_dictionary": ["payload"], "dictionary_pagesize_limit": big}),
    )
    print(f"{n} rows, groups of {g} records of {a.bytes} bytes")
    print(f"{'layout':34s} {'B/row':>8s} {'read ms':>8s} {'Arrow MB':>9s}")
    for name, table, kw in ways:
        pq.write_table(table, a.out, compression="zstd", **kw)
        size = os.path.getsize(a.out)
        t0 = time.perf_counter()
        back = pq.read_table(a.out)
        ms = (time.perf_counter() - t0) * 1000
        mb = back.column("payload").nbytes / 1e6
        print(f"{name:34s} {size / n:8.1f} {ms:8.0f} {mb:9.1f}")
    os.remove(a.out)


if __name__ == "__main__":
    main()
