"""`tsrepo serve` refuses bad input with exit 2 and a message naming it, before any server starts."""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo.cli import main
from tsrepo.errors import ServeError, UsageError
from tsrepo.serve import local, ports, shadow
from tsrepo.serve.local import Ports
from tsrepo.serve.ports import free_port, free_ports

ROOT = Path(__file__).resolve().parents[2]


def _serve(*args: str, port_set: Ports | None = None):
    p = port_set or free_ports()
    argv = ["serve", "--http-port", str(p.http), "--grpc-port", str(p.grpc), "--metrics-port", str(p.metrics)]
    result = CliRunner().invoke(main, [*argv, *args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def _model(repo: Path, name: str = "m", config: str | None = None, versions: tuple[str, ...] = ("1",)) -> Path:
    folder = repo / name
    folder.mkdir(parents=True)
    if config is None:
        config = text_format.MessageToString(pb.ModelConfig(name=name, platform="pytorch_libtorch", max_batch_size=2))
    (folder / "config.pbtxt").write_text(config)
    for v in versions:
        (folder / v).mkdir()
        (folder / v / "model.pt").write_bytes(b"weights")
    return folder


def _time_wait_port() -> int:
    """A port whose only socket is in TIME_WAIT, as a stopped server leaves its ports."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", free_port()))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first, so its end (on `port`) goes to TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    return port


# ---- ports -----------------------------------------------------------------------------------------


def test_a_port_left_in_time_wait_by_a_stopped_server_counts_as_free():
    port = _time_wait_port()
    with socket.socket() as plain, pytest.raises(OSError) as refused:
        plain.bind(("127.0.0.1", port))  # what the probe did before: refused for about a minute
    assert refused.value.errno == errno.EADDRINUSE
    others = free_ports()
    while port in (others.grpc, others.metrics):  # a port in TIME_WAIT is free for free_ports as well
        others = free_ports()
    local.check_ports_free(Ports(port, others.grpc, others.metrics))
    assert ports.bind_error(port) is None


@pytest.mark.parametrize("option", ["--http-port", "--grpc-port", "--metrics-port"])
def test_a_port_with_a_live_listener_is_refused_naming_its_option(tmp_path, option):
    p = free_ports()
    taken = {"--http-port": p.http, "--grpc-port": p.grpc, "--metrics-port": p.metrics}[option]
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a server's listener, as Triton binds
        s.bind(("127.0.0.1", taken))
        s.listen()
        result = _serve("--repo", str(tmp_path), port_set=p)
    assert result.exit_code == 2
    assert f"port {taken} on 127.0.0.1 is already in use; choose another with {option}" in result.output


def test_the_same_port_for_two_servers_is_refused_naming_both_options(tmp_path):
    p = free_ports()
    result = _serve("--repo", str(tmp_path), port_set=Ports(p.http, p.http, p.metrics))
    assert result.exit_code == 2
    assert f"--http-port and --grpc-port are both {p.http}" in result.output


@pytest.mark.parametrize("value", ["0", "-1", "65536", "http"])
def test_a_port_outside_1_to_65535_is_a_usage_error(value):
    result = CliRunner().invoke(main, ["serve", "--metrics-port", value], catch_exceptions=False)
    assert result.exit_code == 2
    assert "--metrics-port" in result.output and "Traceback" not in result.output


def test_a_privileged_port_without_root_says_so_naming_the_option(monkeypatch):
    # Tests run as root here, so the kernel's refusal is simulated at the probe.
    monkeypatch.setattr(ports, "bind_error", lambda port: PermissionError(errno.EACCES, "Permission denied"))
    with pytest.raises(UsageError, match=r"port 80 is below 1024.*choose another with --http-port"):
        local.check_ports_free(Ports(80, 18001, 18002))


def test_the_library_refuses_ports_outside_the_range_too():
    with pytest.raises(UsageError, match="--grpc-port must be a port number from 1 to 65535, got 0"):
        local.check_ports_free(Ports(18000, 0, 18002))


# ---- timeout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_timeout_must_be_finite_and_positive(tmp_path, value):
    _model(tmp_path / "repo")
    result = _serve("--repo", str(tmp_path / "repo"), "--timeout", value)
    assert result.exit_code == 2
    assert "--timeout must be a finite number of seconds > 0" in result.output


# ---- the repository --------------------------------------------------------------------------------


def _broken(tmp_path: Path, case: str) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    if case == "missing":
        return repo, f"{repo}: no such model repository"
    repo.mkdir()
    if case == "a file":
        repo.rmdir()
        repo.write_text("not a folder")
        return repo, f"{repo}: not a folder"
    if case == "empty":
        (repo / ".hidden").mkdir()
        return repo, f"{repo}: the repository has no models"
    if case == "garbage config":
        folder = _model(repo, config='name: "m"\ngarbage {')
        return repo, f"{folder / 'config.pbtxt'}: Triton's schema rejects it"
    if case == "no version folder":
        folder = _model(repo, versions=())
        return repo, f"{folder}: no version folder"
    if case == "non-UTF-8 config":
        folder = _model(repo, config='name: "m\xe9"')
        (folder / "config.pbtxt").write_bytes('name: "m\xe9"'.encode("latin-1"))
        return repo, f"{folder / 'config.pbtxt'}: not UTF-8 text"
    if case == "name differs from folder":
        folder = _model(repo, config='name: "other"\nplatform: "pytorch_libtorch"')
        return repo, f"{folder / 'config.pbtxt'}: `name` is 'other' but the folder is 'm'"
    if case == "name Triton cannot serve":
        _model(repo, name="a b", config='platform: "pytorch_libtorch"')
        return repo, "the model folder name 'a b' has characters a served model name cannot have"
    if case == "version without model.pt":
        folder = _model(repo)
        (folder / "1" / "model.pt").unlink()
        return repo, f"{folder / '1' / 'model.pt'}: missing"
    if case == "thread count not a number":
        folder = _model(
            repo,
            config='platform: "pytorch_libtorch"\nparameters { key: "INTER_OP_THREAD_COUNT" value { string_value: "x" } }',
        )
        what = "`parameters` INTER_OP_THREAD_COUNT is 'x', which does not start with a whole number"
        return repo, f"{folder / 'config.pbtxt'}: {what}"
    raise AssertionError(case)


BROKEN = [
    "missing",
    "a file",
    "empty",
    "garbage config",
    "no version folder",
    "non-UTF-8 config",
    "name differs from folder",
    "name Triton cannot serve",
    "version without model.pt",
    "thread count not a number",
]


@pytest.mark.parametrize("case", BROKEN)
def test_serve_refuses_a_broken_repository_naming_the_file(tmp_path, case):
    repo, message = _broken(tmp_path, case)
    result = _serve("--repo", str(repo))
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize("case", BROKEN)
def test_the_docker_engine_refuses_a_broken_repository_before_looking_for_docker(tmp_path, case):
    compose_file = tmp_path / "docker-compose.yml"
    shutil.copy(ROOT / "docker" / "docker-compose.yml", compose_file)
    repo, message = _broken(tmp_path, case)
    result = _serve("--repo", str(repo), "--engine", "docker", "--compose", str(compose_file))
    assert result.exit_code == 2, result.output
    assert message in result.output


# ---- templates -------------------------------------------------------------------------------------


def test_a_templates_folder_without_model_py_j2_is_refused_naming_the_file(tmp_path):
    _model(tmp_path / "repo")
    (tmp_path / "tpl").mkdir()
    result = _serve("--repo", str(tmp_path / "repo"), "--templates", str(tmp_path / "tpl"))
    assert result.exit_code == 2
    assert f"{tmp_path / 'tpl' / 'model.py.j2'}: missing" in result.output


def test_a_model_py_j2_with_a_syntax_error_is_refused_naming_file_and_line(tmp_path):
    _model(tmp_path / "repo")
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "model.py.j2").write_text('"""runner"""\n{% if model_name %}\n')
    result = _serve("--repo", str(tmp_path / "repo"), "--templates", str(tmp_path / "tpl"))
    assert result.exit_code == 2
    assert f"{tmp_path / 'tpl' / 'model.py.j2'}:2: template syntax error" in result.output


def test_a_model_py_j2_that_renders_invalid_python_is_refused(tmp_path):
    _model(tmp_path / "repo")
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "model.py.j2").write_text("class TritonPythonModel(:\n")
    result = _serve("--repo", str(tmp_path / "repo"), "--templates", str(tmp_path / "tpl"))
    assert result.exit_code == 2
    assert "renders a model.py that is not valid Python" in result.output


# ---- the docker engine -----------------------------------------------------------------------------


def test_docker_engine_with_a_missing_compose_file_is_a_usage_error(tmp_path):
    repo = tmp_path / "repo"
    _model(repo)
    result = _serve("--repo", str(repo), "--engine", "docker", "--compose", str(tmp_path / "nope.yml"))
    assert result.exit_code == 2
    assert f"{tmp_path / 'nope.yml'}: compose file not found (--compose)" in result.output


def test_local_engine_ignores_the_compose_option(tmp_path):
    # It fails later, on the repository: --compose itself is not looked at.
    result = _serve("--repo", str(tmp_path / "nope"), "--compose", str(tmp_path / "nope.yml"))
    assert result.exit_code == 2
    assert "no such model repository" in result.output and "nope.yml" not in result.output


def test_docker_engine_without_a_docker_engine_says_so_and_writes_nothing(tmp_path, monkeypatch):
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0:
        pytest.skip("a Docker engine is running here")
    if not shutil.which("docker"):
        fake = tmp_path / "bin"
        fake.mkdir()
        (fake / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
        (fake / "docker").chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    repo = tmp_path / "repo"
    _model(repo)
    (repo / "m" / "tsrepo.json").write_text(_meta_text("2.5.1"))
    compose_file = tmp_path / "docker-compose.yml"
    shutil.copy(ROOT / "docker" / "docker-compose.yml", compose_file)
    before = compose_file.read_bytes()
    result = _serve("--repo", str(repo), "--engine", "docker", "--compose", str(compose_file))
    assert result.exit_code == 2
    assert "no Docker engine is reachable" in result.output and "--engine local" in result.output
    assert compose_file.read_bytes() == before
    assert not (tmp_path / "repo.cpu").exists()


def _meta_text(torch_version: str) -> str:
    from tsrepo.meta import ModelMeta, VersionMeta

    return ModelMeta("m", 2, (), (), 1e-4, 1e-5, {1: VersionMeta("0" * 64, torch_version, "script", 3)}).dumps()


# ---- the shadow repository -------------------------------------------------------------------------


def test_symlinked_model_and_version_folders_are_served(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _model(elsewhere, name="lin")
    (elsewhere / "v2").mkdir()
    (elsewhere / "v2" / "model.pt").write_bytes(b"v2 weights")
    (elsewhere / "lin" / "2").symlink_to(elsewhere / "v2")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "lin").symlink_to(elsewhere / "lin")
    result = shadow.build_shadow(repo, tmp_path / "shadow", gpu_available=False)
    assert result.models == ["lin"]
    assert (tmp_path / "shadow" / "lin" / "1" / "model.pt").read_bytes() == b"weights"
    assert (tmp_path / "shadow" / "lin" / "2" / "model.pt").read_bytes() == b"v2 weights"
    assert (tmp_path / "shadow" / "lin" / "2" / "model.py").is_file()


def test_default_model_filename_is_loaded_and_not_passed_to_the_python_backend(tmp_path):
    cfg = pb.ModelConfig(name="m", platform="pytorch_libtorch", default_model_filename="weights.pt")
    folder = _model(tmp_path / "repo", config=text_format.MessageToString(cfg), versions=())
    (folder / "1").mkdir()
    (folder / "1" / "weights.pt").write_bytes(b"named weights")
    shadow.build_shadow(tmp_path / "repo", tmp_path / "shadow", gpu_available=False)
    served = text_format.Parse((tmp_path / "shadow" / "m" / "config.pbtxt").read_text(), pb.ModelConfig())
    assert served.backend == "python" and not served.default_model_filename
    assert (tmp_path / "shadow" / "m" / "1" / "model.pt").read_bytes() == b"named weights"


def test_a_bad_model_anywhere_leaves_no_shadow_behind(tmp_path):
    _model(tmp_path / "repo", name="a")
    _model(tmp_path / "repo", name="b", versions=())
    with pytest.raises(ServeError, match="no version folder"):
        shadow.build_shadow(tmp_path / "repo", tmp_path / "shadow", gpu_available=False)
    assert not (tmp_path / "shadow").exists()


def test_each_model_gets_a_runner_rendered_with_its_own_name(tmp_path):
    _model(tmp_path / "repo", name="a")
    _model(tmp_path / "repo", name="b")
    shadow.build_shadow(tmp_path / "repo", tmp_path / "shadow", gpu_available=False)
    assert "Serves b's" in (tmp_path / "shadow" / "b" / "1" / "model.py").read_text()
