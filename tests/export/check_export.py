"""Reads an export directory the way a warehouse team would, with DuckDB and pyarrow, and
compares it with what `holdfast query` returned for the same selection.

usage: check_export.py DIR EXPECTED.ndjson [--decrypted]

EXPECTED holds one JSON object per row with event_id, tenant_id, occurred_us, record_hash,
agents (agent ids joined by "|"), queue_id, and with --decrypted also record (the decrypted
canonical record). Exits 1 naming the first difference.
"""
import glob
import json
import sys

import duckdb
import pyarrow.parquet as pq


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def main():
    out, expected_path = sys.argv[1], sys.argv[2]
    decrypted = "--decrypted" in sys.argv[3:]
    files = sorted(glob.glob(f"{out}/data/*.parquet"))
    if not files:
        fail("no data files")
    con = duckdb.connect()
    scan = f"read_parquet({files!r})"
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
    want = {
        "occurred_at": "TIMESTAMP WITH TIME ZONE",
        "expires_at": "TIMESTAMP WITH TIME ZONE",
        "agent_ids": "VARCHAR[]",
        "record_hash": "VARCHAR",
        "event_id": "VARCHAR",
    }
    if decrypted:
        want["participants"] = (
            "STRUCT(participant_id VARCHAR, \"type\" VARCHAR, address VARCHAR, "
            "joined_at TIMESTAMP WITH TIME ZONE, left_at TIMESTAMP WITH TIME ZONE)[]"
        )
        want["record_json"] = "VARCHAR"
    for col, t in want.items():
        if types.get(col) != t:
            fail(f"column {col}: DuckDB reads {types.get(col)}, expected {t}")
    for key in ("year", "month", "day", "payload", "dek_id", "address_hmacs"):
        if key in types:
            fail(f"column {key} must not be exported")
    # no empty strings where NULL is meant (Snowflake's MATCH_BY_COLUMN_NAME refuses them)
    for col, t in types.items():
        if t == "VARCHAR":
            n = con.execute(f"SELECT count(*) FROM {scan} WHERE \"{col}\" = ''").fetchone()[0]
            if n:
                fail(f"column {col}: {n} empty string(s)")
    for f in files:
        pf = pq.ParquetFile(f)
        meta = pf.metadata
        for rg in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                comp = meta.row_group(rg).column(c).compression
                if comp != "ZSTD":
                    fail(f"{f}: column {c} is {comp}, not ZSTD")
        paths = [pf.schema.column(i).path for i in range(len(pf.schema))]
        if "agent_ids.list.element" not in paths:
            fail(f"{f}: list child not named element: {paths}")
    extra = ", record_json" if decrypted else ""
    got = con.execute(
        f"SELECT event_id, tenant_id, epoch_us(occurred_at), record_hash, "
        f"array_to_string(agent_ids, '|'), queue_id{extra} FROM {scan} ORDER BY event_id"
    ).fetchall()
    rows = [json.loads(line) for line in open(expected_path) if line.strip()]
    rows.sort(key=lambda r: r["event_id"])
    keys = ["event_id", "tenant_id", "occurred_us", "record_hash", "agents", "queue_id"]
    if decrypted:
        keys.append("record")
    expected = [tuple(r.get(k) for k in keys) for r in rows]
    if len(got) != len(expected):
        fail(f"{len(got)} rows exported, the query returned {len(expected)}")
    for g, e in zip(got, expected):
        if tuple(g) != e:
            fail(f"row differs:\n  export {g}\n  query  {e}")
    print(f"ok {len(got)} rows in {len(files)} file(s)")


main()
