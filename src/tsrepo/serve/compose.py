"""The docker engine: the official container through docker compose, and the files it needs.

`prepare` picks the image tag from the exported archives, writes it into the compose file as the
default, and writes the KIND_CPU copy of the repository that the CPU service mounts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo.errors import ServeError
from tsrepo.repository import META_FILE
from tsrepo.serve import containers

IMAGE_DEFAULT_RE = re.compile(r"(\$\{TRITON_IMAGE:-)([^}]+)(\})")


@dataclass
class Prepared:
    choice: containers.Choice
    compose_file: Path
    cpu_repo: Path


def exported_torch(repo: Path) -> tuple[str, int | None]:
    """The newest torch version, and highest file format, recorded in the repository's tsrepo.json files."""
    versions: list[tuple[tuple[int, int], str]] = []
    formats: list[int] = []
    for meta in sorted(Path(repo).glob(f"*/{META_FILE}")):
        try:
            doc = json.loads(meta.read_text())
        except ValueError:
            raise ServeError(f"{meta}: not valid JSON; rebuild the model with `tsrepo build --force`") from None
        for entry in doc.get("versions", {}).values():
            if entry.get("torch"):
                versions.append((containers._minor(entry["torch"]), entry["torch"]))
            if entry.get("file_format_version") is not None:
                formats.append(int(entry["file_format_version"]))
    if not versions:
        raise ServeError(f"{repo}: no tsrepo.json with an exporting torch version; build it with `tsrepo build`")
    return max(versions)[1], (max(formats) if formats else None)


def write_image_default(compose_file: Path, image: str) -> bool:
    text = compose_file.read_text()
    new, count = IMAGE_DEFAULT_RE.subn(lambda m: f"{m.group(1)}{image}{m.group(3)}", text)
    if count == 0:
        raise ServeError(f"{compose_file}: no `${{TRITON_IMAGE:-...}}` image line to update")
    if new != text:
        tmp = compose_file.with_name(f".{compose_file.name}.tmp")
        tmp.write_text(new)
        os.replace(tmp, compose_file)
        return True
    return False


def write_cpu_repository(repo: Path, dest: Path) -> None:
    """A copy of `repo` with KIND_GPU groups turned into KIND_CPU; model files hard-linked."""
    repo, dest = Path(repo).resolve(), Path(dest).resolve()
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for src in model_dir.rglob("*"):
                rel = src.relative_to(repo)
                if src.is_dir():
                    (tmp / rel).mkdir(parents=True, exist_ok=True)
                    continue
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                if src.name == "config.pbtxt":
                    cfg = text_format.Parse(src.read_text(), pb.ModelConfig())
                    for g in cfg.instance_group:
                        if g.kind == pb.ModelInstanceGroup.KIND_GPU:
                            g.kind = pb.ModelInstanceGroup.KIND_CPU
                            del g.gpus[:]
                    (tmp / rel).write_text(text_format.MessageToString(cfg))
                else:
                    try:
                        os.link(src, tmp / rel)
                    except OSError:
                        shutil.copy2(src, tmp / rel)
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(repo: Path, compose_file: Path) -> Prepared:
    torch_version, file_format = exported_torch(repo)
    choice = containers.choose(torch_version, file_format)
    if not compose_file.is_file():
        raise ServeError(f"{compose_file}: compose file not found (pass --compose)")
    write_image_default(compose_file, choice.image)
    cpu_repo = Path(repo).resolve().with_name(Path(repo).resolve().name + ".cpu")
    write_cpu_repository(repo, cpu_repo)
    return Prepared(choice, compose_file, cpu_repo)


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
