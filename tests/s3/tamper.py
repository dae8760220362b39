"""Changes an S3 store behind holdfast's back, as someone with s3:PutObject and
s3:DeleteObject on the bucket could (boto3 on moto).

usage: tamper.py ENDPOINT BUCKET mark KEY          a delete marker over KEY (`aws s3 rm`)
       tamper.py ENDPOINT BUCKET overwrite KEY     a new version of KEY with other bytes
       tamper.py ENDPOINT BUCKET remove KEY VERSION   deletes that version (or marker)
Prints the version id it made or removed."""
import sys

import boto3

endpoint, bucket, action, key = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="AKIDHOLDFASTTEST",
                  aws_secret_access_key="holdfast-test-secret-0123456789")
if action == "mark":
    print(s3.delete_object(Bucket=bucket, Key=key)["VersionId"])
elif action == "overwrite":
    print(s3.put_object(Bucket=bucket, Key=key, Body=b"not the committed bytes",
                        ChecksumAlgorithm="SHA256")["VersionId"])
elif action == "remove":
    s3.delete_object(Bucket=bucket, Key=key, VersionId=sys.argv[5])
    print(sys.argv[5])
else:
    raise SystemExit(f"unknown action {action}")
