"""One way to start either engine, wait in the foreground, and stop cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

from tsrepo.errors import ServerFailed
from tsrepo.serve import compose, local
from tsrepo.serve.local import ModelState, Ports, load_failure_message

__all__ = ["DockerServer", "Ports", "start", "wait_for_signal"]


@dataclass
class DockerServer:
    """The official container started with docker compose."""

    command: list[str]
    env: dict
    ports: Ports
    service: str
    warnings: list[str] = field(default_factory=list)

    def models(self) -> list[ModelState]:
        return local.repository_index(f"127.0.0.1:{self.ports.http}")

    def alive(self) -> bool:
        return local.is_live(f"127.0.0.1:{self.ports.http}")

    def stop(self) -> None:
        subprocess.run([*self.command, "down"], env=self.env, capture_output=True, check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _start_docker(
    repo: Path, ports: Ports, compose_file: Path, timeout: float, exit_on_error: bool, progress
) -> DockerServer:
    # The user's input is checked in full before the engine, and nothing is written without one.
    planned = compose.plan(repo, compose_file)
    compose.check_engine()
    base_command = [*compose.compose_command(), "-f", str(compose_file)]
    prepared = compose.apply(planned)
    if prepared.ops_file is not None:  # custom-op libraries mounted and preloaded by the override
        base_command += ["-f", str(prepared.ops_file)]
    gpu = local.gpu_visible()
    service = "triton" if gpu else "triton-cpu"
    env = {
        **os.environ,
        "MODEL_REPOSITORY": str(Path(repo).resolve()),
        "CPU_MODEL_REPOSITORY": str(prepared.cpu_repo),
        "TRITON_HTTP_PORT": str(ports.http),
        "TRITON_GRPC_PORT": str(ports.grpc),
        "TRITON_METRICS_PORT": str(ports.metrics),
    }
    command = list(base_command)
    if not gpu:
        command += ["--profile", "cpu"]
    server = DockerServer(command, env, ports, service)
    server.warnings.extend(prepared.warnings)
    if not gpu:
        server.warnings.append("no GPU is visible: serving the KIND_CPU copy with the triton-cpu service")
    progress(f"docker compose up {service} ({prepared.choice.image})")
    up = subprocess.run([*command, "up", "-d", service], env=env, capture_output=True, text=True, check=False)
    if up.returncode != 0:
        raise ServerFailed(f"docker compose up failed: {(up.stderr or up.stdout).strip()[-800:]}")
    deadline = time.monotonic() + timeout
    while not local.is_live(f"127.0.0.1:{ports.http}"):
        if time.monotonic() > deadline:
            server.stop()
            raise ServerFailed(f"the container was not live after {timeout:.0f} s; see `{' '.join(command)} logs`")
        time.sleep(1)
    failed = [m for m in server.models() if m.state != "READY"]
    if failed and exit_on_error:
        server.stop()
        raise ServerFailed(load_failure_message(failed))
    return server


def start(
    engine: str,
    repo: Path,
    ports: Ports,
    *,
    exit_on_error: bool = True,
    timeout: float = 180.0,
    compose_file: Path = Path("docker/docker-compose.yml"),
    templates: Path | None = None,
    progress=lambda _m: None,
):
    if engine == "docker":
        local.check_arguments(ports, timeout)  # the container publishes the same ports on this host
        return _start_docker(repo, ports, compose_file, timeout, exit_on_error, progress)
    return local.start(
        repo, ports, exit_on_error=exit_on_error, timeout=timeout, templates=templates, progress=progress
    )


def sigterm_as_interrupt() -> None:
    """Treat SIGTERM like Ctrl-C, so a stop at any moment (even while starting) cleans up."""
    from tsrepo import interrupts

    interrupts.install(signal.SIGINT, signal.SIGTERM)


def wait_for_signal(handle) -> int:
    """Block until SIGINT/SIGTERM (exit 0) or until the server dies (exit 1)."""
    try:
        while True:
            time.sleep(0.5)
            try:
                if not handle.alive():
                    break
            except (urllib.error.URLError, OSError):
                break
    except KeyboardInterrupt:
        return 0
    if isinstance(handle, local.LocalServer):
        raise ServerFailed(f"tritonserver exited unexpectedly; the end of its log:\n{handle.log_tail(20)}")
    return 1
