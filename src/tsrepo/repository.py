"""Plan, then write the model repository atomically.

Each model folder is assembled in a staging folder beside the repository (never inside it:
Triton would take any folder there for a model), existing files hard-linked rather than copied,
then swapped into place with one `renameat2(RENAME_EXCHANGE)`. A build killed at any point leaves
every model folder either as it was or as it should be; nothing is written until every model has
been exported, verified and its config proven. A build of several models lands whole or not at all:
a swap that fails swaps the models already swapped back. Builds on one repository are serialised
by a lock file beside it, and versions are resolved (and existing ones refused) under that lock, so
two racing builds cannot both write version 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from tsrepo import meta
from tsrepo.errors import RepositoryError
from tsrepo.meta import META_FILE

STAGING_MARK = ".tsrepo-staging-"
LOCK_MARK = ".tsrepo-lock"
MODEL_FILE = "model.pt"  # TorchScript; an AOTInductor package is model.pt2 (ModelFiles.model_file)
MODEL_FILES = frozenset({"model.pt", "model.pt2"})
CONFIG_FILE = "config.pbtxt"

__all__ = ["CONFIG_FILE", "META_FILE", "MODEL_FILE", "ModelFiles", "Plan", "check_writable", "locked", "plan", "write"]


@dataclass(frozen=True)
class ModelFiles:
    name: str
    version: int | None  # None: the next free version, resolved under the repository lock
    config_text: str
    model_bytes: bytes
    record: meta.ModelMeta  # tsrepo.json without versions
    version_entry: meta.VersionMeta  # this version's entry in tsrepo.json
    model_file: str = MODEL_FILE  # the file's name inside the version folder: model.pt or model.pt2


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
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit())


def next_version(root: Path, name: str) -> int:
    versions = existing_versions(root / name)
    return (versions[-1] + 1) if versions else 1


def _meta_text(root: Path, m: ModelFiles) -> str:
    """tsrepo.json: this build's record, with the entries of the versions still on disk kept."""
    old = meta.load_model(root / m.name)  # a corrupt file is a MetaError naming it, never silently reset
    on_disk = set(existing_versions(root / m.name))
    record = m.record
    if old is not None:
        record = replace(record, versions={v: e for v, e in old.versions.items() if v in on_disk})
    return record.with_version(m.version, m.version_entry).dumps()


def plan(root: Path, models: list[ModelFiles], force: bool) -> Plan:
    """What the build would write. Versions left open (None) become the next free one."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RepositoryError(f"{root}: exists and is not a folder; choose another --out")
    files: list[PlannedFile] = []
    models = [m if m.version is not None else replace(m, version=next_version(root, m.name)) for m in models]
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
            (Path(m.name) / str(m.version) / m.model_file, m.model_bytes),
        ):
            target = root / rel
            try:
                if not target.exists():
                    status = "new"
                elif target.read_bytes() == data:
                    status = "unchanged"
                else:
                    status = "replaced" if rel.name in MODEL_FILES else "changed"
            except OSError as e:
                raise RepositoryError(f"{target}: cannot be read ({e.strerror or e}); check its permissions") from e
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


def swap_in_folder(staged: Path, dest: Path) -> None:
    """Put the fully staged folder `staged` at `dest`, replacing what was there; if the final rename fails,
    the old folder is put back. (For single folders such as compose's CPU copy and deploy's output; model
    folders use the exchange above.)"""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
    try:
        os.rename(staged, dest)
    except OSError:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
    a mount point, say) where a rename cannot reach, or a folder we may not write; then inside it
    under a hidden name (Triton skips hidden folders)."""
    if (
        root.parent.is_dir()
        and os.stat(root.parent).st_dev == os.stat(root).st_dev
        and probe_writable(root.parent) is None
    ):
        return root.parent
    return root


def probe_writable(folder: Path) -> str | None:
    """None when a file can really be created in `folder` (permissions, read-only mounts and root
    alike), else the reason."""
    try:
        fd, path = tempfile.mkstemp(prefix=".tsrepo-probe-", dir=folder)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    os.unlink(path)
    return None


def check_writable(root: Path, option: str = "--out") -> None:
    """Before any work: the repository (or the folder it will be created in) can be written."""
    root = Path(root)
    probe = root
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: mkdir would fail on it later
            raise RepositoryError(f"{probe}: a broken symbolic link; fix or remove it, or choose another {option}")
        probe = probe.parent
    if not probe.is_dir():
        raise RepositoryError(
            f"{root}: cannot be created, {probe} is a file, not a folder; choose another {option}"
        )
    reason = probe_writable(probe)
    if reason:
        where = "" if probe == root else f" (it would be created in {probe})"
        raise RepositoryError(f"{root}: not writable{where}: {reason}; choose another {option} or fix its permissions")
    if root.is_dir():
        for child in sorted(root.iterdir()):
            # Existing model folders are swapped whole, which needs their own write permission.
            if child.is_dir() and not child.name.startswith(".") and not os.access(child, os.W_OK | os.X_OK):
                raise RepositoryError(
                    f"{child}: the model folder is not writable; fix its permissions or choose another {option}"
                )


