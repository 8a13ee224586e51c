"""Prove the served answers equal the local TorchScript answers, model by model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import compare, modelfile
from tsrepo.client import modelinfo, readiness, transport
from tsrepo.errors import ClientError, ServerRefused, ServerTimeout, ServerUnreachable


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"  # served answers or config differ from the repository's
    NOT_READY = "not ready"
    ERROR = "error"  # the server could not answer for this model


@dataclass
class OutputResult:
    name: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    ok: bool = True
    nonfinite: int = 0  # NaN/inf values in the local answer, most in any one sample


@dataclass
class ModelResult:
    name: str
    version: int | None = None
    status: Status = Status.PASS
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, OutputResult] = field(default_factory=dict)
    samples: int = 0

    def fail(self, message: str, status: Status = Status.FAIL) -> None:
        self.problems.append(message)
        if self.status == Status.PASS or status in (Status.NOT_READY, Status.ERROR):
            self.status = status

    def to_json(self) -> dict:
        return {
            "model": self.name,
            "version": self.version,
            "status": str(self.status),
            "problems": self.problems,
            "notes": self.notes,
            "samples": self.samples,
            "outputs": {k: vars(v) for k, v in self.outputs.items()},
        }


def compare_config(info: modelinfo.ModelInfo, served: pb.ModelConfig, metadata: dict, result: ModelResult) -> None:
    want = info.config
    if served.max_batch_size != want.max_batch_size:
        result.fail(f"max_batch_size is {served.max_batch_size} on the server, {want.max_batch_size} in the repository")
    for kind, mine, theirs in (("input", want.input, served.input), ("output", want.output, served.output)):
        theirs_by = {t.name: t for t in theirs}
        if set(theirs_by) != {t.name for t in mine}:
            result.fail(f"{kind} names differ: server {sorted(theirs_by)}, repository {sorted(t.name for t in mine)}")
            continue
        for t in mine:
            s = theirs_by[t.name]
            if s.data_type != t.data_type or list(s.dims) != list(t.dims):
                result.fail(
                    f"{kind} {t.name}: server {pb.DataType.Name(s.data_type)} {list(s.dims)},"
                    f" repository {pb.DataType.Name(t.data_type)} {list(t.dims)}"
                )
    mine_groups = [(g.count, g.kind) for g in want.instance_group]
    their_groups = [(g.count, g.kind) for g in served.instance_group]
    if mine_groups and [c for c, _ in mine_groups] != [c for c, _ in their_groups]:
        result.fail(
            f"instance counts differ: server {[c for c, _ in their_groups]}, repository {[c for c, _ in mine_groups]}"
        )
    else:
        for (_, k1), (_, k2) in zip(mine_groups, their_groups, strict=False):
            if k1 != k2:
                note = (
                    f"instance group {pb.ModelInstanceGroup.Kind.Name(k1)} is served as"
                    f" {pb.ModelInstanceGroup.Kind.Name(k2)}"
                )
                if k1 == pb.ModelInstanceGroup.KIND_GPU and k2 == pb.ModelInstanceGroup.KIND_CPU:
                    result.notes.append(note + " (no GPU on the server)")
                else:
                    result.fail(note)
    if want.HasField("dynamic_batching") != served.HasField("dynamic_batching"):
        result.fail(
            f"dynamic batching is {'on' if served.HasField('dynamic_batching') else 'off'} on the server,"
            f" {'on' if want.HasField('dynamic_batching') else 'off'} in the repository"
        )
    elif want.HasField("dynamic_batching"):
        a, b = want.dynamic_batching, served.dynamic_batching
        # Triton's config normalisation fills an empty preferred_batch_size with [max_batch_size].
        want_preferred = list(a.preferred_batch_size) or [want.max_batch_size]
        if a.max_queue_delay_microseconds != b.max_queue_delay_microseconds or want_preferred != list(
            b.preferred_batch_size
        ):
            result.fail(
                "dynamic_batching differs: server max_queue_delay_microseconds="
                f"{b.max_queue_delay_microseconds} preferred_batch_size={list(b.preferred_batch_size)},"
                f" repository {a.max_queue_delay_microseconds} / {want_preferred}"
            )
    # metadata: what clients see
    batch = [-1] if want.max_batch_size > 0 else []
    meta_inputs = {t["name"]: t for t in metadata.get("inputs", [])}
    for t in want.input:
        m = meta_inputs.get(t.name)
        expected_shape = batch + list(t.dims)
        if m is None or [int(x) for x in m["shape"]] != expected_shape:
            result.fail(f"metadata for input {t.name} is {m}, expected shape {expected_shape}")


def compare_outputs(result: ModelResult, expected: dict, served: dict, rtol: float, atol: float, context: str) -> None:
    """One sample's outputs, through the comparison build uses (same tolerances, same NaN rule)."""
    for name, exp in expected.items():
        out = result.outputs.setdefault(name, OutputResult(name))
        got = served.get(name)
        if got is None:
            out.ok = False
            result.fail(f"output {name} missing from the server's answer")
            continue
        diff = compare.compare_output(name, exp, got, rtol, atol)
        out.nonfinite = max(out.nonfinite, diff.nonfinite)
        if diff.ok:
            out.max_abs, out.max_rel = max(out.max_abs, diff.max_abs), max(out.max_rel, diff.max_rel)
            continue
        if out.ok:
            result.fail(f"output {name} differs ({context}): {diff.reason}")
        out.ok = False
        if diff.max_abs != float("inf"):
            out.max_abs, out.max_rel = max(out.max_abs, diff.max_abs), max(out.max_rel, diff.max_rel)


