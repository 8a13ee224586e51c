"""Plan, then write the model repository atomically.

Each model folder is assembled in a staging folder beside the repository (never inside it:
Triton would take any folder there for a model), existing files hard-linked rather than copied,
then swapped into place with one `renameat2(RENAME_EXCHANGE)`. A build killed at any point leaves
every model folder either as it was or as it should be; nothing is written until every model has
been exported, verified and its config proven.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tsrepo.errors import RepositoryError

STAGING_MARK = ".tsrepo-staging-"
MODEL_FILE = "model.pt"
META_FILE = "tsrepo.json"
CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class ModelFiles:
    name: str
    version: int
    config_text: str
    model_bytes: bytes
    meta: dict  # this version's entry for tsrepo.json
    shared_meta: dict = field(default_factory=dict)  # model-level entries for tsrepo.json


@dataclass(frozen=True)
class PlannedFile:
    path: Path  # relative to the repository
    data: bytes
    status: str  # new | changed | unchanged | replaced


@dataclass
class Plan:
    root: Path
    files: list[PlannedFile]
    models: list[ModelFiles]

    def tree(self) -> str:
        lines = [f"{self.root}/"]
        by_model: dict[str, list[PlannedFile]] = {}
        for f in self.files:
            by_model.setdefault(f.path.parts[0], []).append(f)
        names = sorted(by_model)
        for mi, name in enumerate(names):
            last_model = mi == len(names) - 1
            lines.append(f"{'└── ' if last_model else '├── '}{name}/")
            files = by_model[name]
            for fi, f in enumerate(files):
                branch = "└── " if fi == len(files) - 1 else "├── "
                rel = "/".join(f.path.parts[1:])
                size = _human(len(f.data))
                lines.append(f"{'    ' if last_model else '│   '}{branch}{rel:<22} {f.status:<9} {size}")
        return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def existing_versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(root: Path, name: str) -> int:
    versions = existing_versions(root / name)
    return (versions[-1] + 1) if versions else 1


def _meta_text(root: Path, m: ModelFiles) -> str:
    path = root / m.name / META_FILE
    versions: dict = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            versions = {k: v for k, v in old.get("versions", {}).items() if (root / m.name / k).is_dir()}
        except (ValueError, AttributeError):
            versions = {}
    versions[str(m.version)] = m.meta
    doc = {**m.shared_meta, "versions": {k: versions[k] for k in sorted(versions, key=int)}}
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def plan(root: Path, models: list[ModelFiles], force: bool) -> Plan:
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RepositoryError(f"{root}: exists and is not a folder; choose another --out")
    files: list[PlannedFile] = []
    for m in models:
        model_dir = root / m.name
        version_dir = model_dir / str(m.version)
        if version_dir.exists() and not force:
            raise RepositoryError(
                f"{version_dir}: version {m.version} of {m.name!r} exists; pass --force to"
                " overwrite it, or drop `version` from the spec to write the next free one"
            )
        for rel, data in (
            (Path(m.name) / CONFIG_FILE, m.config_text.encode()),
            (Path(m.name) / META_FILE, _meta_text(root, m).encode()),
            (Path(m.name) / str(m.version) / MODEL_FILE, m.model_bytes),
        ):
            target = root / rel
            if not target.exists():
                status = "new"
            elif target.read_bytes() == data:
                status = "unchanged"
            else:
                status = "replaced" if rel.name == MODEL_FILE else "changed"
            files.append(PlannedFile(rel, data, status))
    return Plan(root, files, models)


def _link_tree(src: Path, dst: Path) -> None:
    """Mirror `src` into `dst` with hard links (copies where links are not possible)."""
    for dirpath, _dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for fn in filenames:
            s, d = Path(dirpath) / fn, dst / rel / fn
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()  # may be a hard link into the live repository: never write through it
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_parent(root: Path) -> Path:
    """Where to stage: beside the repository, unless that is another filesystem (the repository is
    a mount point, say), where a rename cannot reach; then inside it under a hidden name."""
    if root.parent.is_dir() and os.stat(root.parent).st_dev == os.stat(root).st_dev:
        return root.parent
    return root


def clean_stale_staging(root: Path) -> None:
    """Remove staging folders left by builds that were killed."""
    prefix = f".{root.name}{STAGING_MARK}"
    for parent in {root.parent, root}:
        if not parent.is_dir():
            continue
        for p in parent.iterdir():
            if p.name.startswith(prefix):
                pid_text = p.name[len(prefix) :].split("-")[0]
                if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                    shutil.rmtree(p, ignore_errors=True)


def write(p: Plan, on_model=None) -> None:
    """Write the plan; each model folder appears complete or not at all."""
    root = p.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(root)
    staging = staging_parent(root) / f".{root.name}{STAGING_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        for m in p.models:
            live = root / m.name
            stage = staging / m.name
            if live.is_dir():
                _link_tree(live, stage)
            else:
                stage.mkdir(parents=True)
            for f in p.files:
                if f.path.parts[0] == m.name:
                    _write_file(staging / f.path, f.data)
            if on_model:
                on_model(m.name)
        # Every model is staged in full; now swap each folder into place.
        for m in p.models:
            live, stage = root / m.name, staging / m.name
            if live.exists():
                if not _exchange(stage, live):
                    trash = staging / f"{m.name}.old"
                    os.rename(live, trash)
                    os.rename(stage, live)
            else:
                os.rename(stage, live)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
