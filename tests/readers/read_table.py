"""Reads a holdfast store's Delta table (the store's directory, or s3://bucket/prefix with the
AWS_* variables of the test's moto) with delta-rs (Python `deltalake`) and with polars,
and prints one JSON line per reader: rows, distinct event ids and the SHA-256 of the sorted
event ids joined by newlines.

usage: read_table.py ROOT
"""
import hashlib
import json
import os
import sys

import deltalake
import polars as pl


def summary(ids):
    ids = sorted(ids)
    return {"rows": len(ids), "distinct": len(set(ids)),
            "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}


def main():
    root = sys.argv[1]
    options = None
    if root.startswith("s3://"):
        options = {
            "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
            "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
            "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
            "AWS_ALLOW_HTTP": "true",
            "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
        }
    t = deltalake.DeltaTable(root, storage_options=options)
    ids = t.to_pyarrow_table(columns=["event_id"]).column("event_id").to_pylist()
    out = {"version": t.version(), "deltalake": summary(ids)}
    df = pl.read_delta(root, storage_options=options, columns=["event_id", "year", "tenant_id"])
    out["polars"] = summary(df["event_id"].to_list())
    out["polars_year_type"] = str(df.schema["year"])
    print(json.dumps(out))


main()
