"""Puts files into a plain S3 bucket on moto (created if missing), as Firehose delivers them.

usage: put.py ENDPOINT BUCKET KEY=FILE [KEY=FILE ...]"""
import sys

import boto3

endpoint, bucket = sys.argv[1:3]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="AKIDHOLDFASTTEST",
                  aws_secret_access_key="holdfast-test-secret-0123456789")
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
for arg in sys.argv[3:]:
    key, path = arg.split("=", 1)
    with open(path, "rb") as f:
        s3.put_object(Bucket=bucket, Key=key, Body=f.read())
