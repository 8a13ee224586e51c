"""The local repository as the objects a push uploads, each model checked against its tsrepo.json.

Nothing leaves the machine that tsrepo cannot vouch for: every config must parse with Triton's
schema, every version folder must hold a model file whose sha256 is the one `tsrepo build` recorded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tsrepo import meta, repository
from tsrepo.deploy.errors import DeployError
from tsrepo.errors import MetaError
from tsrepo.repository import CONFIG_FILE, META_FILE, MODEL_FILE

CHUNK = 1 << 20
# TorchScript model.pt, or an AOTInductor model.pt2 where the build writes those.
MODEL_FILES = tuple(sorted(getattr(repository, "MODEL_FILES", {MODEL_FILE})))


def model_file(version_dir: Path) -> Path:
    """The version's model file: the first of MODEL_FILES that exists, else model.pt (to name in errors)."""
    return next((version_dir / n for n in MODEL_FILES if (version_dir / n).is_file()), version_dir / MODEL_FILE)


@dataclass(frozen=True)
class LocalFile:
    rel: str  # "model/1/model.pt", the key below the prefix
    path: Path
    sha256: str
    size: int
    version: int | None  # the version folder it lies in; None for model-level files


@dataclass(frozen=True)
class LocalModel:
    name: str
    files: tuple[LocalFile, ...]  # in upload order: version files (model file last), tsrepo.json, config.pbtxt
    versions: tuple[int, ...]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _file(root: Path, path: Path, version: int | None) -> LocalFile:
    try:
        return LocalFile(path.relative_to(root).as_posix(), path, sha256_file(path), path.stat().st_size, version)
    except OSError as e:
        raise DeployError(f"{path}: cannot be read ({e.strerror or e}); check its permissions") from None


def _check_config(path: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    try:
        text_format.Parse(path.read_text(encoding="utf-8"), pb.ModelConfig())
    except (OSError, UnicodeDecodeError, text_format.ParseError) as e:
        raise DeployError(f"{path}: not a config Triton can read ({e}); rebuild it with `tsrepo build`") from None


def scan_model(root: Path, model_dir: Path) -> LocalModel:
    name = model_dir.name
    config, record_path = model_dir / CONFIG_FILE, model_dir / META_FILE
    if not config.is_file():
        raise DeployError(f"{config}: missing; every model folder needs one (build it with `tsrepo build`)")
    _check_config(config)
    try:
        record = meta.load_model(model_dir)
    except MetaError as e:
        raise DeployError(str(e)) from None
    if record is None:
        raise DeployError(
            f"{record_path}: missing; tsrepo pushes only models it can verify: build {name!r} with `tsrepo build`"
        )
    version_files: list[LocalFile] = []
    versions: list[int] = []
    others: list[LocalFile] = []
    for entry in sorted(model_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and entry.name.isascii() and entry.name.isdigit():
            version = int(entry.name)
            expected = record.versions.get(version)
            model_path = model_file(entry)
            if expected is None or not model_path.is_file():
                why = "has no entry in tsrepo.json" if expected is None else f"has no {' or '.join(MODEL_FILES)}"
                raise DeployError(f"{entry}: version {version} of {name!r} {why}; rebuild it with `tsrepo build`")
            files = [
                _file(root, p, version)
                for p in sorted(entry.rglob("*"))
                if p.is_file() and p != model_path and not p.name.startswith(".")
            ]
            checked = _file(root, model_path, version)
            if checked.sha256 != expected.sha256:
                raise DeployError(
                    f"{model_path}: sha256 {checked.sha256[:12]}... is not the {expected.sha256[:12]}... recorded in"
                    f" {record_path}; the file changed after `tsrepo build`: rebuild the model"
                )
            # The model file goes last within its version: the backend loads only that file.
            version_files += [*files, checked]
            versions.append(version)
        elif entry.is_file() and entry.name not in (CONFIG_FILE, META_FILE):
            others.append(_file(root, entry, None))
        elif entry.is_dir():
            others += [_file(root, p, None) for p in sorted(entry.rglob("*")) if p.is_file()]
    if not versions:
        raise DeployError(f"{model_dir}: {name!r} has no version folder; build it with `tsrepo build`")
    # A polling server must never see half a model: versions first, then the sidecars, then the record,
    # and config.pbtxt last, as the commit point of the model.
    ordered = (*version_files, *others, _file(root, record_path, None), _file(root, config, None))
    return LocalModel(name, ordered, tuple(versions))


def scan(root: Path) -> list[LocalModel]:
    root = Path(root)
    if not root.is_dir():
        raise DeployError(f"{root}: no such model repository folder (REPO); build one with `tsrepo build`")
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DeployError(f"{root}: cannot be read ({e.strerror or e})") from None
    if not dirs:
        raise DeployError(f"{root}: the repository has no models; build one with `tsrepo build`")
    return [scan_model(root, d) for d in dirs]


def walk_size(models: list[LocalModel]) -> int:
    return sum(f.size for m in models for f in m.files)


__all__ = ["LocalFile", "LocalModel", "scan", "sha256_file"]
