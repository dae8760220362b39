"""Reads a lake directory as a hive-partitioned pyarrow dataset (what a data team does
with a copy of the folder, while or after a batch runs): every file in it must be Parquet.

usage: read_dir.py LAKE_DIR
"""
import sys

import pyarrow.dataset as ds

lake = sys.argv[1]
dataset = ds.dataset(lake, format="parquet", partitioning="hive")
print(f"pyarrow read {dataset.count_rows()} rows from {len(dataset.files)} files")
