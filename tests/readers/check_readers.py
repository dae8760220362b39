"""Reads a holdfast lake with pyarrow and DuckDB and checks what warehouses rely on.

usage: check_readers.py LAKE_DIR EXPECTED_ROWS
"""
import glob
import os
import sys

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

lake, expected = sys.argv[1], int(sys.argv[2])
files = sorted(glob.glob(os.path.join(lake, "**", "*.parquet"), recursive=True))
assert files, "no data files"

# pyarrow: the file schema itself
schema = pq.read_schema(files[0])
for hive in ("year", "month", "day", "interaction_type"):
    assert hive not in schema.names, f"hive key {hive} inside the file"
assert schema.field("occurred_at").type == pa.timestamp("us", tz="UTC"), schema.field("occurred_at").type
assert schema.field("expires_at").type == pa.timestamp("us", tz="UTC")
agents = schema.field("agent_ids").type
assert pa.types.is_list(agents) and agents.value_field.name == "element", agents
assert schema.field("payload").type == pa.binary()
assert schema.field("record_hash").type == pa.binary(32)

# pyarrow: the hive-partitioned dataset, partition types pinned
part = ds.partitioning(pa.schema([("year", pa.int32()), ("month", pa.int32()), ("day", pa.int32()),
                                  ("interaction_type", pa.string())]), flavor="hive")
table = ds.dataset(lake, format="parquet", partitioning=part).to_table(
    columns=["event_id", "occurred_at", "year", "month", "day", "interaction_type"])
assert table.num_rows == expected, (table.num_rows, expected)
assert len(set(table.column("event_id").to_pylist())) == expected
for ts, d in zip(table.column("occurred_at").to_pylist()[:200], table.column("day").to_pylist()[:200]):
    assert ts.day == d, (ts, d)

# DuckDB: the query the discovery benchmark uses, with pinned partition types
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
src = (f"read_parquet('{lake}/**/*.parquet', hive_partitioning = true, "
       "hive_types = {'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'interaction_type': VARCHAR})")
n, distinct = con.execute(f"SELECT count(*), count(DISTINCT event_id) FROM {src}").fetchone()
assert (n, distinct) == (expected, expected), (n, distinct)
bad = con.execute(f"SELECT count(*) FROM {src} WHERE day <> day(occurred_at) OR month <> month(occurred_at)").fetchone()[0]
assert bad == 0, bad
typ = con.execute(f"SELECT typeof(occurred_at), typeof(agent_ids), typeof(payload) FROM {src} LIMIT 1").fetchone()
assert typ == ("TIMESTAMP WITH TIME ZONE", "VARCHAR[]", "BLOB"), typ
print(f"pyarrow {pa.__version__} and duckdb {duckdb.__version__} read {expected} rows from {len(files)} files")
