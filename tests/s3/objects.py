"""Lists an S3 store's objects for the integration tests (boto3 on moto).

usage: objects.py ENDPOINT BUCKET PREFIX [--modes] [--download DIR]
Prints one JSON line: {"current": [keys], "versions": n, "markers": n} under PREFIX; with
--modes also "modes": the Object Lock mode of each current object, counted; with --download
DIR also writes each current object to DIR/<key less PREFIX> ("files": their paths)."""
import json
import sys

import boto3

endpoint, bucket, prefix = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="AKIDHOLDFASTTEST",
                  aws_secret_access_key="holdfast-test-secret-0123456789")
current, versions, markers = [], 0, 0
for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
    for v in page.get("Versions", []):
        versions += 1
        if v["IsLatest"]:
            current.append(v["Key"])
    markers += len(page.get("DeleteMarkers", []))
out = {"current": sorted(current), "versions": versions, "markers": markers}
if "--modes" in sys.argv[4:]:
    modes = {}
    for key in current:
        mode = s3.head_object(Bucket=bucket, Key=key).get("ObjectLockMode", "none")
        modes[mode] = modes.get(mode, 0) + 1
    out["modes"] = modes
if "--download" in sys.argv[4:]:
    import os
    root = sys.argv[sys.argv.index("--download") + 1]
    files = []
    for key in current:
        path = os.path.join(root, key[len(prefix):].lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, key, path)
        files.append(path)
    out["files"] = files
print(json.dumps(out))
