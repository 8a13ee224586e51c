"""The docker engine: the official container through docker compose, and the files it needs.

`plan` reads and checks everything first (the compose file, every config.pbtxt with Triton's
schema, every tsrepo.json) and picks the image tag; `apply` then writes the KIND_CPU copy of the
repository that the CPU service mounts and the compose file's default image, each staged beside its
target and renamed into place. A failure at any point leaves both as they were.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import meta
from tsrepo.errors import ServeError
from tsrepo.repository import swap_in_folder
from tsrepo.serve import containers, shadow

IMAGE_DEFAULT_RE = re.compile(r"(\$\{TRITON_IMAGE:-)([^}]+)(\})")


@dataclass
class Plan:
    choice: containers.Choice
    compose_file: Path
    compose_text: str  # the compose file with the chosen image as its default
    cpu_repo: Path
    models: list[tuple[Path, pb.ModelConfig]]
    warnings: list[str] = field(default_factory=list)
    ops_text: str | None = None  # docker-compose.ops.yml: custom-op libraries mounted and preloaded


@dataclass
class Prepared:
    choice: containers.Choice
    compose_file: Path
    cpu_repo: Path
    warnings: list[str] = field(default_factory=list)
    ops_file: Path | None = None


def exported_torch(model_dirs: list[Path]) -> tuple[str | None, int | None, list[str]]:
    """The newest exporting torch and highest file format recorded in the models' tsrepo.json files,
    and the models that record none."""
    versions: list[tuple[tuple[int, int], str]] = []
    formats: list[int] = []
    unknown: list[str] = []
    for model_dir in model_dirs:
        record = meta.load_model(model_dir)
        if record is None or not record.versions:
            unknown.append(model_dir.name)
            continue
        for entry in record.versions.values():
            versions.append((entry.torch_minor(), entry.torch))
            if entry.file_format_version is not None:
                formats.append(entry.file_format_version)
    return (max(versions)[1] if versions else None), (max(formats) if formats else None), unknown


def read_compose_file(compose_file: Path) -> str:
    if not compose_file.exists():
        raise ServeError(f"{compose_file}: compose file not found (--compose)")
    if not compose_file.is_file():
        raise ServeError(f"{compose_file}: not a file; --compose takes a docker compose file")
    try:
        text = compose_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ServeError(f"{compose_file}: cannot be read as UTF-8 text ({e}) (--compose)") from None
    if not IMAGE_DEFAULT_RE.search(text):
        raise ServeError(
            f"{compose_file}: no `image: ${{TRITON_IMAGE:-...}}` line for tsrepo to set the image in (--compose);"
            " start from docker/docker-compose.yml"
        )
    return text


def check_writable(compose_file: Path) -> None:
    # The new file is renamed over the old one, which needs the folder writable as well.
    target = compose_file.resolve()
    if not (os.access(target, os.W_OK) and os.access(target.parent, os.W_OK)):
        raise ServeError(f"{compose_file}: not writable (--compose); tsrepo sets the default image in it")


def with_image_default(text: str, image: str) -> str:
    return IMAGE_DEFAULT_RE.sub(lambda m: f"{m.group(1)}{image}{m.group(3)}", text)


def cpu_repository_path(repo: Path) -> Path:
    resolved = Path(repo).resolve()
    return resolved.with_name(resolved.name + ".cpu")


def plan(repo: Path, compose_file: Path) -> Plan:
    """Everything `apply` will write, checked; nothing is written here."""
    compose_file = Path(compose_file)
    text = read_compose_file(compose_file)
    models = [(model_dir, shadow.read_model(model_dir)[0]) for model_dir in shadow.model_dirs(repo)]
    torch_version, file_format, unknown = exported_torch([d for d, _ in models])
    if torch_version is None:
        raise ServeError(
            f"{repo}: no model has a tsrepo.json with the torch version that exported it, so no container"
            " can be chosen; build the repository with `tsrepo build`"
        )
    aoti = [cfg for _d, cfg in models if cfg.platform == "torch_aoti"]
    batched = any(cfg.max_batch_size > 1 and cfg.HasField("dynamic_batching") for cfg in aoti)
    choice = containers.choose(torch_version, file_format, aoti=bool(aoti), aoti_batched=batched)
    warnings = [choice.warning] if choice.warning else []
    if unknown:
        warnings.append(
            f"{', '.join(unknown)}: no tsrepo.json records the torch that exported "
            f"{'it' if len(unknown) == 1 else 'them'}, so the choice of {choice.image} does not cover"
            f" {'it' if len(unknown) == 1 else 'them'}; rebuild with `tsrepo build` to record it"
        )
    new_text = with_image_default(text, choice.image)
    if new_text != text:
        check_writable(compose_file)
    cpu_repo = cpu_repository_path(repo)
    if cpu_repo.exists() and not cpu_repo.is_dir():
        raise ServeError(f"{cpu_repo}: not a folder; tsrepo writes the KIND_CPU copy of {repo} there: move it away")
    if not os.access(cpu_repo.parent, os.W_OK):
        raise ServeError(f"{cpu_repo.parent}: not writable; tsrepo writes the KIND_CPU copy {cpu_repo.name} there")
    libraries = op_libraries([d for d, _ in models])
    for lib in libraries:
        if not Path(lib).is_file():
            raise ServeError(
                f"{lib}: a custom-op library the models record in tsrepo.json is gone; rebuild it (against"
                f" {choice.image}'s PyTorch) or rebuild the model"
            )
    if libraries:
        warnings.append(
            f"custom-op libraries ({', '.join(Path(p).name for p in libraries)}) are mounted and preloaded by"
            f" {ops_file_path(compose_file).name}; they must be built against {choice.image}'s PyTorch"
        )
    ops_text = ops_override(libraries) if libraries else None
    return Plan(choice, compose_file, new_text, cpu_repo, models, warnings, ops_text)


# Triton's PyTorch backend has no config field for op libraries (server docs, user_guide/
# custom_operations.md): the server process must preload them, with the backend's folder on the library
# path so their libtorch dependencies resolve. The override wraps NVIDIA's entrypoint rather than setting
# `environment`, because compose cannot extend the image's own LD_LIBRARY_PATH.
OPS_MOUNT = "/opt/tsrepo/ops"
OPS_FILE = "docker-compose.ops.yml"


def op_libraries(model_dirs: list[Path]) -> list[str]:
    """Every custom-op library the models' tsrepo.json files record (ones the backend provides left out)."""
    found: list[str] = []
    for model_dir in model_dirs:
        record = meta.load_model(model_dir)
        for path in record.libraries() if record else ():
            if path not in found:
                found.append(path)
    names = [Path(p).name for p in found]
    if len(set(names)) != len(names):
        raise ServeError(f"two op libraries share a file name ({names}); they are mounted side by side: rename one")
    return found


