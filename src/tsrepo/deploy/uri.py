"""Object-store locations: `s3://bucket/prefix`, with an optional S3-compatible endpoint.

Triton names an endpoint inside the URI (`s3://http://host:port/bucket/prefix`); boto3 takes it
as `endpoint_url`. Both forms parse to one `S3Location`, and each consumer gets its own spelling back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from tsrepo.errors import UsageError

# S3's rules for new buckets: 3-63 characters, lower-case letters, digits, '.' and '-', a letter
# or digit at both ends, no '..', not an IP address.
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
IP_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")
# A key segment tsrepo writes or reads: no empty, '.' or '..' segments (they would escape the prefix
# when mirrored to disk) and no control characters.
SEGMENT_RE = re.compile(r"[^\x00-\x1f\x7f/]+")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # without leading or trailing '/'; '' for the bucket root
    endpoint_url: str | None = None  # http(s)://host[:port] of an S3-compatible server; None: AWS

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def key_prefix(self) -> str:
        """What every object of the repository starts with."""
        return f"{self.prefix}/" if self.prefix else ""

    def uri(self) -> str:
        """`s3://bucket/prefix`, the form AWS tools and KServe's storageUri take."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def triton_uri(self) -> str:
        """What `tritonserver --model-repository` takes: the endpoint inside the URI when there is one."""
        if self.endpoint_url is None:
            return self.uri()
        return f"s3://{self.endpoint_url}/{self.bucket}/{self.prefix}".rstrip("/")

    def describe(self, key: str | None = None) -> str:
        where = f"s3://{self.bucket}/{key}" if key is not None else self.uri()
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where


def is_s3(value: object) -> bool:
    return isinstance(value, str) and value.startswith("s3://")


def check_endpoint(url: str, option: str = "--endpoint-url") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{option} must be http(s)://HOST[:PORT], got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{option}: the port in {url!r} is not a number from 1 to 65535") from None
    if port == 0 or parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise UsageError(f"{option} must be http(s)://HOST[:PORT] without a path, user or query, got {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def parse(value: str, endpoint_url: str | None = None, option: str = "REPO") -> S3Location:
    """`s3://bucket/prefix` or `s3://http(s)://host:port/bucket/prefix`; UsageError naming `option` otherwise."""
    if not is_s3(value):
        raise UsageError(f"{option} must be an s3://BUCKET/PREFIX URI, got {value!r}")
    rest = value[len("s3://") :]
    embedded = None
    m = re.match(r"(https?://[^/]+)/(.*)", rest)
    if m:
        embedded = check_endpoint(m.group(1), option)
        rest = m.group(2)
    if embedded and endpoint_url and check_endpoint(endpoint_url) != embedded:
        raise UsageError(f"{option} names the endpoint {embedded} and --endpoint-url says {endpoint_url}; give it once")
    endpoint = embedded or (check_endpoint(endpoint_url) if endpoint_url else None)
    bucket, _, prefix = rest.partition("/")
    if not BUCKET_RE.fullmatch(bucket) or ".." in bucket or IP_RE.fullmatch(bucket):
        raise UsageError(
            f"{option}: {bucket!r} is not a valid S3 bucket name (3-63 characters: lower-case letters,"
            " digits, '.' and '-', starting and ending with a letter or digit)"
        )
    prefix = prefix.strip("/")
    for segment in prefix.split("/") if prefix else []:
        if not SEGMENT_RE.fullmatch(segment) or segment in (".", ".."):
            raise UsageError(
                f"{option}: the prefix {prefix!r} has an empty, '.', '..' or control-character segment;"
                " give a plain path such as models/prod"
            )
    return S3Location(bucket, prefix, endpoint)
