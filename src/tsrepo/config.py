"""Typed model config -> Jinja2 template -> config.pbtxt text -> parsed back and proven.

The rendered text is parsed with Triton's own schema (`model_config_pb2.ModelConfig`) and compared
with a proto built straight from the typed config: a template that drops or garbles a field fails
the build, not the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
from google.protobuf import text_encoding, text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo.errors import ConfigError
from tsrepo.spec import BOOL_PARAMETERS, INT_PARAMETERS, DynamicBatching, VersionPolicy

CONFIG_TEMPLATE = "config.pbtxt.j2"
INDEX_NAME_RE = re.compile(r".+__(\d+)")  # used with fullmatch


@dataclass(frozen=True)
class TensorConfig:
    name: str
    data_type: str  # TYPE_*
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class InstanceGroupConfig:
    kind: str  # KIND_GPU | KIND_CPU
    count: int
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class WarmupConfig:
    name: str
    batch_size: int
    count: int
    inputs: tuple[TensorConfig, ...]  # concrete dims; integer inputs get zero data


@dataclass(frozen=True)
class ModelConfig:
    name: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    instance_groups: tuple[InstanceGroupConfig, ...] = ()
    dynamic_batching: DynamicBatching | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    warmup: tuple[WarmupConfig, ...] = ()
    version_policy: VersionPolicy | None = None
    platform: str = "pytorch_libtorch"
    backend: str = ""  # "pytorch" for torch_aoti; left out for TorchScript (the platform names the backend)


def pbstr(value: str) -> str:
    """A protobuf text-format string literal: quotes, backslashes and newlines escaped."""
    return '"' + text_encoding.CEscape(str(value), as_utf8=True) + '"'


def templates_dir() -> Path:
    """The shipped templates: the repository's top-level templates/ or the wheel's copy."""
    repo = Path(__file__).resolve().parents[2] / "templates"
    if (repo / CONFIG_TEMPLATE).is_file():
        return repo
    return Path(str(resources.files("tsrepo") / "templates"))


def environment(folder: Path | None = None) -> jinja2.Environment:
    folder = folder or templates_dir()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["pbstr"] = pbstr
    return env


def load_template(folder: Path | None = None, name: str = CONFIG_TEMPLATE) -> jinja2.Template:
    """The template, or a ConfigError naming the file (and line) that is missing or broken."""
    env = environment(folder)
    try:
        return env.get_template(name)
    except jinja2.TemplateNotFound:
        raise ConfigError(f"{folder}: no {name} in the templates folder (--templates)") from None
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"{e.filename}:{e.lineno}: template syntax error: {e.message}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{Path(folder or templates_dir()) / name}: cannot be read ({e})") from None


def render(config: ModelConfig, folder: Path | None = None) -> str:
    template = load_template(folder)
    try:
        return template.render(model=config)
    except jinja2.TemplateError as e:
        raise ConfigError(f"{template.filename}: rendering failed: {e.message or e}") from None
    except Exception as e:  # a filter or expression in a user's template raised
        raise ConfigError(f"{template.filename}: rendering failed: {type(e).__name__}: {e}") from None


def to_proto(config: ModelConfig) -> pb.ModelConfig:
    m = pb.ModelConfig(name=config.name, platform=config.platform, max_batch_size=config.max_batch_size)
    if config.backend:
        m.backend = config.backend
    for t in config.inputs:
        i = m.input.add(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=list(t.dims))
        if t.reshape is not None:
            i.reshape.SetInParent()
            i.reshape.shape.extend(t.reshape)
    for t in config.outputs:
        o = m.output.add(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=list(t.dims))
        if t.reshape is not None:
            o.reshape.SetInParent()
            o.reshape.shape.extend(t.reshape)
    for g in config.instance_groups:
        m.instance_group.add(kind=pb.ModelInstanceGroup.Kind.Value(g.kind), count=g.count, gpus=list(g.gpus))
    if config.dynamic_batching is not None:
        m.dynamic_batching.SetInParent()
        m.dynamic_batching.preferred_batch_size.extend(config.dynamic_batching.preferred_batch_size)
        m.dynamic_batching.max_queue_delay_microseconds = config.dynamic_batching.max_queue_delay_microseconds
    for key, value in config.parameters:
        m.parameters[key].string_value = value
    for w in config.warmup:
        mw = m.model_warmup.add(name=w.name, batch_size=w.batch_size, count=w.count)
        for t in w.inputs:
            data = mw.inputs[t.name]
            data.data_type = pb.DataType.Value(t.data_type)
            data.dims.extend(t.dims)
            if t.data_type in ("TYPE_FP16", "TYPE_FP32", "TYPE_FP64"):
                data.random_data = True
            else:
                data.zero_data = True
    if config.version_policy is not None:
        vp = config.version_policy
        if vp.kind == "latest":
            m.version_policy.latest.num_versions = vp.values[0]
        elif vp.kind == "all":
            m.version_policy.all.SetInParent()
        else:
            m.version_policy.specific.versions.extend(vp.values)
    return m


def parse(text: str, origin: str) -> pb.ModelConfig:
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as e:
        raise ConfigError(f"{origin}: Triton's schema rejects the config: {e}") from None


def load_file(path: Path) -> pb.ModelConfig:
    """Read a config.pbtxt exactly as Triton does; a ConfigError names the file and line otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config.pbtxt file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); Triton reads config.pbtxt as text") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as e:
        # ParseError's message already starts with "line:column"; keep Triton's words.
        raise ConfigError(f"{path}:{e}: Triton's schema rejects it") from None


