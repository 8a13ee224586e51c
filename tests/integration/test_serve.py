from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tsrepo import build, sampling
from tsrepo.dtypes import SUPPORTED
from tsrepo.errors import ServeError
from tsrepo.serve import local
from tsrepo.serve.ports import free_ports
from tsrepo.spec import load_spec

from .conftest import stub_pids

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _inputs_for(repo: Path, model: str, batch: int, rng) -> dict[str, np.ndarray]:
    meta = json.loads((repo / model / "tsrepo.json").read_text())
    arrays = {}
    for t in meta["inputs"]:
        shape = [batch] + [d if isinstance(d, int) else (d[0] + d[1]) // 2 for d in t["shape"]]
        arrays[t["name"]] = sampling.sample(SUPPORTED[t["dtype"]], shape, rng, t.get("range"))
    return arrays


def _local_outputs(repo: Path, model: str, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    meta = json.loads((repo / model / "tsrepo.json").read_text())
    module = torch.jit.load(str(repo / model / "1" / "model.pt"))
    ordered = sorted(meta["inputs"], key=lambda t: t["argument"])
    with torch.no_grad():
        out = module(*[torch.from_numpy(arrays[t["name"]]) for t in ordered])
    out = out if isinstance(out, tuple) else (out,)
    return [o.numpy() for o in out], [o["name"] for o in meta["outputs"]]


@pytest.mark.parametrize("model", ["resnet_small", "text_encoder", "din"])
def test_served_answers_equal_local_torchscript_over_http_and_grpc(example_server, example_repo, model):
    assert {m.name: m.state for m in example_server.models()}[model] == "READY"
    arrays = _inputs_for(example_repo, model, batch=3, rng=np.random.default_rng(1))
    expected, names = _local_outputs(example_repo, model, arrays)

    http = httpclient.InferenceServerClient(example_server.http_url)
    inputs = []
    for name, arr in arrays.items():
        i = httpclient.InferInput(name, arr.shape, SUPPORTED[str(arr.dtype)].wire)
        i.set_data_from_numpy(arr, binary_data=True)
        inputs.append(i)
    result = http.infer(model, inputs)
    for name, exp in zip(names, expected, strict=False):
        np.testing.assert_allclose(result.as_numpy(name), exp, rtol=1e-5, atol=1e-6)

    grpc = grpcclient.InferenceServerClient(example_server.grpc_url)
    ginputs = []
    for name, arr in arrays.items():
        i = grpcclient.InferInput(name, arr.shape, SUPPORTED[str(arr.dtype)].wire)
        i.set_data_from_numpy(arr)
        ginputs.append(i)
    gresult = grpc.infer(model, ginputs)
    for name, exp in zip(names, expected, strict=False):
        np.testing.assert_allclose(gresult.as_numpy(name), exp, rtol=1e-5, atol=1e-6)


def test_dynamic_batching_really_batches(example_server, example_repo):
    client_count = 16
    model = "resnet_small"
    http = httpclient.InferenceServerClient(example_server.http_url)
    before = http.get_inference_statistics(model)["model_stats"][0]
    arrays = _inputs_for(example_repo, model, batch=1, rng=np.random.default_rng(2))
    expected, names = _local_outputs(example_repo, model, arrays)

    def one(_):
        c = httpclient.InferenceServerClient(example_server.http_url)
        i = httpclient.InferInput("image", arrays["image"].shape, "FP32")
        i.set_data_from_numpy(arrays["image"])
        return c.infer(model, [i]).as_numpy(names[0])

    with concurrent.futures.ThreadPoolExecutor(client_count) as pool:
        outs = list(pool.map(one, range(96)))
    for out in outs:  # rows split back per request are each request's own answer
        np.testing.assert_allclose(out, expected[0], rtol=1e-4, atol=1e-5)
    after = http.get_inference_statistics(model)["model_stats"][0]
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 96
    assert executions < inferences, (executions, inferences)


def test_sigterm_to_serve_leaves_no_server_or_stub_behind(example_repo):
    ports = free_ports()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tsrepo",
            "serve",
            "--repo",
            str(example_repo),
            "--http-port",
            str(ports.http),
            "--grpc-port",
            str(ports.grpc),
            "--metrics-port",
            str(ports.metrics),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marker = f"--http-port={ports.http}"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not any("serving" in line for line in lines):
        assert proc.poll() is None, "".join(lines)
        time.sleep(0.2)
    server_pids = stub_pids(marker)
    assert server_pids, "tritonserver is not running"
    pgid = os.getpgid(server_pids[0])
    stubs = [p for p in stub_pids("triton_python_backend_stub") if os.getpgid(p) == pgid]
    assert len(stubs) == 3
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "READY din" in output and "stopped" in output
    for pid in server_pids + stubs:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]


@pytest.fixture(scope="module")
def mixed_repo(tmp_path_factory) -> Path:
    """lin (two CPU instances), broken (corrupt model.pt), short (config declares fewer inputs than forward)."""
    root = tmp_path_factory.mktemp("mixed")
    spec = root / "tsrepo.toml"
    spec.write_text(
        "[defaults]\nmax_batch_size = 4\n\n"
        '[[model]]\nname = "lin"\nsource = "tsrepo_testmodels:linear"\nversion = 1\n'
        'instance_group = [{ kind = "cpu", count = 2 }]\ninputs = [{ name = "x", dtype = "float32", shape = [4] }]\n\n'
        '[[model]]\nname = "broken"\nsource = "tsrepo_testmodels:linear"\nversion = 1\n'
        'inputs = [{ name = "x", dtype = "float32", shape = [4] }]\n\n'
        '[[model]]\nname = "short"\nsource = "tsrepo_testmodels:two_inputs"\nversion = 1\n'
        'inputs = [{ name = "a", dtype = "float32", shape = [3] }, { name = "b", dtype = "float32", shape = [3] }]\n'
    )
    repo = root / "repo"
    build.build(load_spec(spec), repo)
    (repo / "broken" / "1" / "model.pt").write_bytes(b"this is not a TorchScript archive")
    config = (repo / "short" / "config.pbtxt").read_text()
    start = config.index('  {\n    name: "b"')
    end = config.index("]\noutput")
    (repo / "short" / "config.pbtxt").write_text(config[:start].rstrip().rstrip(",") + "\n" + config[end:])
    return repo


def test_load_failures_are_reported_by_model_name(mixed_repo):
    with pytest.raises(ServeError) as info:
        local.start(mixed_repo, free_ports(), timeout=240)
    message = str(info.value)
    assert "broken" in message and "short" in message and "lin" not in message.replace("--no-exit", "")


def test_libtorch_rules_and_instance_count_on_a_mixed_repository(mixed_repo):
    ports = free_ports()
    with local.start(mixed_repo, ports, exit_on_error=False, timeout=240) as server:
        states = {m.name: m for m in server.models()}
        assert states["lin"].state == "READY"
        assert states["broken"].state == "UNAVAILABLE"
        assert "broken" in states["broken"].reason or "zip" in states["broken"].reason.lower()
        assert states["short"].state == "UNAVAILABLE"
        assert (
            "unable to load model 'short', configuration expects 1 inputs, model provides 2" in states["short"].reason
        )
        lin_stubs = [p for p in stub_pids(f"{server.shadow_root}/lin/1/model.py")]
        assert len(lin_stubs) == 2
        # and the model answers
        http = httpclient.InferenceServerClient(server.http_url)
        x = np.ones((2, 4), np.float32)
        i = httpclient.InferInput("x", x.shape, "FP32")
        i.set_data_from_numpy(x)
        out = http.infer("lin", [i]).as_numpy("OUTPUT__0")
        module = torch.jit.load(str(mixed_repo / "lin" / "1" / "model.pt"))
        np.testing.assert_allclose(out, module(torch.from_numpy(x)).detach().numpy(), rtol=1e-6)
    assert not stub_pids(f"--http-port={ports.http}")


def test_triton_ignores_the_tsrepo_json_sidecar(example_server):
    for name in ("din", "resnet_small", "text_encoder"):
        assert (example_server.shadow_root / name / "tsrepo.json").is_file()  # served beside the config ...
    assert {m.state for m in example_server.models()} == {"READY"}  # ... and every model loads


def test_serving_never_writes_to_the_users_repository(example_repo, example_server):
    before = {str(p): p.stat().st_mtime_ns for p in example_repo.rglob("*")}
    assert example_server.models()
    assert {str(p): p.stat().st_mtime_ns for p in example_repo.rglob("*")} == before
    assert not any(p.name == "model.py" for p in example_repo.rglob("*"))


def test_other_shapes_dtypes_and_backend_parameters_on_the_local_engine(tmp_path):
    from tsrepo.client import validate

    spec = tmp_path / "tsrepo.toml"
    spec.write_text(
        "[defaults]\nmax_batch_size = 4\n\n"
        '[[model]]\nname = "scalar"\nsource = "tsrepo_testmodels:scalar_per_row"\nversion = 1\n'
        "dynamic_batching = { max_queue_delay_microseconds = 500 }\n"
        'inputs = [{ name = "ids", dtype = "int64", shape = [], range = [0, 10] },'
        ' { name = "weight", dtype = "float32", shape = [] }]\n\n'
        '[[model]]\nname = "inference_on"\nsource = "tsrepo_testmodels:inference_probe"\nversion = 1\n'
        'export = "script"\ninputs = [{ name = "x", dtype = "float32", shape = [2] }]\n\n'
        '[[model]]\nname = "inference_off"\nsource = "tsrepo_testmodels:inference_probe"\nversion = 1\n'
        'export = "script"\nparameters = { INFERENCE_MODE = "false", INTRA_OP_THREAD_COUNT = 1 }\n'
        'inputs = [{ name = "x", dtype = "float32", shape = [2] }]\n\n'
        '[[model]]\nname = "labeller"\nsource = "tsrepo_testmodels:labeller"\nversion = 1\n'
        'inputs = [{ name = "x", dtype = "float32", shape = [4] }]\n\n'
        '[[model]]\nname = "two_dynamic"\nsource = "tsrepo_testmodels:two_dynamic"\nversion = 1\n'
        'inputs = [{ name = "image", dtype = "float32", shape = ["2..6", "3..9"] }]\n'
    )
    repo = tmp_path / "repo"
    build.build(load_spec(spec), repo)
    with local.start(repo, free_ports(), timeout=240) as server:
        # int64, bool and List[str] outputs, reshaped inputs and outputs, two dynamic dims: over both protocols
        for url, protocol in ((server.http_url, "http"), (server.grpc_url, "grpc")):
            models = ["scalar", "labeller", "two_dynamic"]
            results = validate.validate(url, repo, models, protocol=protocol, samples=4)
            assert [r.status for r in results] == ["pass"] * 3, [r.problems for r in results]
        http = httpclient.InferenceServerClient(server.http_url)
        x = np.ones((1, 2), np.float32)
        i = httpclient.InferInput("x", x.shape, "FP32")
        i.set_data_from_numpy(x)
        assert http.infer("inference_on", [i]).as_numpy("OUTPUT__0").tolist() == [[1.0, 1.0]]
        assert http.infer("inference_off", [i]).as_numpy("OUTPUT__0").tolist() == [[0.0, 0.0]]
