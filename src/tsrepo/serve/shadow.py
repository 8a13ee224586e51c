"""The shadow repository: the user's repository, re-pointed at the Python backend.

Each `pytorch_libtorch` model keeps its exact config (name, inputs, outputs, dims, max_batch_size,
dynamic batching, instance count, parameters) with only the backend changed to `python`; a generated
`model.py` loads the same `model.pt` (linked, not copied). `KIND_GPU` becomes `KIND_CPU` only when no
GPU is visible. Models of other backends are linked as they are. The user's repository is never
written to.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import config as config_mod
from tsrepo.errors import ServeError

MODEL_TEMPLATE = "model.py.j2"
LIBTORCH_FILE = "model.pt"


@dataclass
class ShadowResult:
    root: Path
    models: list[str]
    warnings: list[str] = field(default_factory=list)


def is_libtorch(cfg: pb.ModelConfig) -> bool:
    return cfg.platform == "pytorch_libtorch" or cfg.backend == "pytorch"


def read_config(model_dir: Path) -> pb.ModelConfig:
    path = model_dir / "config.pbtxt"
    if not path.is_file():
        raise ServeError(
            f"{path}: missing; every model folder needs a config.pbtxt for the libtorch backend"
            " (it has no auto-complete). Build the repository with `tsrepo build`"
        )
    try:
        return text_format.Parse(path.read_text(), pb.ModelConfig())
    except text_format.ParseError as e:
        raise ServeError(f"{path}: Triton's schema rejects it: {e}") from None


def render_runner(model_name: str, templates: Path | None = None) -> str:
    env = config_mod.environment(templates)
    env.filters["pyrepr"] = repr
    try:
        return env.get_template(MODEL_TEMPLATE).render(model_name=model_name, model_file=LIBTORCH_FILE)
    except jinja2.TemplateNotFound:
        raise ServeError(f"{templates}: no {MODEL_TEMPLATE} in the templates folder") from None


def build_shadow(repo: Path, dest: Path, gpu_available: bool, templates: Path | None = None) -> ShadowResult:
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise ServeError(f"{repo}: no such model repository; build one with `tsrepo build`")
    dest.mkdir(parents=True, exist_ok=True)
    result = ShadowResult(dest, [])
    runner = None
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cfg = read_config(model_dir)
        name = cfg.name or model_dir.name
        result.models.append(name)
        target = dest / model_dir.name
        if not is_libtorch(cfg):
            os.symlink(model_dir, target)
            continue
        versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        if not versions:
            raise ServeError(f"{model_dir}: no version folder (e.g. 1/model.pt)")
        cfg.platform = ""
        cfg.backend = "python"
        if not gpu_available:
            for group in cfg.instance_group:
                if group.kind == pb.ModelInstanceGroup.KIND_GPU:
                    group.kind = pb.ModelInstanceGroup.KIND_CPU
                    del group.gpus[:]
                    result.warnings.append(
                        f"{name}: no GPU is visible, so its KIND_GPU instance group runs as KIND_CPU"
                    )
        target.mkdir()
        (target / "config.pbtxt").write_text(text_format.MessageToString(cfg))
        for extra in model_dir.iterdir():
            # Sidecars (tsrepo.json, READMEs) stay beside the config, as in the real repository:
            # Triton ignores files and non-numeric folders in a model folder.
            if extra.name != "config.pbtxt" and not (extra.is_dir() and extra.name.isdigit()):
                os.symlink(extra.resolve(), target / extra.name)
        runner = runner or render_runner(name, templates)
        for v in versions:
            (target / v.name).mkdir()
            (target / v.name / "model.py").write_text(runner)
            model_file = v / LIBTORCH_FILE
            if model_file.exists():
                os.symlink(model_file.resolve(), target / v.name / LIBTORCH_FILE)
    if not result.models:
        raise ServeError(f"{repo}: the repository has no models")
    return result


def remove(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
