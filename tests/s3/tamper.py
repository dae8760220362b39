"""Changes an S3 store behind holdfast's back, as someone with s3:PutObject and
s3:DeleteObject (and s3:DeleteObjectVersion) on the bucket could (boto3 on moto).

usage: tamper.py ENDPOINT BUCKET mark KEY          a delete marker over KEY (`aws s3 rm`)
       tamper.py ENDPOINT BUCKET overwrite KEY [FILE]   a new version of KEY: FILE's bytes,
                                                        or other bytes
       tamper.py ENDPOINT BUCKET remove KEY VERSION   deletes that version (or marker)
       tamper.py ENDPOINT BUCKET wipe PREFIX       deletes every version and marker under
                                                   PREFIX that S3 lets go; a delete marker
                                                   then hides each key whose versions it kept
       tamper.py ENDPOINT BUCKET get KEY FILE      the current version's bytes into FILE
       tamper.py ENDPOINT BUCKET lock KEY          the current version's Object Lock, as JSON
                                                   {"legal_hold": bool, "retain_until": str|null}
       tamper.py ENDPOINT BUCKET legal-hold KEY ON|OFF   sets the current version's flag
Prints the version id it made or removed (wipe: how many versions it deleted and kept)."""
import sys

import boto3
from botocore.exceptions import ClientError

endpoint, bucket, action, key = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="AKIDHOLDFASTTEST",
                  aws_secret_access_key="holdfast-test-secret-0123456789")
if action == "mark":
    print(s3.delete_object(Bucket=bucket, Key=key)["VersionId"])
elif action == "overwrite":
    body = b"not the committed bytes"
    if len(sys.argv) > 5:
        with open(sys.argv[5], "rb") as f:
            body = f.read()
    print(s3.put_object(Bucket=bucket, Key=key, Body=body,
                        ChecksumAlgorithm="SHA256")["VersionId"])
elif action == "remove":
    s3.delete_object(Bucket=bucket, Key=key, VersionId=sys.argv[5])
    print(sys.argv[5])
elif action == "wipe":
    deleted, kept = 0, set()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            try:
                s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
                deleted += 1
            except ClientError:
                kept.add(v["Key"])
    for k in sorted(kept):
        s3.delete_object(Bucket=bucket, Key=k)
    print(f"deleted {deleted} kept {len(kept)}")
elif action == "get":
    s3.download_file(bucket, key, sys.argv[5])
    print(key)
elif action == "lock":
    import json
    head = s3.head_object(Bucket=bucket, Key=key)
    until = head.get("ObjectLockRetainUntilDate")
    print(json.dumps({"legal_hold": head.get("ObjectLockLegalHoldStatus") == "ON",
                      "retain_until": until.isoformat() if until else None}))
elif action == "legal-hold":
    s3.put_object_legal_hold(Bucket=bucket, Key=key, LegalHold={"Status": sys.argv[5]})
    print(sys.argv[5])
else:
    raise SystemExit(f"unknown action {action}")
