"""`tsrepo push`: plan every object (upload, skip, delete), then apply the plan in a safe order.

A Triton that polls the bucket must never see half a model. S3 makes each object appear whole (a
PUT, or a multipart upload at its completion), so the order decides: per model, the files of every
version first (the model file last within its version), then tsrepo.json, then config.pbtxt as the
commit point. Deletions (`--prune`) come after every upload: a server keeps the old versions until
the new config that drops them is in place, and a removed model loses its config.pbtxt first.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tsrepo.deploy import remote, scan
from tsrepo.deploy.errors import DeployError
from tsrepo.deploy.uri import S3Location
from tsrepo.repository import CONFIG_FILE

IN_MEMORY_LIMIT = 64 << 20  # files up to this size are read once, checked and sent from memory


@dataclass(frozen=True)
class Step:
    action: str  # upload | skip | delete | keep
    key: str
    reason: str  # new | changed | unchanged | pruned | not local (kept)
    file: scan.LocalFile | None = None


@dataclass
class Plan:
    loc: S3Location
    steps: list[Step]
    seconds_planning: float = 0.0

    def count(self, action: str) -> int:
        return sum(1 for s in self.steps if s.action == action)

    def bytes_to_upload(self) -> int:
        return sum(s.file.size for s in self.steps if s.action == "upload" and s.file)

    def summary(self) -> str:
        mib = self.bytes_to_upload() / (1 << 20)
        return (
            f"{self.count('upload')} to upload ({mib:.1f} MiB), {self.count('skip')} unchanged,"
            f" {self.count('delete')} to delete, {self.count('keep')} remote-only kept"
        )

    def lines(self) -> list[str]:
        return [f"{s.action:<7} {s.reason:<10} s3://{self.loc.bucket}/{s.key}" for s in self.steps]


@dataclass
class Result:
    plan: Plan
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _model_of(loc: S3Location, key: str) -> tuple[str, str] | None:
    """(model, rest) for a key inside a model folder under the prefix; None for anything else."""
    rel = key[len(loc.key_prefix()) :]
    model, sep, rest = rel.partition("/")
    return (model, rest) if sep and model and rest else None


def plan(repo: Path, loc: S3Location, prune: bool, s3=None) -> Plan:
    started = time.monotonic()
    models = scan.scan(repo)
    s3 = s3 or remote.client(loc)
    existing = {o.key: o for o in remote.list_objects(s3, loc, loc.key_prefix())}
    steps: list[Step] = []
    local_keys: set[str] = set()
    for m in models:
        for f in m.files:
            key = loc.key(f.rel)
            local_keys.add(key)
            if key in existing and existing[key].size == f.size and remote.head_sha256(s3, loc, key) == f.sha256:
                steps.append(Step("skip", key, "unchanged", f))
            else:
                steps.append(Step("upload", key, "changed" if key in existing else "new", f))
    local_models = {m.name for m in models}
    # Only model folders are ever pruned: a folder with a config.pbtxt of its own, or one the local
    # repository has. Anything else under the prefix (another repository beside this one, say) is not
    # this repository's to delete.
    remote_models = {m for m, rest in (_model_of(loc, k) or ("", "") for k in existing) if rest == CONFIG_FILE}
    owned = remote_models | local_models
    stale = sorted(
        k for k in existing if k not in local_keys and _model_of(loc, k) and _model_of(loc, k)[0] in owned
    )
    # Models gone from the local repository lose config.pbtxt first, so a polling server unloads
    # them cleanly instead of meeting a model folder whose versions are disappearing.
    stale.sort(key=lambda k: (_model_of(loc, k)[0] in local_models, _model_of(loc, k)[1] != CONFIG_FILE, k))
    for key in stale:
        model, _rest = _model_of(loc, key)
        reason = "pruned" if prune else "not local"
        steps.append(Step("delete" if prune else "keep", key, reason if model in local_models else f"{reason}*"))
    return Plan(loc, steps, time.monotonic() - started)


def _read_checked(f: scan.LocalFile) -> bytes:
    data = f.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != f.sha256:
        raise DeployError(f"{f.path}: changed while the push was running; run the push again")
    return data


def _upload(s3, loc: S3Location, step: Step) -> None:
    f = step.file
    assert f is not None  # upload steps always carry their file
    metadata = {remote.SHA_META: f.sha256}
    try:
        if f.size <= IN_MEMORY_LIMIT:
            s3.put_object(Bucket=loc.bucket, Key=step.key, Body=_read_checked(f), Metadata=metadata)
        else:
            # Multipart for large files: the object still appears only when the upload completes.
            s3.upload_file(str(f.path), loc.bucket, step.key, ExtraArgs={"Metadata": metadata})
            if scan.sha256_file(f.path) != f.sha256:
                raise DeployError(f"{f.path}: changed while the push was running; run the push again")
    except OSError as e:
        raise DeployError(f"{f.path}: cannot be read ({e.strerror or e})") from None
    except DeployError:
        raise
    except Exception as e:
        raise remote.translate(e, loc, step.key, "uploading to") from e


def apply(p: Plan, s3=None, on_step: Callable[[Step], None] = lambda _s: None) -> Result:
    started = time.monotonic()
    s3 = s3 or remote.client(p.loc)
    result = Result(p)
    for step in p.steps:
        if step.action == "upload":
            _upload(s3, p.loc, step)
            result.uploaded.append(step.key)
            on_step(step)
    for step in p.steps:
        if step.action == "delete":
            try:
                s3.delete_object(Bucket=p.loc.bucket, Key=step.key)
            except Exception as e:
                raise remote.translate(e, p.loc, step.key, "deleting") from e
            result.deleted.append(step.key)
            on_step(step)
    result.seconds = time.monotonic() - started
    return result


def push(repo: Path, loc: S3Location, prune: bool = False, dry_run: bool = False, on_step=lambda _s: None) -> Result:
    s3 = remote.client(loc)
    p = plan(repo, loc, prune, s3)
    if dry_run:
        return Result(p)
    return apply(p, s3, on_step)
