"""Checks bigquery/schema.json against the Parquet schema of the exported files, mapping each
Parquet column as BigQuery's Parquet loader does (its documented conversion table, with
--parquet_enable_list_inference), independently of holdfast's own mapping.

usage: check_bigquery_schema.py DIR
"""
import glob
import json
import sys

import pyarrow.parquet as pq


def bigquery_type(node):
    """(type, fields) for a Parquet schema node, per BigQuery's table."""
    lt = node.logical_type
    name = str(lt.type) if lt is not None else "NONE"
    phys = node.physical_type
    if phys == "BOOLEAN":
        return "BOOLEAN"
    if phys in ("INT32", "INT64"):
        if name == "DATE":
            return "DATE"
        if name == "TIMESTAMP":
            return "TIMESTAMP"
        return "INTEGER"
    if phys in ("FLOAT", "DOUBLE"):
        return "FLOAT"
    if phys == "BYTE_ARRAY":
        return "STRING" if name in ("STRING", "ENUM", "JSON") else "BYTES"
    if phys == "INT96":
        return "TIMESTAMP"
    return "BYTES"


def walk(schema):
    """The top-level fields as BigQuery infers them: name -> {type, mode, fields}."""
    arrow = schema.to_arrow_schema()
    cols = [schema.column(i) for i in range(len(schema))]

    def from_arrow(field, prefix):
        import pyarrow as pa
        t = field.type
        if pa.types.is_list(t):
            # a standard three-level LIST: REPEATED of its element
            inner = from_arrow(t.value_field, prefix + [field.name, "list"])
            inner["mode"] = "REPEATED"
            inner["name"] = field.name
            return inner
        if pa.types.is_struct(t):
            return {
                "name": field.name,
                "type": "RECORD",
                "mode": "NULLABLE" if field.nullable else "REQUIRED",
                "fields": [from_arrow(t.field(i), prefix + [field.name]) for i in range(t.num_fields)],
            }
        path = ".".join(prefix + [field.name])
        leaf = next(c for c in cols if c.path == path)
        return {
            "name": field.name,
            "type": bigquery_type(leaf),
            "mode": "NULLABLE" if field.nullable else "REQUIRED",
        }

    return [from_arrow(f, []) for f in arrow]


def norm(fields):
    out = []
    for f in fields:
        g = {"name": f["name"], "type": f["type"], "mode": f["mode"]}
        if "fields" in f:
            g["fields"] = norm(f["fields"])
        out.append(g)
    return out


def main():
    out = sys.argv[1]
    declared = norm(json.load(open(f"{out}/bigquery/schema.json")))
    for f in sorted(glob.glob(f"{out}/data/*.parquet")):
        inferred = norm(walk(pq.ParquetFile(f).schema))
        if inferred != declared:
            for a, b in zip(inferred, declared):
                if a != b:
                    print("FAIL:", f, "\n  parquet maps to", a, "\n  schema.json says", b)
                    sys.exit(1)
            print("FAIL: column count", len(inferred), len(declared))
            sys.exit(1)
    print("ok", len(declared), "columns")


main()
