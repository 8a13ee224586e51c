"""Issue 13: custom-op libraries recorded in tsrepo.json are mounted and preloaded by a compose override
file (Triton's PyTorch backend has no config field for them); the main compose file keeps its text."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import meta
from tsrepo.errors import ServeError
from tsrepo.serve import compose

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "docker-compose.yml"


def _repo_with_ops(tmp_path: Path, library: Path) -> Path:
    repo = tmp_path / "model_repository"
    (repo / "m" / "1").mkdir(parents=True)
    cfg = pb.ModelConfig(name="m", platform="pytorch_libtorch", max_batch_size=2)
    (repo / "m" / "config.pbtxt").write_text(text_format.MessageToString(cfg))
    (repo / "m" / "1" / "model.pt").write_bytes(b"weights")
    record = meta.ModelMeta("m", 2, (), (), 1e-4, 1e-5, {1: meta.VersionMeta("0" * 64, "2.13.0", "script", 3)})
    ops = (
        meta.OpLibraryMeta("tsrepo_test", ("muladd",), str(library), "1" * 64),
        meta.OpLibraryMeta("torchvision", ("nms",), None, None, "pytorch_backend"),
    )
    (repo / "m" / "tsrepo.json").write_text(dataclasses.replace(record, op_libraries=ops).dumps())
    return repo


def test_recorded_op_libraries_get_an_override_that_mounts_and_preloads_them(tmp_path):
    library = tmp_path / "libtsrepo_test_ops.so"
    library.write_bytes(b"\x7fELF")
    compose_file = tmp_path / "docker" / "docker-compose.yml"
    compose_file.parent.mkdir()
    shutil.copy(COMPOSE, compose_file)
    prepared = compose.prepare(_repo_with_ops(tmp_path, library), compose_file)
    assert prepared.ops_file == compose_file.parent / "docker-compose.ops.yml"
    doc = yaml.safe_load(prepared.ops_file.read_text())
    for service in ("triton", "triton-cpu"):
        s = doc["services"][service]
        assert s["volumes"] == [f"{library}:/opt/tsrepo/ops/libtsrepo_test_ops.so:ro"]  # torchvision: the backend's
        assert s["entrypoint"][0] == "/opt/nvidia/nvidia_entrypoint.sh"
        assert "LD_PRELOAD=/opt/tsrepo/ops/libtsrepo_test_ops.so" in s["entrypoint"][3]
        assert "/opt/tritonserver/backends/pytorch" in s["entrypoint"][3]
    assert "tsrepo" not in compose_file.read_text().split("x-triton")[1]  # the main file is not rewritten
    if shutil.which("docker-compose"):  # the real tool merges the two files (no engine needed)
        merged = subprocess.run(
            ["docker-compose", "-f", str(compose_file), "-f", str(prepared.ops_file), "config"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert merged.returncode == 0, merged.stderr
        services = yaml.safe_load(merged.stdout)["services"]
        assert any("/opt/tsrepo/ops" in str(v) for v in services["triton"]["volumes"])
        assert any("/models" in str(v) for v in services["triton"]["volumes"])  # the repository mount is kept


def test_a_recorded_library_that_is_gone_is_refused_and_nothing_is_written(tmp_path):
    compose_file = tmp_path / "docker-compose.yml"
    shutil.copy(COMPOSE, compose_file)
    before = compose_file.read_text()
    with pytest.raises(ServeError, match="libgone.so: a custom-op library"):
        compose.prepare(_repo_with_ops(tmp_path, tmp_path / "libgone.so"), compose_file)
    assert compose_file.read_text() == before and not (tmp_path / "docker-compose.ops.yml").exists()