def prove(text: str, config: ModelConfig, origin: str) -> pb.ModelConfig:
    """Parse rendered text and demand it equals the typed config, field by field."""
    parsed = parse(text, origin)
    expected = to_proto(config)
    if parsed != expected:
        got = text_format.MessageToString(parsed).splitlines()
        want = text_format.MessageToString(expected).splitlines()
        import difflib

        diff = "\n".join(list(difflib.unified_diff(want, got, "expected", "rendered", lineterm="", n=1))[:30])
        raise ConfigError(
            f"{origin}: the rendered config.pbtxt does not match the model's config"
            f" (a template dropped or changed a field):\n{diff}"
        )
    # Protobuf drops zero values; the libtorch backend needs max_batch_size explicit in the file.
    if not re.search(r"^\s*max_batch_size\s*:", text, re.MULTILINE):
        raise ConfigError(f"{origin}: the rendered config.pbtxt has no max_batch_size line")
    return parsed


AOTI_INPUT_RE = re.compile(r"INPUT__(\d+)")
AOTI_OUTPUT_RE = re.compile(r"OUTPUT__(\d+)")


# What std::stoi reads (the backend's ParseIntValue): C whitespace, a sign, digits; anything after is ignored.
STOI_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
C_INT = (-(2**31), 2**31 - 1)


def thread_count(cfg: pb.ModelConfig, key: str, origin: str) -> int | None:
    """A thread-count parameter (INTRA_OP_THREAD_COUNT, INTER_OP_THREAD_COUNT) as the libtorch backend reads
    it (std::stoi): the leading whole number, anything after it ignored ("2x" is 2); below 1 leaves torch's
    default (None). A value that does not start with a number (an empty one too) or overflows a C int fails
    the model's load on the server: a ConfigError naming `origin`, the key and the fix."""
    if key not in cfg.parameters:
        return None
    raw = cfg.parameters[key].string_value
    m = STOI_RE.match(raw)
    if m is None or not C_INT[0] <= int(m.group(1)) <= C_INT[1]:
        why = "does not start with a whole number" if m is None else "is out of range"
        raise ConfigError(
            f"{origin}: `parameters` {key} is {raw!r}, which {why}, and the libtorch backend fails to load the"
            f' model on it; set a thread count (e.g. "1") or remove the parameter'
        )
    value = int(m.group(1))
    return value if value > 0 else None


def check_thread_counts(cfg: pb.ModelConfig, origin: str) -> None:
    """Both thread-count parameters read as the backend reads them: a ConfigError for one it fails the load on."""
    for key in sorted(INT_PARAMETERS):
        thread_count(cfg, key, origin)


