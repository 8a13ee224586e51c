"""torch.export failures -> located findings of the EX classes (catalogue.py), for build and doctor.

Patterns are torch 2.13's messages, observed with the failing modules in tests/export_cases.py. The
location is the innermost frame of the user's code in the exception's traceback, else the `File ...,
line N` torch quotes from the user's code, else forward's `def` line (constraint violations are found
after tracing and point at no line).
"""

from __future__ import annotations

import inspect
import re
import traceback
from pathlib import Path

import torch
from torch import nn

from tsrepo.doctor.static import Finding

PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"Data-dependent branching"), "EX01"),
    (re.compile(r"Could not extract specialized integer from data-dependent expression"), "EX02"),
    (re.compile(r"Could not guard on data-dependent expression.*Size-like symbols: (?!none)", re.S), "EX02"),
    (re.compile(r"Could not guard on data-dependent expression"), "EX01"),
    (re.compile(r"Constraints violated"), "EX03"),
    (
        re.compile(
            r"UnsupportedOperatorException|Operator does not support running with fake tensors|"
            r"Could not run '[^']+' with arguments from the '\w+' backend|no fake impl|"
            r"There was no fake impl registered"
        ),
        "EX06",
    ),
    (re.compile(r"Attempted to call function marked as skipped|Dynamo does not know how to trace"), "EX05"),
]
MESSAGE_FILE_RE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
_SPEC_DIM_RE = re.compile(r"^\s*(\w+)\s*=\s*(.+?)\s*$", re.MULTILINE)
_DIM_CALL_RE = re.compile(r"Dim\('\w+'(?:,\s*min=(\d+))?(?:,\s*max=(\d+))?\)")


def classify(message: str) -> str:
    for pattern, kind in PATTERNS:
        if pattern.search(message):
            return kind
    return "EX00"


def _user_file(path: str) -> bool:
    import sysconfig

    roots = [str(Path(torch.__file__).resolve().parent), sysconfig.get_paths()["stdlib"], "/tsrepo/", "site-packages"]
    return not path.startswith("<") and not any(r in path for r in roots)


def locate(model: nn.Module, exc: BaseException) -> tuple[str, int, str]:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _user_file(f.filename)]
    if frames:
        f = frames[-1]
        return f.filename, f.lineno or 0, (f.line or "").strip()
    quoted = [m for m in MESSAGE_FILE_RE.finditer(str(exc)) if _user_file(m.group("file"))]
    if quoted:
        path, line = quoted[-1].group("file"), int(quoted[-1].group("line"))
        return path, line, _source_line(path, line)
    try:
        forward = type(model).forward
        path = inspect.getsourcefile(forward) or "<unknown>"
        line = inspect.getsourcelines(forward)[1]
        return path, line, _source_line(path, line)
    except (OSError, TypeError):
        return "<unknown>", 0, ""


def _source_line(path: str, line: int) -> str:
    try:
        return Path(path).read_text().splitlines()[line - 1].strip()
    except (OSError, IndexError, UnicodeDecodeError):
        return ""


def spec_ranges(message: str, spec) -> list[str]:
    """torch.export's "Suggested fixes" turned into the spec fields to change: `x_dim1 = Dim('x_dim1', min=8,
    max=16)` -> `inputs[0].shape[0] = "8..16"`; `batch = 4` -> max_batch_size."""
    from tsrepo.export_aoti import dim_name

    fixes = message.partition("Suggested fixes:")[2]
    if not fixes or spec is None:
        return []
    offset = 1 if spec.max_batch_size else 0
    where: dict[str, tuple[str, object]] = {"batch": ("max_batch_size", None)}
    for i, t in enumerate(spec.inputs):
        for j, d in enumerate(t.shape):
            arg = t.name or f"{i}"
            where[dim_name(arg, j + offset)] = (f"inputs[{i}].shape[{j}]", d)
    out = []
    for name, value in _SPEC_DIM_RE.findall(fixes.split("\n\n")[0]):
        if name not in where:
            if name.startswith("_"):
                continue  # a helper dim of a derived one (d = 2*_d): reported with the dim it derives
            out.append(f"torch.export suggests {name} = {value}")
            continue
        field, dim = where[name]
        if field == "max_batch_size":
            out.append(f"`max_batch_size`: the batch dim works only as {value}; the model is not batch-generic")
            continue
        m = _DIM_CALL_RE.fullmatch(value)
        if value.isdigit():
            out.append(f'`{field}`: the code needs exactly {value}; write {value} instead of "{dim.min}..{dim.max}"')
        elif m:
            lo = int(m.group(1)) if m.group(1) else dim.min
            hi = int(m.group(2)) if m.group(2) else dim.max
            out.append(f'`{field}`: write "{lo}..{hi}" instead of "{dim.min}..{dim.max}"')
        else:
            out.append(
                f"`{field}`: the code needs {name} = {value}, which a min..max range cannot say; pad the input"
                " in the model or keep the dim static"
            )
    return out


def finding(model: nn.Module, exc: BaseException, spec=None) -> Finding:
    text = str(exc)
    kind = classify(f"{type(exc).__name__}: {text}")
    file, line, code = locate(model, exc)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    if kind == "EX03":
        detail_lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("- ")][:2]
        first = " ".join([first, *detail_lines])
    detail = f"torch.export: {type(exc).__name__}: {first}"
    if len(detail) > 400:
        detail = detail[:397] + "..."
    ranges = spec_ranges(text, spec) if kind == "EX03" else []
    if ranges:
        detail += ". In the spec: " + "; ".join(ranges)
    return Finding(file, line, 1, kind, code, detail)


def explain(model: nn.Module, exc: BaseException, spec=None) -> str:
    from tsrepo.doctor import format_finding

    return format_finding(finding(model, exc, spec))
