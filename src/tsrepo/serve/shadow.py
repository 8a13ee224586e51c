"""The user's repository as both engines read it, and the local engine's shadow of it.

`model_dirs`, `read_config` and `version_dirs` check a repository the way Triton will load it, so a
bad one is refused (exit 2, naming the file) before any server starts or any file is written.

The shadow repository re-points it at the Python backend: each `pytorch_libtorch` model keeps its
exact config (name, inputs, outputs, dims, max_batch_size, dynamic batching, instance count,
parameters) with only the backend changed to `python`; a generated `model.py` loads the same
`model.pt` (linked, not copied). A `torch_aoti` model (an AOTInductor `model.pt2`, PyTorch backend
26.03+) is shadowed the same way: the runner loads the package with `torch._inductor.aoti_load_package`
and binds INPUT__i / OUTPUT__i by position. `KIND_GPU` becomes `KIND_CPU` only when no GPU is visible
(a package compiled for CUDA cannot run there: its load fails and the server names it). Models of
other backends are linked as they are. The user's repository is never written to.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import config as config_mod
from tsrepo import modelfile
from tsrepo.errors import ServeError
from tsrepo.spec import NAME_RE

MODEL_TEMPLATE = "model.py.j2"
LIBTORCH_FILE = "model.pt"
AOTI_FILE = "model.pt2"  # the PyTorch backend's default for platform torch_aoti (26.03+)
# Triton reads only folders named by a plain decimal number as versions (str.isdigit also takes "²").
VERSION_RE = re.compile(r"[0-9]+")


@dataclass
class ShadowResult:
    root: Path
    models: list[str]
    warnings: list[str] = field(default_factory=list)


def is_libtorch(cfg: pb.ModelConfig) -> bool:
    """Served by the PyTorch backend: TorchScript (pytorch_libtorch) or an AOTInductor package (torch_aoti)."""
    return cfg.platform in ("pytorch_libtorch", "torch_aoti") or cfg.backend == "pytorch"


def is_aoti(cfg: pb.ModelConfig) -> bool:
    return cfg.platform == "torch_aoti"


def model_dirs(repo: Path) -> list[Path]:
    """The model folders of `repo` (symlinks followed), refusing a repository without any."""
    repo = Path(repo)
    if not repo.exists():
        raise ServeError(f"{repo}: no such model repository (--repo); build one with `tsrepo build`")
    if not repo.is_dir():
        raise ServeError(f"{repo}: not a folder; --repo takes a model repository folder")
    try:
        dirs = sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise ServeError(f"{repo}: cannot be read ({e.strerror})") from None
    for d in dirs:
        # The name is the model's address in URLs, metrics labels and tsrepo's own files; tsrepo
        # build writes only these characters, and a name outside them is refused rather than
        # served under an address that needs escaping.
        if not NAME_RE.fullmatch(d.name):
            raise ServeError(
                f"{d}: the model folder name {d.name!r} has characters a served model name cannot have;"
                " use letters, digits, '_', '.' and '-' only, starting with a letter, digit or '_'"
            )
    if not dirs:
        raise ServeError(f"{repo}: the repository has no models (--repo); build one with `tsrepo build`")
    return dirs


def read_config(model_dir: Path) -> pb.ModelConfig:
    """The folder's config.pbtxt, parsed with Triton's schema; its `name` must be the folder's."""
    path = model_dir / "config.pbtxt"
    if not path.is_file():
        raise ServeError(
            f"{path}: missing; every model folder needs a config.pbtxt for the libtorch backend"
            " (it has no auto-complete). Build the repository with `tsrepo build`"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ServeError(f"{path}: not UTF-8 text (byte {e.start}); Triton reads config.pbtxt as UTF-8") from None
    except OSError as e:
        raise ServeError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        cfg = text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as e:
        raise ServeError(f"{path}: Triton's schema rejects it: {e}") from None
    if cfg.name and cfg.name != model_dir.name:
        raise ServeError(
            f"{path}: `name` is {cfg.name!r} but the folder is {model_dir.name!r}; Triton loads a model only"
            " under its folder's name: rename one of them to match"
        )
    return cfg


def version_dirs(model_dir: Path) -> list[Path]:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and VERSION_RE.fullmatch(p.name)]
    if not versions:
        raise ServeError(f"{model_dir}: no version folder (e.g. 1/model.pt); build it with `tsrepo build`")
    return sorted(versions, key=lambda p: int(p.name))


def libtorch_file(cfg: pb.ModelConfig) -> str:
    return modelfile.file_name(cfg)


