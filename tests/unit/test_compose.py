from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import meta
from tsrepo.cli import main
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
    choice = containers.choose("2.99.0+cpu", 3)
    assert choice.release == containers.RELEASES[-1][0]
    assert "newer than" in choice.warning and "2.99.0" in choice.warning and "file format 3" in choice.warning


def test_torch_2_13_exports_pick_the_first_release_on_libtorch_2_13():
    choice = containers.choose("2.13.0+cpu", 3)
    assert choice.release == "26.07" and choice.container_torch.startswith("2.13")


def _repo(tmp_path: Path, torch_version: str = "2.5.1") -> Path:
    repo = tmp_path / "model_repository"
    (repo / "m" / "1").mkdir(parents=True)
    cfg = pb.ModelConfig(name="m", platform="pytorch_libtorch", max_batch_size=2)
    cfg.instance_group.add(kind=pb.ModelInstanceGroup.KIND_GPU, count=2, gpus=[0])
    (repo / "m" / "config.pbtxt").write_text(text_format.MessageToString(cfg))
    (repo / "m" / "1" / "model.pt").write_bytes(b"weights")
    (repo / "m" / "tsrepo.json").write_text(_meta_text("m", torch_version))
    return repo


def _meta_text(model: str, torch_version: str) -> str:
    record = meta.ModelMeta(model, 2, (), (), 1e-4, 1e-5, {1: meta.VersionMeta("0" * 64, torch_version, "script", 3)})
    return record.dumps()


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


# ---- checked before anything is written -------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _compose(*args: str):
    result = CliRunner().invoke(main, ["compose", *args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def prepared(tmp_path) -> tuple[Path, Path, Path]:
    """A repository prepared once (its .cpu copy exists), and a compose file that still names another tag."""
    repo = _repo(tmp_path)
    compose_file = tmp_path / "docker-compose.yml"
    shutil.copy(COMPOSE, compose_file)
    cpu_repo = compose.prepare(repo, compose_file).cpu_repo
    shutil.copy(COMPOSE, compose_file)
    return repo, compose_file, cpu_repo


def _break(repo: Path, case: str) -> str:
    second = repo / "n"
    shutil.copytree(repo / "m", second)
    (second / "config.pbtxt").write_text((second / "config.pbtxt").read_text().replace('"m"', '"n"'))
    if case == "garbage config.pbtxt":
        (second / "config.pbtxt").write_text('name: "n"\ngarbage {')
        return f"{second / 'config.pbtxt'}: Triton's schema rejects it"
    if case == "non-UTF-8 config.pbtxt":
        (second / "config.pbtxt").write_bytes(b'name: "n\xe9"')
        return f"{second / 'config.pbtxt'}: not UTF-8 text"
    if case == "tsrepo.json not an object":
        (second / "tsrepo.json").write_text("[1, 2]")
        return f"{second / 'tsrepo.json'}: `(top level)` must be a JSON object"
    if case == "torch version nightly":
        (second / "tsrepo.json").write_text(_meta_text("n", "nightly"))
        return f"{second / 'tsrepo.json'}: `versions.1.torch` is not a torch version"
    if case == "tsrepo.json not JSON":
        (second / "tsrepo.json").write_text("{")
        return f"{second / 'tsrepo.json'}: not valid JSON"
    if case == "no version folder":
        shutil.rmtree(second / "1")
        return f"{second}: no version folder"
    if case == "folder name Triton cannot serve":
        second.rename(repo / "n n")
        return "the model folder name 'n n' has characters"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "garbage config.pbtxt",
        "non-UTF-8 config.pbtxt",
        "tsrepo.json not an object",
        "torch version nightly",
        "tsrepo.json not JSON",
        "no version folder",
        "folder name Triton cannot serve",
    ],
)
def test_a_bad_model_leaves_the_compose_file_and_the_cpu_copy_unchanged(prepared, case):
    repo, compose_file, cpu_repo = prepared
    message = _break(repo, case)
    compose_before, cpu_before = compose_file.read_bytes(), _tree(cpu_repo)
    result = _compose("--repo", str(repo), "--compose", str(compose_file))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert compose_file.read_bytes() == compose_before
    assert _tree(cpu_repo) == cpu_before
    assert sorted(p.name for p in cpu_repo.parent.iterdir()) == sorted(
        ["docker-compose.yml", "model_repository", "model_repository.cpu"]
    )


def test_a_failure_while_writing_the_cpu_copy_leaves_both_files_as_they_were(prepared, monkeypatch):
    repo, compose_file, cpu_repo = prepared
    compose_before, cpu_before = compose_file.read_bytes(), _tree(cpu_repo)

    def no_space(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compose.os, "link", no_space)
    monkeypatch.setattr(compose.shutil, "copy2", no_space)
    with pytest.raises(ServeError, match="No space left on device"):
        compose.prepare(repo, compose_file)
    assert compose_file.read_bytes() == compose_before
    assert _tree(cpu_repo) == cpu_before
    assert sorted(p.name for p in cpu_repo.parent.iterdir()) == sorted(
        ["docker-compose.yml", "model_repository", "model_repository.cpu"]
    )


