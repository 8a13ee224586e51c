"""The local engine's runner against the Python backend's floor and the model's in-process compute limit.

One local server serves, for each subject model, the model through the runner (templates/model.py.j2)
and a floor model with the same inputs, outputs and batching that does no work (no torch: it reads
its inputs and answers zeros). Both get the same load from `tsrepo bench` (HTTP, concurrency 1 and
16), alternating, for several rounds. The compute limit is the same TorchScript module called in this
process at the batch size the server formed (Triton's average batch size at that level), with the
runner's thread settings.

    .venv/bin/python benchmarks/local_engine.py [--rounds 3] [--duration 4] [--levels 1,16]

Targets: tiny model >= 0.9x the floor; transformer >= 0.9x the in-process compute limit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODELS_PY = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class Transformer(nn.Module):
    """Two encoder layers, d=128, 64 tokens: compute-bound on CPU."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(128, 4, dim_feedforward=512, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).mean(dim=1)


def tiny():
    return Tiny()


def transformer():
    return Transformer()
'''

SPEC = """
[defaults]
max_batch_size = 16
dynamic_batching = { max_queue_delay_microseconds = 100 }
export = "script"

[[model]]
name = "tiny"
source = "le_models:tiny"
version = 1
inputs = [{ name = "x", dtype = "float32", shape = [16] }]

[[model]]
name = "transformer"
source = "le_models:transformer"
version = 1
inputs = [{ name = "x", dtype = "float32", shape = [64, 128] }]
rtol = 1e-3
atol = 1e-4
"""

# The floor: what the Python backend costs with no model at all. It reads every input (the runner must
# too) and answers zeros of the configured output shape, one response per request.
FLOOR_PY = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [
            (o["name"], tuple(int(d) for d in o["dims"]), pb_utils.triton_string_to_numpy(o["data_type"]))
            for o in config["output"]
        ]

    def execute(self, requests):
        responses = []
        for request in requests:
            arrays = [pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs]
            rows = arrays[0].shape[0]
            tensors = [pb_utils.Tensor(n, np.zeros((rows, *dims), dtype)) for n, dims, dtype in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
"""


def make_repo(work: Path) -> Path:
    from tsrepo import build
    from tsrepo.spec import load_spec

    (work / "le_models.py").write_text(MODELS_PY)
    (work / "tsrepo.toml").write_text(SPEC)
    repo = work / "repo"
    build.build(load_spec(work / "tsrepo.toml"), repo)
    for name in ("tiny", "transformer"):
        config = (repo / name / "config.pbtxt").read_text()
        floor = repo / f"{name}_floor"
        (floor / "1").mkdir(parents=True)
        lines = [line for line in config.splitlines() if not line.startswith(("platform:", "backend:", "name:"))]
        (floor / "config.pbtxt").write_text(
            f'name: "{name}_floor"\nbackend: "python"\n' + "\n".join(lines).replace("KIND_GPU", "KIND_CPU") + "\n"
        )
        (floor / "1" / "model.py").write_text(textwrap.dedent(FLOOR_PY))
    return repo


def serve_load(url: str, repo: Path, model: str, level: int, duration: float) -> tuple[float, float]:
    """(infer/s, server's average batch size) for one level with tsrepo bench's load (HTTP)."""
    from tsrepo.client import bench

    s = bench.Settings(url=url, model=model, duration=duration, warmup=1.0, window=duration / 3)
    (r,) = bench.run(s, "concurrency", [level], repo)
    if r.errors or r.aborted:
        raise SystemExit(f"{model} at concurrency {level}: {r.errors or r.aborted}")
    return r.throughput, r.server.get("avg_batch_size", 1.0)


def compute_limit(path: Path, shape: tuple, batch: float, seconds: float = 1.5) -> dict[int, float]:
    """infer/s of the TorchScript module called here at the server's batch size (inference mode), per
    intra-op thread count: one, and one per core. The limit is the better of them; the runner's own
    default (cores - 1, see templates/model.py.j2) is reported beside it."""
    import os

    import torch

    module = torch.jit.load(str(path)).eval()
    b = max(1, round(batch))
    x = torch.randn(b, *shape)
    out = {}
    for threads in sorted({1, len(os.sched_getaffinity(0))}):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            for _ in range(20):  # past the profiling executor's first runs, as the served model is
                module(x)
            calls, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                module(x)
                calls += 1
            out[threads] = calls * b / (time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds measured per level")
    ap.add_argument("--levels", default="1,16")
    ap.add_argument("--models", default="tiny,transformer")
    args = ap.parse_args()
    from tsrepo.serve.runner import sigterm_as_interrupt

    sigterm_as_interrupt()  # a SIGTERM (a timeout, a kill) stops the servers it started, as Ctrl-C does
    levels = [int(v) for v in args.levels.split(",")]
    models = args.models.split(",")
    shapes = {"tiny": (16,), "transformer": (64, 128)}

    from tsrepo.serve import local
    from tsrepo.serve.ports import free_ports

    work = Path(tempfile.mkdtemp(prefix="tsrepo-local-engine-"))
    repo = make_repo(work)
    rows: dict[tuple, dict[str, list[float]]] = {}
    with local.start(repo, free_ports(), timeout=240) as server:
        for rnd in range(args.rounds):
            for model in models:
                for level in levels:
                    r = rows.setdefault((model, level), {})
                    for subject in (model, f"{model}_floor"):
                        tput, batch = serve_load(server.http_url, repo, subject, level, args.duration)
                        kind = "runner" if subject == model else "floor"
                        r.setdefault(kind, []).append(tput)
                        if kind == "runner":
                            r.setdefault("batch", []).append(batch)
                        print(
                            f"round {rnd + 1} {subject:<18} c={level:<3} {tput:8.1f} infer/s  batch {batch:5.2f}",
                            file=sys.stderr,
                        )
                    limits = compute_limit(repo / model / "1" / "model.pt", shapes[model], r["batch"][-1])
                    r.setdefault("compute", []).append(max(limits.values()))
                    r.setdefault("compute_runner_threads", []).append(limits[min(limits)])
    med = statistics.median
    print(f"\nlocal engine, HTTP load from tsrepo bench, {args.duration:g} s per level, median of {args.rounds} rounds")
    header = (
        "model",
        "concurrency",
        "runner infer/s",
        "floor infer/s",
        "runner/floor",
        "batch",
        "compute infer/s",
        "runner/compute",
        "compute 1 thread",
        "runner/compute 1 thread",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (model, level), r in rows.items():
        runner, floor, compute = med(r["runner"]), med(r["floor"]), med(r["compute"])
        print(
            f"| {model} | {level} | {runner:.1f} | {floor:.1f} | {runner / floor:.2f} | {med(r['batch']):.2f} |"
            f" {compute:.1f} | {runner / compute:.2f} | {med(r['compute_runner_threads']):.1f} |"
            f" {runner / med(r['compute_runner_threads']):.2f} |"
        )
    print("\ntargets: tiny runner/floor >= 0.9; transformer runner/compute >= 0.9")
    return 0


if __name__ == "__main__":
    sys.exit(main())