def runner_template(templates: Path | None = None) -> jinja2.Template:
    env = config_mod.environment(templates)
    env.filters["pyrepr"] = repr
    path = (templates or config_mod.templates_dir()) / MODEL_TEMPLATE
    try:
        return env.get_template(MODEL_TEMPLATE)
    except jinja2.TemplateNotFound:
        raise ServeError(
            f"{path}: missing; a --templates folder for serve needs {MODEL_TEMPLATE}"
            f" (start from {config_mod.templates_dir() / MODEL_TEMPLATE})"
        ) from None
    except jinja2.TemplateSyntaxError as e:
        raise ServeError(f"{e.filename or path}:{e.lineno}: template syntax error: {e.message}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ServeError(f"{path}: cannot be read as UTF-8 text ({e})") from None


def render_runner(template: jinja2.Template, model_name: str, model_file: str = LIBTORCH_FILE) -> str:
    try:
        text = template.render(model_name=model_name, model_file=model_file)
    except jinja2.UndefinedError as e:
        raise ServeError(f"{template.filename}: uses an undefined value: {e.message}") from None
    except Exception as e:  # a user's template evaluates expressions: any failure there is theirs to fix
        raise ServeError(f"{template.filename}: rendering failed: {type(e).__name__}: {e}") from None
    try:
        compile(text, "model.py", "exec")
    except SyntaxError as e:
        raise ServeError(
            f"{template.filename}: renders a model.py that is not valid Python (its line {e.lineno}: {e.msg})"
        ) from None
    return text


def read_model(model_dir: Path) -> tuple[pb.ModelConfig, list[Path]]:
    """The folder's config and version folders, checked as Triton will load them."""
    cfg = read_config(model_dir)
    versions = version_dirs(model_dir)
    if is_libtorch(cfg):
        config_mod.check_thread_counts(cfg, str(model_dir / "config.pbtxt"))
        for v in versions:
            model_file = v / libtorch_file(cfg)
            if not model_file.is_file():
                backend = "torch_aoti" if is_aoti(cfg) else "libtorch"
                raise ServeError(f"{model_file}: missing; the {backend} backend loads this file for version {v.name}")
    return cfg, versions


def served_config(cfg: pb.ModelConfig, gpu_available: bool) -> pb.ModelConfig:
    """The config the local engine serves for a libtorch model: the same config, on the Python backend.

    Also what `tsrepo tune` loads through the repository API for each candidate, so a swapped config
    and a shadow-built one are the same thing."""
    out = pb.ModelConfig()
    out.CopyFrom(cfg)
    if not is_libtorch(out):
        return out
    out.platform = ""
    out.backend = "python"
    # The Python backend reads default_model_filename as the name of its model.py.
    out.default_model_filename = ""
    if not gpu_available:
        for group in out.instance_group:
            if group.kind == pb.ModelInstanceGroup.KIND_GPU:
                group.kind = pb.ModelInstanceGroup.KIND_CPU
                del group.gpus[:]
    return out


def build_shadow(repo: Path, dest: Path, gpu_available: bool, templates: Path | None = None) -> ShadowResult:
    # Every check runs before the first file is written, so a bad repository leaves nothing behind.
    models = [(model_dir, *read_model(model_dir)) for model_dir in model_dirs(repo)]
    template = runner_template(templates)

    dest.mkdir(parents=True, exist_ok=True)
    result = ShadowResult(dest, [])
    for model_dir, cfg, versions in models:
        name = model_dir.name
        result.models.append(name)
        target = dest / name
        if not is_libtorch(cfg):
            os.symlink(model_dir.resolve(), target)
            continue
        source_file = libtorch_file(cfg)
        # The runner finds the file under the backend's default name and loads it by its kind.
        shadow_file = AOTI_FILE if is_aoti(cfg) else LIBTORCH_FILE
        if not gpu_available and any(g.kind == pb.ModelInstanceGroup.KIND_GPU for g in cfg.instance_group):
            result.warnings.append(f"{name}: no GPU is visible, so its KIND_GPU instance group runs as KIND_CPU")
        cfg = served_config(cfg, gpu_available)
        target.mkdir()
        (target / "config.pbtxt").write_text(text_format.MessageToString(cfg))
        for extra in model_dir.iterdir():
            # Sidecars (tsrepo.json, READMEs) stay beside the config, as in the real repository:
            # Triton ignores files and non-numeric folders in a model folder.
            if extra.name != "config.pbtxt" and extra not in versions:
                os.symlink(extra.resolve(), target / extra.name)
        runner = render_runner(template, name, shadow_file)
        for v in versions:
            (target / v.name).mkdir()
            (target / v.name / "model.py").write_text(runner)
            os.symlink((v / source_file).resolve(), target / v.name / shadow_file)
    return result


def remove(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
