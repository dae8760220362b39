"""moto's server for the integration tests, with a clock of its own per bucket.

usage: moto_server.py [moto_server's options: -H HOST -p PORT ...]

The object `holdfast-test-clock/<bucket>` (a plain PUT, `Content-Type:
application/octet-stream`, an RFC 3339 time in the body, or `real`) sets the time
that moto's Object Lock checks on <bucket> use, and the `Date` header of its answers about
that bucket; without it, both are the real time. This lets the tests that drive holdfast's
clock forward by years (retention sweeps) run on S3 with the provider agreeing on the date.
Everything else is moto's own behaviour."""
import datetime
import email.utils
import threading

from moto.moto_server import werkzeug_app
from moto.s3 import models
from moto.server import main

CLOCK_BUCKET = "holdfast-test-clock"
_real_utcnow = models.utcnow
_current = threading.local()


def bucket_clock(bucket):
    """The time set for `bucket` (naive UTC), or None."""
    if not bucket or bucket == CLOCK_BUCKET:
        return None
    try:
        backend = models.s3_backends["123456789012"]["aws"]
        key = backend.get_object(CLOCK_BUCKET, bucket)
    except Exception:  # no clock bucket or no clock for this bucket
        return None
    if key is None:
        return None
    text = key.value.decode().strip().replace("Z", "+00:00")
    if text in ("", "real"):
        return None
    at = datetime.datetime.fromisoformat(text)
    return at.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def utcnow():
    return bucket_clock(getattr(_current, "bucket", None)) or _real_utcnow()


models.utcnow = utcnow
_is_locked = models.FakeKey.is_locked


def is_locked(self, governance_bypass):
    _current.bucket = self.bucket_name
    try:
        return _is_locked(self, governance_bypass)
    finally:
        _current.bucket = None


models.FakeKey.is_locked = is_locked
_date_time_string = werkzeug_app.MotoRequestHandler.date_time_string


def date_time_string(self, timestamp=None):
    bucket = self.path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
    now = bucket_clock(bucket)
    if now is None:
        return _date_time_string(self, timestamp)
    return email.utils.formatdate(now.replace(tzinfo=datetime.timezone.utc).timestamp(), usegmt=True)


werkzeug_app.MotoRequestHandler.date_time_string = date_time_string

if __name__ == "__main__":
    main()