def ops_file_path(compose_file: Path) -> Path:
    return Path(compose_file).resolve().parent / OPS_FILE


def ops_override(libraries: list[str]) -> str:
    """A compose override file that mounts the libraries read-only and preloads them in both services."""
    mounts = [f"{OPS_MOUNT}/{Path(p).name}" for p in libraries]
    preload = ":".join(mounts)
    script = (
        f"export LD_PRELOAD={preload} LD_LIBRARY_PATH=/opt/tritonserver/backends/pytorch:$${{LD_LIBRARY_PATH:-}};"
        ' exec "$$@"'
    )
    volumes = "".join(f'      - "{p}:{m}:ro"\n' for p, m in zip(libraries, mounts, strict=True))
    service = (
        f'    entrypoint: ["/opt/nvidia/nvidia_entrypoint.sh", "/bin/sh", "-c", {json.dumps(script)}, "tsrepo-ops"]\n'
        f"    volumes:\n{volumes}"
    )
    return (
        "# Written by `tsrepo compose`: the custom-op libraries the models record in tsrepo.json, mounted and\n"
        "# preloaded as Triton's PyTorch backend requires. Use it beside the main file:\n"
        f"#   docker compose -f docker-compose.yml -f {OPS_FILE} up\n"
        f"services:\n  triton:\n{service}  triton-cpu:\n{service}"
    )


