"""A pushed repository read back: model metadata for rendering, or a verified local copy.

`materialize` lets every command that takes a local `--repo` take `s3://...` too: it mirrors the
repository into a cache folder, checks every model file against the sha256 in tsrepo.json, and
renames the copy into place whole as an immutable snapshot, so a reader of the cache never sees a
half-downloaded model. Objects whose ETag matches the previous snapshot are linked from it, not fetched again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tsrepo import meta
from tsrepo.deploy import remote, uri
from tsrepo.deploy.errors import DeployError
from tsrepo.deploy.scan import model_file as find_model_file
from tsrepo.errors import MetaError
from tsrepo.repository import CONFIG_FILE, META_FILE

INDEX_FILE = ".tsrepo-pull.json"  # key -> etag, written last into a snapshot: its presence marks it whole
KEEP_SNAPSHOTS = 3  # older snapshots of one URI are removed after a new one lands


@dataclass(frozen=True)
class RemoteModel:
    name: str
    config: object  # model_config_pb2.ModelConfig
    record: meta.ModelMeta | None


def _get(s3, loc: uri.S3Location, key: str) -> bytes:
    try:
        return s3.get_object(Bucket=loc.bucket, Key=key)["Body"].read()
    except Exception as e:
        raise remote.translate(e, loc, key, "downloading") from e


def _parse_config(data: bytes, where: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    try:
        return text_format.Parse(data.decode("utf-8"), pb.ModelConfig())
    except (UnicodeDecodeError, text_format.ParseError) as e:
        raise DeployError(f"{where}: not a config Triton can read ({e}); push the repository again") from None


def _parse_record(data: bytes, where: str) -> meta.ModelMeta:
    try:
        return meta.from_json(json.loads(data.decode("utf-8")), Path(where))
    except (UnicodeDecodeError, ValueError) as e:
        raise DeployError(f"{where}: not valid JSON ({e}); push the repository again") from None
    except MetaError as e:
        raise DeployError(str(e)) from None


def _by_model(loc: uri.S3Location, objects) -> dict[str, dict[str, remote.RemoteObject]]:
    models: dict[str, dict[str, remote.RemoteObject]] = {}
    for o in objects:
        rel = o.key[len(loc.key_prefix()) :]
        parts = rel.split("/")
        if len(parts) < 2 or any(p in ("", ".", "..") for p in parts) or parts[0].startswith("."):
            continue  # not inside a model folder, or a key that cannot be mirrored safely
        models.setdefault(parts[0], {})["/".join(parts[1:])] = o
    return models


def read_models(loc: uri.S3Location, s3=None, warn: Callable[[str], None] = lambda _m: None) -> list[RemoteModel]:
    """Each model's config.pbtxt and tsrepo.json from the bucket (model files are not downloaded, but
    the listing is checked against the record; see _check_listed)."""
    s3 = s3 or remote.client(loc)
    listing = list(remote.list_objects(s3, loc, loc.key_prefix()))
    models = _by_model(loc, listing)
    folders = _version_folders(loc, listing)
    out = []
    for name, objects in sorted(models.items()):
        if CONFIG_FILE not in objects:
            continue  # a model being removed, or not a model: Triton skips it as well
        config = _parse_config(_get(s3, loc, loc.key(name, CONFIG_FILE)), loc.describe(loc.key(name, CONFIG_FILE)))
        record = None
        if META_FILE in objects:
            record = _parse_record(_get(s3, loc, loc.key(name, META_FILE)), loc.describe(loc.key(name, META_FILE)))
            _check_listed(loc, name, objects, folders.get(name, set()), record, warn)
        out.append(RemoteModel(name, config, record))
    if not out:
        raise DeployError(f"{loc.describe()}: no model (no */config.pbtxt) there; push one with `tsrepo push`")
    return out


def _version_folders(loc: uri.S3Location, listing) -> dict[str, set[int]]:
    """Per model, the version folders a server listing the bucket sees: numeric names (no leading zero),
    folder markers ("m/3/", as a console's "create folder" leaves) included."""
    out: dict[str, set[int]] = {}
    for o in listing:
        parts = o.key[len(loc.key_prefix()) :].split("/")
        if len(parts) < 3 or not parts[0] or not (parts[1].isascii() and parts[1].isdigit()):
            continue
        if str(int(parts[1])) == parts[1]:
            out.setdefault(parts[0], set()).add(int(parts[1]))
    return out


def _check_listed(loc: uri.S3Location, name: str, objects: dict, folders: set[int], record, warn) -> None:
    """What a server pointed at the bucket will load, against the record, from the listing alone (a
    cluster's Triton reads the bucket itself, so nothing is downloaded to check hashes). A recorded
    version whose folder is there without its model file stops the render: Triton fails to load it.
    A version folder the record does not list (what an interrupted push leaves) and a recorded version
    with no folder at all are named: the first would load unverified, or fail without a model file; the
    second is not served."""
    model_files = {"model.pt", "model.pt2", *(entry.file for entry in record.versions.values())}
    for version in sorted(folders | set(record.versions)):
        entry = record.versions.get(version)
        where = loc.describe(loc.key(name, str(version)))
        if entry is None:
            if any(f"{version}/{f}" in objects for f in model_files):
                warn(
                    f"{where}: version {version} of {name!r} has no entry in {META_FILE} (an interrupted push?);"
                    " a server on the bucket would load it unverified: push again"
                )
            else:
                warn(
                    f"{where}: version {version} of {name!r} holds no model file and has no entry in {META_FILE}"
                    " (an interrupted push?); Triton fails to load a version it serves without one: push again or"
                    " delete the folder"
                )
        elif version not in folders:
            warn(f"{where}: version {version} of {name!r} is recorded in {META_FILE} but not in the bucket: not served")
        elif f"{version}/{entry.file}" not in objects:
            raise DeployError(
                f"{loc.describe(loc.key(name, str(version), entry.file))}: missing, though the folder and"
                f" {name}/{META_FILE} are there; Triton would fail to load {name!r}: push the repository again"
            )


def cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "tsrepo" / "s3"


def cache_folder(loc: uri.S3Location, root: Path | None = None) -> Path:
    ident = hashlib.sha256(f"{loc.endpoint_url or 'aws'}\n{loc.bucket}\n{loc.prefix}".encode()).hexdigest()[:16]
    return (root or cache_root()) / f"{loc.bucket}-{ident}"


def _download(s3, loc, key: str, dest: Path, previous: Path, old_etag: str | None, etag: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if old_etag == etag and previous.is_file():
        os.link(previous, dest)
        return
    try:
        s3.download_file(loc.bucket, key, str(dest))
    except Exception as e:
        raise remote.translate(e, loc, key, "downloading") from e


def _verify(name: str, staged: Path, loc: uri.S3Location, warn: Callable[[str], None]) -> None:
    """Every version folder's model file against tsrepo.json; unrecorded versions are left out."""
    record_key = loc.key(name, META_FILE)
    record = _parse_record((staged / META_FILE).read_bytes(), loc.describe(record_key))
    for vdir in sorted(p for p in staged.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit()):
        entry = record.versions.get(int(vdir.name))
        if entry is None:
            # What an interrupted push leaves: the version landed, its record did not. Serving it
            # unverified would break the promise, so the copy keeps the model's previous state.
            warn(
                f"{loc.describe(loc.key(name, vdir.name))}: version {vdir.name} of {name!r} has no entry in"
                " tsrepo.json (an interrupted push?); left out of the local copy: push again"
            )
            shutil.rmtree(vdir)
            continue
        model_file = find_model_file(vdir)
        got = hashlib.sha256(model_file.read_bytes()).hexdigest() if model_file.is_file() else None
        if got != entry.sha256:
            what = "is missing" if got is None else f"has sha256 {got[:12]}..., not the recorded {entry.sha256[:12]}..."
            raise DeployError(
                f"{loc.describe(loc.key(name, vdir.name, model_file.name))}: {what}; the bucket does not hold what"
                " tsrepo pushed: push the repository again"
            )


def materialize(
    repo_arg: str | os.PathLike,
    endpoint_url: str | None = None,
    *,
    cache: Path | None = None,
    warn: Callable[[str], None] = lambda _m: None,
) -> Path:
    """A local folder for `repo_arg`: a local path as it is; an s3:// URI downloaded and verified into
    the cache (XDG_CACHE_HOME/tsrepo/s3) and returned whole."""
    if not uri.is_s3(str(repo_arg) if isinstance(repo_arg, str) else ""):
        return Path(repo_arg)
    loc = uri.parse(str(repo_arg), endpoint_url, option="--repo")
    dest = cache_folder(loc, cache)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(dest.parent / f".{dest.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise DeployError(
            f"{dest.parent}: cannot hold the download of {loc.describe()} ({e.strerror or e}); make it writable"
            " or point XDG_CACHE_HOME at a writable folder"
        ) from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # two commands on one URI share one download
        return _materialize_locked(loc, dest, warn)
    finally:
        os.close(lock_fd)


def _snapshot_id(objects: dict[str, dict[str, remote.RemoteObject]]) -> str:
    lines = sorted(f"{o.key} {o.etag} {o.size}" for objs in objects.values() for o in objs.values())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _snapshots(dest: Path) -> list[Path]:
    """Complete snapshots, newest first (a snapshot folder appears by rename only when whole)."""
    if not dest.is_dir():
        return []
    found = [p for p in dest.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / INDEX_FILE).is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _materialize_locked(loc: uri.S3Location, dest: Path, warn) -> Path:
    s3 = remote.client(loc)
    models = _by_model(loc, remote.list_objects(s3, loc, loc.key_prefix()))
    models = {n: objs for n, objs in models.items() if CONFIG_FILE in objs and META_FILE in objs}
    if not models:
        raise DeployError(
            f"{loc.describe()}: no model with config.pbtxt and tsrepo.json there; push one with `tsrepo push`"
        )
    # Snapshots are immutable and named by what the bucket held: a server still running on an older
    # one (its shadow repository links into it) is never pulled from under its feet.
    snap = dest / _snapshot_id(models)
    if (snap / INDEX_FILE).is_file():
        return snap
    previous = next(iter(_snapshots(dest)), None)
    index = {}
    if previous is not None:
        try:
            index = json.loads((previous / INDEX_FILE).read_text())
        except (OSError, ValueError):
            index = {}  # a damaged index only costs a fresh download
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest))
    except OSError as e:
        raise DeployError(f"{dest}: cannot write the local copy of {loc.describe()} ({e.strerror or e})") from None
    try:
        new_index = {}
        for name, objects in sorted(models.items()):
            for rel, obj in sorted(objects.items()):
                old = (previous / name / rel) if previous is not None else staging / ".none"
                _download(s3, loc, obj.key, staging / name / rel, old, index.get(obj.key), obj.etag)
                new_index[obj.key] = obj.etag
            _verify(name, staging / name, loc, warn)
        (staging / INDEX_FILE).write_text(json.dumps(new_index, indent=1, sort_keys=True))
        os.chmod(staging, 0o755)
        os.rename(staging, snap)
    except OSError as e:
        raise DeployError(f"{snap}: cannot write the local copy of {loc.describe()} ({e.strerror or e})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for stale in _snapshots(dest)[KEEP_SNAPSHOTS:]:
        shutil.rmtree(stale, ignore_errors=True)
    return snap
