"""The real tritonserver loads a repository straight from S3 (Triton's s3://http://host:port/bucket/prefix form).

The local server has no libtorch backend, so what is pushed is the shadow repository the local engine
serves (same configs with the Python backend, same model.pt files, tsrepo.json beside them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import deploy_s3server as _server
import pytest

from tsrepo import build
from tsrepo.deploy import s3
from tsrepo.serve import local, shadow
from tsrepo.serve.ports import free_ports
from tsrepo.spec import load_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]
s3_endpoint, aws_env, bucket = _server.s3_endpoint, _server.aws_env, _server.bucket  # fixtures

SPEC = """
[defaults]
max_batch_size = 4

[[model]]
name = "lin_cpu"
source = "tsrepo_testmodels:linear"
version = 1
inputs = [{ name = "x", dtype = "float32", shape = [4] }]

[[model]]
name = "lin_gpu"
source = "tsrepo_testmodels:linear"
version = 1
instance_group = [{ kind = "gpu", count = 1 }]
inputs = [{ name = "x", dtype = "float32", shape = [4] }]
"""


def _index(port: int) -> list[dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=2) as response:
        return json.load(response)


def test_tritonserver_loads_a_pushed_repository_from_the_s3_endpoint(tmp_path, s3_endpoint, bucket, aws_env):
    spec = tmp_path / "tsrepo.toml"
    spec.write_text(SPEC)
    build.build(load_spec(spec), tmp_path / "repo")
    shadow.build_shadow(tmp_path / "repo", tmp_path / "shadow", gpu_available=False)
    loc = s3.parse(f"s3://{bucket}/shadow", s3_endpoint)
    s3.push(tmp_path / "shadow", loc)
    assert loc.triton_uri() == f"s3://{s3_endpoint}/{bucket}/shadow"

    install = local.find_triton()
    ports = free_ports()
    cmd = [
        str(install.binary),
        f"--model-repository={loc.triton_uri()}",
        f"--backend-directory={local.backend_dir(install)}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--disable-auto-complete-config",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=3",
    ]
    log_path = tmp_path / "tritonserver.log"
    env = {**local.server_env(install), **aws_env}
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    try:
        states: dict[str, str] = {}
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and process.poll() is None:
            try:
                states = {m["name"]: m.get("state", "") for m in _index(ports.http)}
            except OSError:
                states = {}
            if states and all(s in ("READY", "UNAVAILABLE") for s in states.values()) and len(states) == 2:
                break
            time.sleep(0.3)
        tail = log_path.read_text(errors="replace")[-3000:]
        assert states == {"lin_cpu": "READY", "lin_gpu": "READY"}, tail
        print(f"tritonserver from S3: READY after {time.monotonic() - started:.1f} s")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_materialize_gives_serve_a_local_copy_it_can_shadow(tmp_path, s3_endpoint, bucket):
    spec = tmp_path / "tsrepo.toml"
    spec.write_text(SPEC)
    build.build(load_spec(spec), tmp_path / "repo")
    s3.push(tmp_path / "repo", s3.parse(f"s3://{bucket}/repo", s3_endpoint))
    copy = s3.materialize(f"s3://{bucket}/repo", s3_endpoint, cache=tmp_path / "cache")
    result = shadow.build_shadow(copy, tmp_path / "shadow", gpu_available=False)
    assert sorted(result.models) == ["lin_cpu", "lin_gpu"]
    assert Path(tmp_path / "shadow" / "lin_cpu" / "1" / "model.pt").resolve().is_relative_to(copy)
