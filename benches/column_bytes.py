#!/usr/bin/env python3
"""What a holdfast store spends per stored event, column by column.

Reads the Parquet footers of every data file under <store>/lake (no key needed, nothing is
decrypted) and prints, per column, the bytes its column chunks take on disk divided by the
number of stored records, then the rest of the files (footers, with the sealed dictionaries of
formats 1 and 2, bloom filters, page indexes, magic) and the manifests.

    .venv-test/bin/python benches/column_bytes.py --store bench-out/store
    .venv-test/bin/python benches/column_bytes.py --store bench-out/store --json

Needs pyarrow (tests/run.sh installs it into .venv-test/).
"""

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

# AES-256-GCM: a 96-bit nonce and a 128-bit tag around each sealed value (a record in data
# file formats 1 and 2, a group of records in format 3)
NONCE_AND_TAG = 12 + 16
# a format 3 payload that is only a group's number (LEB128) is at most this long
ORDINAL_ONLY = 5


def sealed_values(path: Path, md) -> int:
    """Sealed values in a data file: one per record, or (format 3) one per group, carried by
    the rows whose payload is longer than a group number."""
    version = (md.metadata or {}).get(b"holdfast.format_version")
    if version != b"3":
        return md.num_rows
    payload = pq.read_table(path, columns=["payload"]).column(0)
    return pc.sum(pc.greater(pc.binary_length(payload), ORDINAL_ONLY)).as_py() or 0


def measure(store: Path) -> dict:
    files = sorted((store / "lake").rglob("*.parquet"))
    if not files:
        sys.exit(f"no data files under {store / 'lake'}")
    columns = defaultdict(int)
    rows = 0
    file_bytes = 0
    footer_bytes = 0
    bloom_bytes = 0
    sealed = 0
    for path in files:
        md = pq.ParquetFile(path).metadata
        rows += md.num_rows
        sealed += sealed_values(path, md)
        file_bytes += path.stat().st_size
        footer_bytes += md.serialized_size
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                columns[col.path_in_schema] += col.total_compressed_size
                length = getattr(col, "bloom_filter_length", None)
                if length:
                    bloom_bytes += length
    in_chunks = sum(columns.values())
    manifests = sum(p.stat().st_size for p in (store / "manifests").rglob("*") if p.is_file())
    other = file_bytes - in_chunks - footer_bytes - bloom_bytes
    return {
        "store": str(store),
        "files": len(files),
        "records": rows,
        "sealed_values": sealed,
        "data_file_bytes": file_bytes,
        "manifest_bytes": manifests,
        "columns": dict(sorted(columns.items(), key=lambda kv: -kv[1])),
        "footer_bytes": footer_bytes,
        "bloom_filter_bytes": bloom_bytes,
        "other_bytes": other,
    }


def per(n: float, rows: int) -> str:
    return f"{n / rows:8.1f}"


def report(m: dict) -> None:
    rows = m["records"]
    payload = m["columns"].get("payload", 0)
    index = sum(v for k, v in m["columns"].items() if k != "payload")
    overhead = m["footer_bytes"] + m["bloom_filter_bytes"] + m["other_bytes"]
    print(f"{m['files']} data files, {rows} records, {m['data_file_bytes']} bytes "
          f"(+ {m['manifest_bytes']} bytes of manifests)")
    print()
    print("| column | bytes per record |")
    print("|---|---|")
    for name, size in m["columns"].items():
        print(f"| {name} | {per(size, rows)} |")
    print(f"| footers (schema, statistics, sealed dictionaries) | {per(m['footer_bytes'], rows)} |")
    if m["bloom_filter_bytes"]:
        print(f"| bloom filters | {per(m['bloom_filter_bytes'], rows)} |")
    print(f"| rest of the files (page indexes, magic{'' if m['bloom_filter_bytes'] else ', bloom filters'}) "
          f"| {per(m['other_bytes'], rows)} |")
    print(f"| manifests | {per(m['manifest_bytes'], rows)} |")
    print()
    total = m["data_file_bytes"] + m["manifest_bytes"]
    print("| part | bytes per record |")
    print("|---|---|")
    print(f"| payload (sealed records or groups) | {per(payload, rows)} |")
    print(f"|   of which nonce and tag ({m['sealed_values']} sealed values) "
          f"| {per(NONCE_AND_TAG * m['sealed_values'], rows)} |")
    print(f"| index columns | {per(index, rows)} |")
    print(f"| Parquet overhead (footers, blooms, indexes) | {per(overhead, rows)} |")
    print(f"| manifests | {per(m['manifest_bytes'], rows)} |")
    print(f"| total | {per(total, rows)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, required=True, help="a holdfast store directory")
    ap.add_argument("--json", action="store_true", help="print the measurement as JSON")
    args = ap.parse_args()
    m = measure(args.store)
    if args.json:
        json.dump(m, sys.stdout, indent=2)
        print()
    else:
        report(m)


if __name__ == "__main__":
    main()
