from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo.errors import ServeError
from tsrepo.serve import compose, containers

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "docker-compose.yml"


def _config(*files: Path, env: dict | None = None) -> dict:
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is not installed (scripts/test.sh installs Debian's package)")
    args = ["docker-compose"]
    for f in files:
        args += ["-f", str(f)]
    out = subprocess.run(
        args + ["config"],
        capture_output=True,
        text=True,
        cwd=ROOT / "docker",
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_file_mounts_the_repository_read_only_with_gpus_and_local_ports():
    cfg = _config(COMPOSE)
    svc = cfg["services"]["triton"]
    assert svc["volumes"] == [f"{ROOT / 'model_repository'}:/models:ro"]
    assert sorted(svc["ports"]) == ["127.0.0.1:8000:8000/tcp", "127.0.0.1:8001:8001/tcp", "127.0.0.1:8002:8002/tcp"]
    assert svc["healthcheck"]["test"][-1] == "http://localhost:8000/v2/health/ready"
    device = svc["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and int(device["count"]) == 1
    assert svc["ulimits"] == {"memlock": -1, "stack": 67108864}
    assert svc["shm_size"]
    assert svc["restart"] == "unless-stopped"
    assert "--disable-auto-complete-config" in svc["command"]
    assert "--model-control-mode=explicit" in svc["command"]
    assert svc["image"].startswith(containers.IMAGE + ":")


def test_environment_overrides_ports_bind_address_and_gpu_count():
    cfg = _config(COMPOSE, env={"TRITON_HTTP_PORT": "9000", "TRITON_BIND_ADDRESS": "0.0.0.0", "TRITON_GPU_COUNT": "2"})
    svc = cfg["services"]["triton"]
    assert "0.0.0.0:9000:8000/tcp" in svc["ports"]
    assert int(svc["deploy"]["resources"]["reservations"]["devices"][0]["count"]) == 2


def test_cpu_service_has_no_gpu_reservation_and_mounts_the_cpu_copy():
    cfg = _config(COMPOSE)
    cpu = cfg["services"]["triton-cpu"]
    assert "deploy" not in cpu
    assert cpu["profiles"] == ["cpu"]
    assert cpu["volumes"] == [f"{ROOT / 'model_repository.cpu'}:/models:ro"]


def test_gpu_ids_override_pins_devices():
    cfg = _config(COMPOSE, ROOT / "docker" / "docker-compose.gpu-ids.yml", env={"TRITON_GPU_IDS": "0,1"})
    assert cfg["services"]["triton"]["environment"]["NVIDIA_VISIBLE_DEVICES"] == "0,1"


def test_env_example_documents_every_variable():
    text = COMPOSE.read_text() + (ROOT / "docker" / "docker-compose.gpu-ids.yml").read_text()
    import re

    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    documented = set(re.findall(r"^([A-Z_]+)=", (ROOT / "docker" / ".env.example").read_text(), re.MULTILINE))
    assert used == documented


@pytest.mark.parametrize(
    "torch_version, release",
    [("2.3.1", "24.03"), ("2.4.0", "24.05"), ("2.5.1+cpu", "24.10"), ("2.6.0", "24.11"), ("2.9.1", "25.10")],
)
def test_container_choice_is_the_oldest_release_that_loads_the_export(torch_version, release):
    choice = containers.choose(torch_version, 3)
    assert choice.release == release and choice.warning is None
    assert choice.image == f"nvcr.io/nvidia/tritonserver:{release}-py3"


def test_torch_newer_than_every_known_container_warns():
    choice = containers.choose("2.13.0+cpu", 3)
    assert choice.release == containers.RELEASES[-1][0]
    assert "newer than" in choice.warning and "2.13.0" in choice.warning and "file format 3" in choice.warning


def _repo(tmp_path: Path, torch_version: str = "2.5.1") -> Path:
    repo = tmp_path / "model_repository"
    (repo / "m" / "1").mkdir(parents=True)
    cfg = pb.ModelConfig(name="m", platform="pytorch_libtorch", max_batch_size=2)
    cfg.instance_group.add(kind=pb.ModelInstanceGroup.KIND_GPU, count=2, gpus=[0])
    (repo / "m" / "config.pbtxt").write_text(text_format.MessageToString(cfg))
    (repo / "m" / "1" / "model.pt").write_bytes(b"weights")
    (repo / "m" / "tsrepo.json").write_text(
        json.dumps({"versions": {"1": {"torch": torch_version, "file_format_version": 3}}})
    )
    return repo


def test_prepare_writes_the_tag_and_a_kind_cpu_copy(tmp_path):
    repo = _repo(tmp_path)
    compose_file = tmp_path / "docker-compose.yml"
    shutil.copy(COMPOSE, compose_file)
    prepared = compose.prepare(repo, compose_file)
    assert prepared.choice.release == "24.10"
    assert "${TRITON_IMAGE:-nvcr.io/nvidia/tritonserver:24.10-py3}" in compose_file.read_text()
    cpu_cfg = text_format.Parse((prepared.cpu_repo / "m" / "config.pbtxt").read_text(), pb.ModelConfig())
    assert cpu_cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU and not cpu_cfg.instance_group[0].gpus
    assert (prepared.cpu_repo / "m" / "1" / "model.pt").read_bytes() == b"weights"
    # the user's repository is unchanged
    assert "KIND_GPU" in (repo / "m" / "config.pbtxt").read_text()


def test_docker_engine_without_an_engine_says_so(monkeypatch, tmp_path):
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0:
        pytest.skip("a Docker engine is running here")
    if shutil.which("docker"):  # the real client, with no engine behind it (these machines)
        with pytest.raises(ServeError, match="no Docker engine is reachable.*--engine local"):
            compose.check_engine()
        return
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text(
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n"
    )
    (fake / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    with pytest.raises(ServeError, match="no Docker engine is reachable.*--engine local"):
        compose.check_engine()