def _lock_path(root: Path) -> Path:
    return staging_parent(root) / f".{root.name}{LOCK_MARK}"


@contextlib.contextmanager
def locked(root: Path, on_wait: Callable[[str], None] = lambda _m: None) -> Iterator[None]:
    """Hold the repository's build lock (a flock on a file beside it) for the duration.

    The lock file is left in place: removing it would let a third build lock a fresh file while the
    second still holds the old one."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    path = _lock_path(root)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RepositoryError(f"{path}: cannot create the build lock ({e.strerror or e})") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait(f"waiting for another tsrepo build on {root} to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def clean_stale_staging(root: Path) -> None:
    """Remove staging folders left by builds that were killed."""
    prefix = f".{root.name}{STAGING_MARK}"
    for parent in {root.parent, root}:
        if not parent.is_dir():
            continue
        for p in parent.iterdir():
            if p.name.startswith(prefix):
                pid_text = p.name[len(prefix) :].split("-")[0]
                if pid_text.isascii() and pid_text.isdigit() and not _pid_alive(int(pid_text)):
                    shutil.rmtree(p, ignore_errors=True)


def write(p: Plan, on_model=None) -> None:
    """Write the plan: every model folder lands complete, and either all of them do or none does.

    Call it holding `locked(p.root)` with a plan made under the same lock."""
    root = p.root.resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        clean_stale_staging(root)
        staging = staging_parent(root) / f".{root.name}{STAGING_MARK}{os.getpid()}-{secrets.token_hex(4)}"
        staging.mkdir()
    except OSError as e:
        raise RepositoryError(f"{root}: cannot write the repository: {e.strerror or e} ({e.filename or root})") from e
    try:
        try:
            for m in p.models:
                live = root / m.name
                stage = staging / m.name
                if live.is_dir():
                    _link_tree(live, stage)
                else:
                    stage.mkdir(parents=True)
                # A version rebuilt in the other format (--force) must not keep the old file beside the new one.
                for other in MODEL_FILES - {m.model_file}:
                    (stage / str(m.version) / other).unlink(missing_ok=True)
                for f in p.files:
                    if f.path.parts[0] == m.name:
                        _write_file(staging / f.path, f.data)
                if on_model:
                    on_model(m.name)
        except OSError as e:
            raise RepositoryError(
                f"{root}: staging the new model folders failed ({e.strerror or e}: {e.filename});"
                " nothing in the repository was changed"
            ) from e
        _swap_all(root, staging, [m.name for m in p.models])
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_all(root: Path, staging: Path, names: list[str]) -> None:
    """Swap every staged model folder into place; on a failure, swap the done ones back."""
    done: list[tuple[str, str]] = []  # (name, how): "exchanged" | "renamed" | "created"
    try:
        for name in names:
            live, stage = root / name, staging / name
            if live.exists():
                if _exchange(stage, live):
                    done.append((name, "exchanged"))
                else:
                    os.rename(live, staging / f"{name}.old")
                    try:
                        os.rename(stage, live)
                    except OSError:
                        os.rename(staging / f"{name}.old", live)
                        raise
                    done.append((name, "renamed"))
            else:
                os.rename(stage, live)
                done.append((name, "created"))
    except OSError as e:
        undone = _roll_back(root, staging, done)
        failed = Path(e.filename) if e.filename else root
        tail = "" if not undone else f"; could NOT restore {', '.join(undone)} (the new folders are in place there)"
        raise RepositoryError(
            f"{failed}: replacing the model folder failed ({e.strerror or e}); the models already swapped"
            f" ({', '.join(n for n, _ in done) or 'none'}) were put back, so the repository is as it was{tail}"
        ) from e


def _roll_back(root: Path, staging: Path, done: list[tuple[str, str]]) -> list[str]:
    failed = []
    for name, how in reversed(done):
        live, stage = root / name, staging / name
        try:
            if how == "exchanged":
                if not _exchange(stage, live):
                    raise OSError(errno.ENOSYS, "renameat2 unavailable", str(live))
            elif how == "renamed":
                os.rename(live, stage)
                os.rename(staging / f"{name}.old", live)
            else:
                os.rename(live, stage)
        except OSError:
            failed.append(name)
    return failed