def cpu_config(cfg: pb.ModelConfig) -> pb.ModelConfig:
    cpu = pb.ModelConfig()
    cpu.CopyFrom(cfg)
    for g in cpu.instance_group:
        if g.kind == pb.ModelInstanceGroup.KIND_GPU:
            g.kind = pb.ModelInstanceGroup.KIND_CPU
            del g.gpus[:]
    return cpu


def _stage_cpu_repository(models: list[tuple[Path, pb.ModelConfig]], dest: Path) -> Path:
    """The KIND_CPU copy in a temp folder beside `dest`; model files hard-linked where possible."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide it from a container running as another user
        for model_dir, cfg in models:
            out = tmp / model_dir.name
            out.mkdir()
            (out / "config.pbtxt").write_text(text_format.MessageToString(cpu_config(cfg)))
            # followlinks: a symlinked version folder must be copied, not left empty; the container
            # cannot follow links that point outside the mounted folder anyway.
            for root, _dirs, files in os.walk(model_dir, followlinks=True):
                rel = Path(root).relative_to(model_dir)
                (out / rel).mkdir(exist_ok=True)
                for name in files:
                    src = Path(root) / name
                    if (rel == Path(".") and name == "config.pbtxt") or not src.exists():
                        continue
                    try:
                        os.link(src, out / rel / name)
                    except OSError:
                        shutil.copy2(src, out / rel / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def apply(planned: Plan) -> Prepared:
    """Write the KIND_CPU copy, then the compose file; each staged first and renamed into place."""
    target = planned.compose_file.resolve()  # a symlinked compose file is updated through its link
    staged = tmp_compose = None
    try:
        staged = _stage_cpu_repository(planned.models, planned.cpu_repo)
        if planned.compose_text != target.read_text(encoding="utf-8"):
            tmp_compose = target.with_name(f".{target.name}.tsrepo-{os.getpid()}.tmp")
            tmp_compose.write_text(planned.compose_text, encoding="utf-8")
            shutil.copymode(target, tmp_compose)
        ops_file = ops_file_path(target) if planned.ops_text is not None else None
        if ops_file is not None:
            tmp_ops = ops_file.with_name(f".{ops_file.name}.tsrepo-{os.getpid()}.tmp")
            tmp_ops.write_text(planned.ops_text, encoding="utf-8")
        swap_in_folder(staged, planned.cpu_repo)
        staged = None
        if tmp_compose is not None:
            os.replace(tmp_compose, target)
            tmp_compose = None
        if ops_file is not None:
            os.replace(tmp_ops, ops_file)
    except OSError as e:
        raise ServeError(f"cannot write {planned.cpu_repo} (KIND_CPU copy) or {planned.compose_file}: {e}") from None
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        if tmp_compose is not None:
            tmp_compose.unlink(missing_ok=True)
    return Prepared(planned.choice, planned.compose_file, planned.cpu_repo, planned.warnings, ops_file)


def prepare(repo: Path, compose_file: Path) -> Prepared:
    return apply(plan(repo, compose_file))


def compose_command() -> list[str]:
    """`docker compose` (plugin) where it exists, else the standalone `docker-compose`."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise ServeError("neither `docker compose` nor `docker-compose` is installed; use --engine local")


def check_engine() -> None:
    if not shutil.which("docker"):
        raise ServeError("the docker client is not installed; use --engine local")
    probe = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        reason = (probe.stderr or probe.stdout).strip().splitlines()
        raise ServeError(
            "no Docker engine is reachable"
            f" ({reason[-1] if reason else 'docker info failed'}); start one, or use --engine local"
        )
