"""Wipes everything holdfast keeps in an S3 store except its data files (manifests, head,
audit trail, hold registry, catalog, policy, marker: every version), then tries to delete a
held data file version (its legal hold read from S3) and an unexpired one directly. S3 must
refuse both (AccessDenied).

usage: provider_refuses.py ENDPOINT BUCKET PREFIX
Prints one JSON line: what was wiped and what each delete attempt got."""
import json
import sys

import boto3
from botocore.exceptions import ClientError

endpoint, bucket, prefix = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="AKIDHOLDFASTTEST",
                  aws_secret_access_key="holdfast-test-secret-0123456789")

wiped, data = 0, []
pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix + "/")
for page in pages:
    for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
        if v["Key"].startswith(prefix + "/lake/"):
            data.append(v)
            continue
        s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        wiped += 1

def attempt(v):
    head = s3.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
    lock = {"mode": head.get("ObjectLockMode"), "hold": head.get("ObjectLockLegalHoldStatus"),
            "until": str(head.get("ObjectLockRetainUntilDate"))}
    try:
        s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        return {"key": v["Key"], "lock": lock, "result": "deleted"}
    except ClientError as e:
        return {"key": v["Key"], "lock": lock, "result": e.response["Error"]["Code"]}

def hold_of(v):
    h = s3.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
    return h.get("ObjectLockLegalHoldStatus")

held = next(v for v in data if hold_of(v) == "ON")
unexpired = next(v for v in data if hold_of(v) != "ON")
left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])]
print(json.dumps({"wiped": wiped, "left": len(left),
                  "non_data_left": [k for k in left if not k.startswith(prefix + "/lake/")],
                  "held": attempt(held), "unexpired": attempt(unexpired)}))