def test_a_model_without_tsrepo_json_is_named_in_a_warning(tmp_path):
    repo = _repo(tmp_path)
    shutil.copytree(repo / "m", repo / "other")
    (repo / "other" / "config.pbtxt").write_text(
        (repo / "other" / "config.pbtxt").read_text().replace('"m"', '"other"')
    )
    (repo / "other" / "tsrepo.json").unlink()
    compose_file = tmp_path / "docker-compose.yml"
    shutil.copy(COMPOSE, compose_file)
    result = _compose("--repo", str(repo), "--compose", str(compose_file))
    assert result.exit_code == 0, result.output
    assert "warning: other: no tsrepo.json records the torch that exported it" in result.output
    assert "24.10-py3} " not in result.output and "${TRITON_IMAGE:-nvcr.io/nvidia/tritonserver:24.10-py3}" in (
        compose_file.read_text()
    )


def test_a_repository_where_no_model_records_its_torch_is_refused(tmp_path):
    repo = _repo(tmp_path)
    (repo / "m" / "tsrepo.json").unlink()
    compose_file = tmp_path / "docker-compose.yml"
    shutil.copy(COMPOSE, compose_file)
    result = _compose("--repo", str(repo), "--compose", str(compose_file))
    assert result.exit_code == 2
    assert "no model has a tsrepo.json with the torch version that exported it" in result.output


@pytest.mark.parametrize("case", ["missing", "a folder", "no image line", "not writable", "not UTF-8"])
def test_a_bad_compose_file_is_refused_naming_it_and_nothing_is_written(tmp_path, monkeypatch, case):
    repo = _repo(tmp_path)
    compose_file = tmp_path / "docker-compose.yml"
    expected = {
        "missing": "compose file not found (--compose)",
        "a folder": "not a file; --compose takes a docker compose file",
        "no image line": "no `image: ${TRITON_IMAGE:-...}` line",
        "not writable": "not writable (--compose)",
        "not UTF-8": "cannot be read as UTF-8 text",
    }[case]
    if case == "a folder":
        compose_file.mkdir()
    elif case == "no image line":
        compose_file.write_text("services:\n  triton:\n    image: nvcr.io/nvidia/tritonserver:24.10-py3\n")
    elif case == "not UTF-8":
        compose_file.write_bytes(b"image: \xff\n")
    elif case == "not writable":
        shutil.copy(COMPOSE, compose_file)
        compose_file.chmod(0o444)  # root writes anyway: the check asks os.access, so ask it as a user would
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode: not (mode & os.W_OK and Path(p) == compose_file) and real_access(p, mode)
        )
    before = _tree(tmp_path)
    result = _compose("--repo", str(repo), "--compose", str(compose_file))
    assert result.exit_code == 2
    assert f"{compose_file}: {expected}" in result.output
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("case", ["missing", "a file", "empty", "without any model"])
def test_a_bad_repository_is_refused(tmp_path, case):
    repo = tmp_path / "repo"
    if case == "a file":
        repo.write_text("x")
    elif case == "empty":
        repo.mkdir()
    elif case == "without any model":
        (repo / ".git").mkdir(parents=True)
        (repo / "README").write_text("models go here")
    compose_file = tmp_path / "docker-compose.yml"
    shutil.copy(COMPOSE, compose_file)
    result = _compose("--repo", str(repo), "--compose", str(compose_file))
    assert result.exit_code == 2
    assert str(repo) in result.output and "--repo" in result.output
    assert compose_file.read_bytes() == COMPOSE.read_bytes()
    assert not (tmp_path / "repo.cpu").exists()


def test_a_symlinked_version_folder_is_copied_into_the_cpu_copy(tmp_path):
    repo = _repo(tmp_path)
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "model.pt").write_bytes(b"v2 weights")
    (repo / "m" / "2").symlink_to(tmp_path / "v2")
    compose_file = tmp_path / "docker-compose.yml"
    shutil.copy(COMPOSE, compose_file)
    compose_file.chmod(0o640)
    prepared = compose.prepare(repo, compose_file)
    assert (prepared.cpu_repo / "m" / "2" / "model.pt").read_bytes() == b"v2 weights"
    assert not (prepared.cpu_repo / "m" / "2").is_symlink()
    assert compose_file.stat().st_mode & 0o777 == 0o640  # the rewritten compose file keeps its mode


def test_a_symlinked_compose_file_is_updated_through_its_link(tmp_path):
    repo = _repo(tmp_path)
    real = tmp_path / "real.yml"
    shutil.copy(COMPOSE, real)
    link = tmp_path / "docker-compose.yml"
    link.symlink_to(real)
    compose.prepare(repo, link)
    assert link.is_symlink()
    assert "tritonserver:24.10-py3}" in real.read_text()


def test_compose_chooses_from_the_public_torch_minor_not_a_private_helper():
    assert not hasattr(containers, "_minor")
    assert containers.torch_minor("2.10.0a0+145a3a7bda") == (2, 10)