def check_aoti_rules(parsed: pb.ModelConfig, forward_args: list[str], origin: str) -> None:
    """What the PyTorch backend's torch_aoti path would refuse (rules and releases in export_aoti.py)."""
    if parsed.platform != "torch_aoti" or parsed.backend != "pytorch":
        raise ConfigError(f'{origin}: a .pt2 model needs platform "torch_aoti" and backend "pytorch"')
    for kind, tensors, pattern in (("input", parsed.input, AOTI_INPUT_RE), ("output", parsed.output, AOTI_OUTPUT_RE)):
        matches = [pattern.fullmatch(t.name) for t in tensors]
        if not all(matches):
            bad = next(t.name for t, m in zip(tensors, matches, strict=True) if not m)
            raise ConfigError(
                f"{origin}: `{kind}` name {bad!r}: the torch_aoti backend binds by position, as"
                f" {pattern.pattern.split('_')[0]}__<i>; a free name fails when the instance is created"
            )
        idx = sorted(int(m.group(1)) for m in matches)
        if idx != list(range(len(idx))):
            raise ConfigError(f"{origin}: `{kind}` indices {idx} must be 0..{len(idx) - 1}, each once")
    if len(parsed.input) != len(forward_args):
        raise ConfigError(
            f"{origin}: `input`: configuration expects {len(parsed.input)} inputs, model provides {len(forward_args)}"
        )
    for t in list(parsed.input) + list(parsed.output):
        if not t.dims and not t.HasField("reshape"):
            raise ConfigError(f"{origin}: tensor {t.name!r} has no dims")
        if any(d == 0 or d < -1 for d in t.dims):
            raise ConfigError(f"{origin}: tensor {t.name!r} has invalid dims {list(t.dims)}")
    if parsed.parameters:
        raise ConfigError(f"{origin}: `parameters`: libtorch parameters do not apply to torch_aoti")
    if parsed.HasField("dynamic_batching") and parsed.max_batch_size == 0:
        raise ConfigError(f"{origin}: `dynamic_batching` needs max_batch_size > 0")
    kinds = {g.kind for g in parsed.instance_group}
    if len(kinds) > 1:
        raise ConfigError(f"{origin}: `instance_group` mixes kinds; a .pt2 package is compiled for one device")


def check_libtorch_rules(parsed: pb.ModelConfig, forward_args: list[str], origin: str) -> None:
    """What the libtorch backend would refuse or silently misbind: a ConfigError naming the field."""
    if parsed.platform != "pytorch_libtorch" and parsed.backend != "pytorch":
        raise ConfigError(f'{origin}: `platform` must be "pytorch_libtorch" (or backend "pytorch")')
    names = [i.name for i in parsed.input]
    if len(names) != len(forward_args):
        raise ConfigError(
            f"{origin}: `input`: configuration expects {len(names)} inputs, model provides"
            f" {len(forward_args)}; list one input per forward argument"
        )
    if not set(names) <= set(forward_args):
        indices = [INDEX_NAME_RE.fullmatch(n) for n in names]
        if not all(indices):
            raise ConfigError(
                f"{origin}: `input` names {names} neither all equal forward's arguments"
                f" ({forward_args}) nor all follow <name>__<index>; the backend would bind them in"
                " config order, silently"
            )
        idx = sorted(int(m.group(1)) for m in indices)
        if idx != list(range(len(names))):
            raise ConfigError(f"{origin}: `input` indices {idx} must be 0..{len(names) - 1}, each once")
    out_idx = [INDEX_NAME_RE.fullmatch(o.name) for o in parsed.output]
    if any(out_idx) and not all(out_idx):
        raise ConfigError(f"{origin}: `output` names mix <name>__<index> and other names")
    if all(out_idx) and parsed.output:
        idx = sorted(int(m.group(1)) for m in out_idx)
        if idx != list(range(len(idx))):
            raise ConfigError(f"{origin}: `output` indices {idx} must be 0..{len(idx) - 1}, each once")
    for t in list(parsed.input) + list(parsed.output):
        if not t.dims and not t.HasField("reshape"):
            raise ConfigError(f"{origin}: tensor {t.name!r} has no dims")
        if any(d == 0 or d < -1 for d in t.dims):
            raise ConfigError(f"{origin}: tensor {t.name!r} has invalid dims {list(t.dims)}")
    if parsed.HasField("dynamic_batching") and parsed.max_batch_size == 0:
        raise ConfigError(f"{origin}: `dynamic_batching` needs max_batch_size > 0")
    for key in parsed.parameters:
        if key not in BOOL_PARAMETERS | INT_PARAMETERS:
            raise ConfigError(f"{origin}: `parameters`: unknown key {key!r} (the backend ignores it)")
