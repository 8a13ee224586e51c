"""The S3 client and what its failures mean to a user.

Credentials come only from boto3's standard chain (environment, shared files and profiles, SSO,
container and instance roles): tsrepo has no flag or file of its own for them, so a secret never
lands in shell history or in a tsrepo file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tsrepo.deploy.errors import DeployError, RemoteError
from tsrepo.deploy.uri import S3Location

SHA_META = "sha256"  # user metadata on every object tsrepo puts: x-amz-meta-sha256


@dataclass(frozen=True)
class RemoteObject:
    key: str
    size: int
    etag: str


def client(loc: S3Location):
    import boto3
    import botocore.config

    session = boto3.session.Session()
    # Path-style addressing: S3-compatible servers (MinIO, Ceph, moto) rarely resolve virtual hosts.
    config = botocore.config.Config(
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"} if loc.endpoint_url else {},
        connect_timeout=10,
        read_timeout=60,
    )
    return session.client(
        "s3", endpoint_url=loc.endpoint_url, region_name=session.region_name or "us-east-1", config=config
    )


def translate(e: Exception, loc: S3Location, key: str | None, action: str) -> Exception:
    """A boto3 failure as a TsrepoError naming the bucket and key; anything else unchanged (a bug)."""
    import botocore.exceptions as bx

    where = loc.describe(key)
    if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return DeployError(
            f"{action} {where}: no AWS credentials found. tsrepo reads them only from the standard AWS chain:"
            " AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE with ~/.aws/credentials, SSO, or an instance role"
        )
    if isinstance(e, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError):
        return RemoteError(
            f"{action} {where}: the S3 endpoint did not answer ({e}); check --endpoint-url and the network"
        )
    if isinstance(e, bx.ClientError):
        error = e.response.get("Error", {})
        code = str(error.get("Code", "?"))
        message = error.get("Message") or ""
        hint = {
            "NoSuchBucket": f"the bucket {loc.bucket!r} does not exist; create it first",
            "AccessDenied": "the credentials may not do this; check the policy for this bucket and prefix",
            "403": "the credentials may not do this; check the policy for this bucket and prefix",
            "InvalidAccessKeyId": "the access key is not known to this endpoint",
            "SignatureDoesNotMatch": "the secret key does not match the access key",
        }.get(code, "")
        detail = "; ".join(x for x in (f"{code} {message}".strip(), hint) if x)
        return RemoteError(f"{action} {where}: {detail}")
    if isinstance(e, bx.BotoCoreError):
        return RemoteError(f"{action} {where}: {e}")
    return e


def list_objects(s3, loc: S3Location, prefix: str) -> Iterator[RemoteObject]:
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield RemoteObject(item["Key"], int(item["Size"]), item["ETag"].strip('"'))
    except Exception as e:
        raise translate(e, loc, prefix, "listing") from e


def head_sha256(s3, loc: S3Location, key: str) -> str | None:
    """The sha256 tsrepo recorded on the object when it put it; None for objects put by anything else."""
    try:
        head = s3.head_object(Bucket=loc.bucket, Key=key)
    except Exception as e:
        raise translate(e, loc, key, "reading") from e
    return head.get("Metadata", {}).get(SHA_META)