def _nonfinite_note(result: ModelResult) -> str | None:
    parts = ", ".join(f"{o.name} ({o.nonfinite} values in one sample)" for o in result.outputs.values() if o.nonfinite)
    if not parts:
        return None
    return (
        f"version {result.version}: the outputs hold NaN or inf: {parts}; they match the local answers"
        " (NaN equals NaN), so a broken model can pass. Check the model's weights and the inputs' value ranges"
    )


def validate_model(
    client: transport.Transport,
    info: modelinfo.ModelInfo,
    samples: int,
    rtol: float | None,
    atol: float | None,
    seed: int = 0,
) -> ModelResult:
    import torch

    name = info.name
    result = ModelResult(name)
    rtol = rtol if rtol is not None else max(info.rtol, 1e-5)
    atol = atol if atol is not None else max(info.atol, 1e-6)
    try:
        metadata = client.metadata(name)
    except ServerRefused as e:
        result.fail(f"not served: {e}", Status.NOT_READY)
        return result
    if not isinstance(metadata, dict) or not isinstance(metadata.get("versions", []), list):
        # A port that answers HTTP but is not Triton's inference API (the metrics port, say).
        raise ServerRefused(
            f"{client.url} answered, but not with KServe model metadata for {name!r}: is --url Triton's HTTP"
            " (or gRPC) port, not its metrics port?"
        )
    served_versions = {int(v) for v in metadata.get("versions", []) if str(v).isascii() and str(v).isdigit()}
    local_versions = [v for v in info.versions() if v in served_versions]
    if not local_versions:
        result.fail(
            f"the server serves versions {sorted(served_versions)}, the repository has {info.versions()}", Status.ERROR
        )
        return result
    version = result.version = local_versions[-1]
    if not client.model_ready(name, version):
        result.fail(f"version {version} is not ready on the server", Status.NOT_READY)
        return result
    served_config = json_format.ParseDict(client.config(name), pb.ModelConfig(), ignore_unknown_fields=True)
    compare_config(info, served_config, metadata, result)

    path = info.model_path(version)
    recorded = info.recorded_sha256(version)
    if recorded and hashlib.sha256(path.read_bytes()).hexdigest() != recorded:
        result.notes.append(f"{path} differs from the file tsrepo build wrote (sha256)")
    module = modelfile.load(path)
    ordered = sorted(info.inputs, key=lambda t: t.argument)
    rng = np.random.default_rng(seed)
    mbs = info.max_batch_size
    sizes = ["min", "max", "mid", "random"]
    batches = [1, mbs] if mbs > 1 else [1]
    for k in range(samples):
        size, batch = sizes[k % len(sizes)], batches[k % len(batches)]
        arrays = info.sample(rng, batch, size)
        local_out = modelfile.run(module, [torch.from_numpy(t.for_model(arrays[t.name], mbs > 0)) for t in ordered])
        expected = {}
        reshaped = {o.name: list(o.dims) for o in info.config.output if o.HasField("reshape")}
        for oname, value in zip(info.outputs, local_out, strict=False):
            arr = np.array([s.encode() for s in value], dtype=np.object_) if isinstance(value, list) else value.numpy()
            if oname in reshaped:  # Triton reshapes the model's output back to the config dims
                arr = arr.reshape((arr.shape[:1] if mbs > 0 else ()) + tuple(reshaped[oname]))
            expected[oname] = arr
        context = f"sample {k + 1}, batch {batch}, shapes {[list(a.shape) for a in arrays.values()]}"
        try:
            served = client.infer(name, version, arrays, info.outputs)
        except ServerRefused as e:
            result.fail(f"inference failed ({context}): {e}", Status.ERROR)
            continue
        compare_outputs(result, expected, served, rtol, atol, context)
        result.samples += 1
    note = _nonfinite_note(result)
    if note:
        result.notes.append(note)
    return result


def validate(
    url: str,
    repo: Path,
    models: list[str] | None = None,
    *,
    protocol: str | transport.Protocol = transport.Protocol.HTTP,
    samples: int = 4,
    rtol: float | None = None,
    atol: float | None = None,
    timeout: float = 60.0,
    progress=lambda _m: None,
) -> list[ModelResult]:
    """Validate every model (or the named ones).

    Raises UsageError/TsrepoError (exit 2) for a bad address or repository before anything is sent,
    and ClientError (exit 1) when the server cannot be used.
    """
    client = transport.connect(url, protocol, timeout)  # the address is checked before the repository is read
    names = models or modelinfo.list_models(repo)
    infos = [modelinfo.load(repo, name) for name in names]
    with client:
        progress(f"waiting for {client.url} to serve {', '.join(names)}")
        # Each model's own readiness, not the server's: with one model failed the server is never ready,
        # and the others must not wait out the timeout; a failed model is reported with the server's reason.
        not_ready = readiness.wait_models(client, names, timeout)
        results = []
        for info in infos:
            progress(f"validating {info.name}")
            if not_ready.get(info.name):
                r = ModelResult(info.name)
                r.fail(f"not served: {not_ready[info.name]}", Status.NOT_READY)
                results.append(r)
                continue
            try:
                results.append(validate_model(client, info, samples, rtol, atol))
            except (ServerUnreachable, ServerTimeout):
                raise
            except ClientError as e:
                r = ModelResult(info.name)
                r.fail(str(e), Status.ERROR)
                results.append(r)
    return results
