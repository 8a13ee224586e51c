"""Prove the served answers equal the local TorchScript answers, model by model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo.client import kserve, modelinfo
from tsrepo.errors import ClientError, ServerRefused, ServerTimeout, ServerUnreachable, TsrepoError


@dataclass
class OutputResult:
    name: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    ok: bool = True


@dataclass
class ModelResult:
    name: str
    version: int | None = None
    status: str = "pass"  # pass | fail | not ready | error
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, OutputResult] = field(default_factory=dict)
    samples: int = 0

    def fail(self, message: str, status: str = "fail") -> None:
        self.problems.append(message)
        if self.status == "pass" or status in ("not ready", "error"):
            self.status = status

    def to_json(self) -> dict:
        return {
            "model": self.name,
            "version": self.version,
            "status": self.status,
            "problems": self.problems,
            "notes": self.notes,
            "samples": self.samples,
            "outputs": {k: vars(v) for k, v in self.outputs.items()},
        }


class Transport:
    """HTTP or gRPC, with the same three kinds of failure."""

    def __init__(self, url: str, protocol: str, timeout: float):
        self.protocol = protocol
        self.url = url
        self.http = kserve.HttpClient(url, timeout) if protocol == "http" else None
        if protocol == "grpc":
            import tritonclient.grpc as grpcclient

            self.grpc = grpcclient.InferenceServerClient(url)
            self.timeout = timeout

    def _grpc(self, fn, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as e:
            status = str(e.status() or "")
            if "UNAVAILABLE" in status:
                raise ServerUnreachable(f"server not reachable at {self.url} (gRPC): {e.message()}") from None
            if "DEADLINE_EXCEEDED" in status:
                raise ServerTimeout(f"{self.url} (gRPC): no answer in time") from None
            raise ServerRefused(f"{self.url} (gRPC): {e.message()}") from None

    def wait_ready(self, timeout: float) -> None:
        if self.http:
            return self.http.wait_ready(timeout)
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._grpc(self.grpc.is_server_ready, client_timeout=2):
                    return
            except ServerUnreachable:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise ServerTimeout(f"server at {self.url} not ready after {timeout:g} s")
            time.sleep(0.25)

    def model_ready(self, model: str, version: int) -> bool:
        if self.http:
            return self.http.status(f"/v2/models/{model}/versions/{version}/ready") == 200
        return self._grpc(self.grpc.is_model_ready, model, str(version))

    def metadata(self, model: str) -> dict:
        if self.http:
            return self.http.get_json(f"/v2/models/{model}")
        return self._grpc(self.grpc.get_model_metadata, model, as_json=True)

    def config(self, model: str) -> pb.ModelConfig:
        if self.http:
            data = self.http.get_json(f"/v2/models/{model}/config")
        else:
            data = self._grpc(self.grpc.get_model_config, model, as_json=True)["config"]
        return json_format.ParseDict(data, pb.ModelConfig(), ignore_unknown_fields=True)

    def infer(self, model: str, version: int, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict:
        if self.http:
            body, hlen = kserve.encode_infer(inputs, outputs)
            headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(hlen)}
            resp, data = self.http._request("POST", f"/v2/models/{model}/versions/{version}/infer", body, headers)
            if resp.status != 200:
                raise ServerRefused(f"{model}: HTTP {resp.status}: {kserve._error_text(data)}")
            hl = resp.getheader("Inference-Header-Content-Length")
            return kserve.decode_infer(data, int(hl) if hl else None)
        import tritonclient.grpc as grpcclient

        from tsrepo.dtypes import BY_WIRE

        wires = {d.numpy: d.wire for d in BY_WIRE.values()}
        ins = []
        for name, arr in inputs.items():
            i = grpcclient.InferInput(name, list(arr.shape), wires[str(arr.dtype)])
            i.set_data_from_numpy(arr)
            ins.append(i)
        outs = [grpcclient.InferRequestedOutput(o) for o in outputs]
        result = self._grpc(
            self.grpc.infer, model, ins, model_version=str(version), outputs=outs, client_timeout=self.timeout
        )
        return {o: result.as_numpy(o) for o in outputs}


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


def _compare_outputs(result: ModelResult, expected: dict, served: dict, rtol: float, atol: float, context: str) -> None:
    for name, exp in expected.items():
        out = result.outputs.setdefault(name, OutputResult(name))
        got = served.get(name)
        if got is None:
            out.ok = False
            result.fail(f"output {name} missing from the server's answer")
            continue
        if exp.dtype == np.object_:
            same = list(exp.ravel()) == list(got.ravel())
            if not same:
                out.ok = False
                result.fail(f"output {name} differs ({context})")
            continue
        if got.shape != exp.shape:
            out.ok = False
            result.fail(
                f"output {name}: shape {list(got.shape)} from the server, {list(exp.shape)} locally ({context})"
            )
            continue
        e64, g64 = exp.astype(np.float64), got.astype(np.float64)
        diff = np.abs(e64 - g64)
        abs_err = float(diff.max()) if diff.size else 0.0
        rel_err = float((diff / np.maximum(np.abs(e64), 1e-12)).max()) if diff.size else 0.0
        out.max_abs, out.max_rel = max(out.max_abs, abs_err), max(out.max_rel, rel_err)
        if not bool(np.all(diff <= atol + rtol * np.abs(e64))):
            if out.ok:
                result.fail(
                    f"output {name} differs ({context}): max abs error {abs_err:.3g}, max rel error {rel_err:.3g}"
                    f" (rtol={rtol:g}, atol={atol:g})"
                )
            out.ok = False


def validate_model(
    transport: Transport, repo: Path, name: str, samples: int, rtol: float | None, atol: float | None, seed: int = 0
) -> ModelResult:
    import torch

    result = ModelResult(name)
    info = modelinfo.load(repo, name)
    tol = info.meta.get("tolerance", {})
    rtol = rtol if rtol is not None else max(tol.get("rtol", 1e-4), 1e-5)
    atol = atol if atol is not None else max(tol.get("atol", 1e-5), 1e-6)
    try:
        metadata = transport.metadata(name)
    except ServerRefused as e:
        result.fail(f"not served: {e}", "not ready")
        return result
    served_versions = {int(v) for v in metadata.get("versions", [])}
    local_versions = [v for v in info.versions() if v in served_versions]
    if not local_versions:
        result.fail(
            f"the server serves versions {sorted(served_versions)}, the repository has {info.versions()}", "error"
        )
        return result
    version = result.version = local_versions[-1]
    if not transport.model_ready(name, version):
        result.fail(f"version {version} is not ready on the server", "not ready")
        return result
    compare_config(info, transport.config(name), metadata, result)

    path = info.model_path(version)
    recorded = info.meta.get("versions", {}).get(str(version), {}).get("sha256")
    if recorded and hashlib.sha256(path.read_bytes()).hexdigest() != recorded:
        result.notes.append(f"{path} differs from the file tsrepo build wrote (sha256)")
    module = torch.jit.load(str(path), map_location="cpu").eval()
    ordered = sorted(info.inputs, key=lambda t: t.argument)
    rng = np.random.default_rng(seed)
    mbs = info.max_batch_size
    sizes = ["min", "max", "mid", "random"]
    batches = [1, mbs] if mbs > 1 else [1]
    for k in range(samples):
        size, batch = sizes[k % len(sizes)], batches[k % len(batches)]
        arrays = info.sample(rng, batch, size)
        with torch.no_grad():
            local_out = module(*[torch.from_numpy(t.for_model(arrays[t.name], mbs > 0)) for t in ordered])
        local_out = local_out if isinstance(local_out, tuple) else (local_out,)
        expected = {}
        reshaped = {o.name: list(o.dims) for o in info.config.output if o.HasField("reshape")}
        for oname, value in zip(info.outputs, local_out, strict=False):
            arr = np.array([s.encode() for s in value], dtype=np.object_) if isinstance(value, list) else value.numpy()
            if oname in reshaped:  # Triton reshapes the model's output back to the config dims
                arr = arr.reshape((arr.shape[:1] if mbs > 0 else ()) + tuple(reshaped[oname]))
            expected[oname] = arr
        context = f"sample {k + 1}, batch {batch}, shapes {[list(a.shape) for a in arrays.values()]}"
        try:
            served = transport.infer(name, version, arrays, info.outputs)
        except ServerRefused as e:
            result.fail(f"inference failed ({context}): {e}", "error")
            continue
        _compare_outputs(result, expected, served, rtol, atol, context)
        result.samples += 1
    return result


def validate(
    url: str,
    repo: Path,
    models: list[str] | None = None,
    *,
    protocol: str = "http",
    samples: int = 4,
    rtol: float | None = None,
    atol: float | None = None,
    timeout: float = 60.0,
    progress=lambda _m: None,
) -> list[ModelResult]:
    """Validate every model (or the named ones). Raises ClientError when the server cannot be used."""
    names = models or modelinfo.list_models(repo)
    if not names:
        raise TsrepoError(f"{repo}: no models to validate")
    transport = Transport(url, protocol, timeout)
    progress(f"waiting for {url} to be ready")
    try:
        transport.wait_ready(timeout)
    except ServerTimeout:
        # Not ready overall (a model failed to load, say): go on and report per model.
        pass
    results = []
    for name in names:
        progress(f"validating {name}")
        try:
            results.append(validate_model(transport, repo, name, samples, rtol, atol))
        except (ServerUnreachable, ServerTimeout):
            raise
        except ClientError as e:
            r = ModelResult(name)
            r.fail(str(e), "error")
            results.append(r)
    return results
