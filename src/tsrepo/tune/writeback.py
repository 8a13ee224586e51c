"""Write a tuned config back into the spec, keeping its comments and layout (tomlkit).

Only the keys whose effective value changes are written, into the model's own [[model]] table
(a value inherited from [defaults] is overridden there, never changed for every model). The new
text is parsed and validated by the same rules as any spec before it replaces the file, atomically.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from tsrepo import spec as spec_mod
from tsrepo.errors import SpecError
from tsrepo.tune.space import Candidate


def changes(model: spec_mod.ModelSpec, c: Candidate) -> dict:
    """The spec keys (as TOML values) that differ between the model's effective spec and `c`."""
    out: dict = {}
    groups = model.instance_groups
    if groups:
        first = groups[0]
        if len(groups) != 1 or first.count != c.instances:
            group: dict = {"kind": first.kind.value, "count": c.instances}
            if first.gpus:
                group["gpus"] = list(first.gpus)
            out["instance_group"] = [group]
    elif c.instances != 1:
        out["instance_group"] = [{"kind": "cpu", "count": c.instances}]
    if model.max_batch_size != c.max_batch_size:
        out["max_batch_size"] = c.max_batch_size
    current = model.dynamic_batching
    if not c.batching:
        if current is not None:
            out["dynamic_batching"] = False
    elif (
        current is None
        or current.max_queue_delay_microseconds != c.delay_us
        or any(p > c.max_batch_size for p in current.preferred_batch_size)
    ):
        table: dict = {"max_queue_delay_microseconds": c.delay_us}
        kept = [p for p in (current.preferred_batch_size if current else ()) if p <= c.max_batch_size]
        if kept:
            table["preferred_batch_size"] = kept
        out["dynamic_batching"] = table
    params = dict(model.parameters)
    if c.threads is not None and params.get("INTRA_OP_THREAD_COUNT") != str(c.threads):
        params["INTRA_OP_THREAD_COUNT"] = str(c.threads)
        out["parameters"] = params
    return out


def as_toml(model: str, values: dict) -> str:
    """The lines to paste into the model's [[model]] table."""
    import tomlkit

    doc = tomlkit.document()
    for key, value in values.items():
        doc[key] = _inline(value)
    return f'# in the [[model]] table with name = "{model}"\n' + tomlkit.dumps(doc)


def _inline(value):
    import tomlkit

    if isinstance(value, dict):
        t = tomlkit.inline_table()
        t.update({k: _inline(v) for k, v in value.items()})
        return t
    if isinstance(value, list):
        arr = tomlkit.array()
        arr.extend(_inline(v) for v in value)
        return arr
    return value


def write(spec_path: Path, model: str, values: dict) -> str:
    """Set `values` in the model's table of the spec file; returns the new text. Raises SpecError."""
    import tomlkit

    spec_path = Path(spec_path)
    text = spec_path.read_text(encoding="utf-8")
    doc = tomlkit.parse(text)
    tables = [t for t in doc.get("model", []) if t.get("name") == model]
    if len(tables) != 1:
        raise SpecError(f"{spec_path}: no single [[model]] table named {model!r} to write the tuned values into")
    table = tables[0]
    for key, value in values.items():
        table[key] = _inline(value)
    new_text = tomlkit.dumps(doc)
    # The same rules as any spec: a write that made the spec invalid never lands.
    spec_mod.parse_spec(tomllib.loads(new_text), str(spec_path), spec_path.resolve().parent)
    tmp = spec_path.with_name(f".{spec_path.name}.tsrepo-tune")
    tmp.write_text(new_text, encoding="utf-8")
    os.replace(tmp, spec_path)
    return new_text
