"""The object-store side in one import: push a repository, read it back, materialize it locally."""

from __future__ import annotations

from tsrepo.deploy.pull import materialize, read_models
from tsrepo.deploy.push import plan, push
from tsrepo.deploy.uri import S3Location, is_s3, parse

__all__ = ["S3Location", "is_s3", "materialize", "parse", "plan", "push", "read_models"]
