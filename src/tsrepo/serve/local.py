"""The local engine: the real `tritonserver` shipped in the nvidia-pytriton wheel, on CPU or GPU.

The wheel carries Triton 2.51.0 (container 24.10) with the Python backend but no libtorch backend,
so models run through a shadow repository (see shadow.py). Everything else is the real Triton core.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tsrepo.errors import ServeError
from tsrepo.serve import shadow

READY_STATES = {"READY"}
FAILED_STATES = {"UNAVAILABLE"}


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    libs: Path
    python_backend: Path
    stub: Path
    version_tag: str  # pytriton's version, names the backend cache


def find_triton() -> TritonInstall:
    """Locate tritonserver, its libraries and the Python backend inside the nvidia-pytriton wheel."""
    try:
        import pytriton
    except ImportError:
        raise ServeError(
            "the local engine needs the nvidia-pytriton wheel (Linux x86_64): pip install nvidia-pytriton==0.7.0,"
            " or use --engine docker"
        ) from None
    root = Path(pytriton.__file__).resolve().parent / "tritonserver"
    site = Path(pytriton.__file__).resolve().parent.parent
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=root / "bin" / "tritonserver",
        libs=site / "nvidia_pytriton.libs",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / py / "triton_python_backend_stub",
        version_tag=getattr(pytriton, "__version__", "unknown"),
    )
    for p in (install.binary, install.libs, install.python_backend, install.stub):
        if not p.exists():
            raise ServeError(f"{p}: missing from the nvidia-pytriton install (no stub for Python {py}?)")
    return install


def backend_dir(install: TritonInstall) -> Path:
    """A backends folder whose python/ holds the backend library and the stub for this Python.

    Built once per pytriton version and Python in the user's cache, never inside site-packages.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tsrepo"
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    dest = cache / f"triton-backends-{install.version_tag}-{py}"
    if (dest / "python" / "triton_python_backend_stub").is_file():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".backends-", dir=cache))
    (tmp / "python").mkdir()
    for item in install.python_backend.iterdir():
        if item.name != "__pycache__":
            os.symlink(item, tmp / "python" / item.name)
    shutil.copy2(install.stub, tmp / "python" / "triton_python_backend_stub")
    try:
        os.rename(tmp, dest)
    except OSError:  # another process won the race; use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def gpu_visible() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


@dataclass
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


@dataclass
class ModelState:
    name: str
    version: str
    state: str
    reason: str


@dataclass
class LocalServer:
    """A running tritonserver process and the shadow repository it serves."""

    process: subprocess.Popen
    ports: Ports
    workdir: Path  # holds the shadow repository and the server log; removed on stop
    log_path: Path
    warnings: list[str] = field(default_factory=list)

    @property
    def shadow_root(self) -> Path:
        return self.workdir / "repository"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}/metrics"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def models(self) -> list[ModelState]:
        data = _post_json(f"http://{self.http_url}/v2/repository/index", {})
        return [
            ModelState(m.get("name", ""), m.get("version", ""), m.get("state", ""), m.get("reason", "")) for m in data
        ]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server's process group (server and backend stubs), SIGKILL what remains."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Stubs can outlive the server by a moment; the group is gone only when all are.
        deadline = time.monotonic() + timeout
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(self.process.pid):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.wait(5)
        shadow.remove(self.workdir)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still counts; check /proc for live members.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _post_json(url: str, body: dict, timeout: float = 5.0):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def _get_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def server_env(install: TritonInstall) -> dict:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(install.libs), env.get("LD_LIBRARY_PATH")]))
    # The Python backend's stub imports numpy and torch from the environment it starts in.
    bin_dir = sysconfig.get_path("scripts") or str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def start(
    repo: Path,
    ports: Ports | None = None,
    *,
    exit_on_error: bool = True,
    timeout: float = 180.0,
    templates: Path | None = None,
    log_verbose: int = 0,
    progress: Callable[[str], None] = lambda _m: None,
) -> LocalServer:
    """Start tritonserver on `repo` and wait until every model is loaded or has failed.

    With exit_on_error, a model that fails to load stops the server and raises ServeError naming the
    model and quoting the server's reason.
    """
    ports = ports or Ports()
    check_ports_free(ports)
    install = find_triton()
    backends = backend_dir(install)
    work = Path(tempfile.mkdtemp(prefix="tsrepo-serve-"))
    shadow_root = work / "repository"
    try:
        result = shadow.build_shadow(Path(repo), shadow_root, gpu_visible(), templates)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log_path = work / "tritonserver.log"
    cmd = [
        str(install.binary),
        f"--model-repository={shadow_root}",
        f"--backend-directory={backends}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--disable-auto-complete-config",
        # Load failures are collected from the repository index and reported by model name below.
        "--exit-on-error=false",
        # Idle keep-alive client connections otherwise hold a SIGTERM for the default 30 s.
        "--exit-timeout-secs=3",
        f"--log-verbose={log_verbose}",
    ]
    if not gpu_visible():
        cmd.append("--allow-gpu-metrics=false")
    log = open(log_path, "wb")
    try:
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env(install),
            start_new_session=True,
            cwd=work,
        )
    finally:
        log.close()
    server = LocalServer(process, ports, work, log_path, list(result.warnings))
    try:
        _wait_loaded(server, result.models, timeout, progress)
        failed = [m for m in server.models() if m.state not in READY_STATES]
        if failed and exit_on_error:
            raise ServeError(load_failure_message(failed))
    except BaseException:
        server.stop()
        raise
    return server


def check_ports_free(ports: Ports) -> None:
    import socket

    for option, port in (("--http-port", ports.http), ("--grpc-port", ports.grpc), ("--metrics-port", ports.metrics)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise ServeError(f"port {port} on 127.0.0.1 is already in use; choose another with {option}") from None


def load_failure_message(failed: list[ModelState]) -> str:
    lines = [f"{len(failed)} model(s) failed to load:"]
    for m in failed:
        lines.append(f"  {m.name} (version {m.version or '?'}): {m.reason or m.state}")
    lines.append("(pass --no-exit-on-error to serve the other models anyway)")
    return "\n".join(lines)


def _wait_loaded(server: LocalServer, names: list[str], timeout: float, progress) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{server.http_url}/v2/health/live"
    while True:
        if not server.alive():
            raise ServeError(
                f"tritonserver exited with code {server.process.returncode} before it was ready;"
                f" the end of its log:\n{server.log_tail(25)}"
            )
        if _get_status(url) == 200:
            try:
                states = {m.name: m for m in server.models()}
            except (urllib.error.URLError, OSError, ValueError):
                states = {}
            pending = [n for n in names if n not in states or states[n].state not in READY_STATES | FAILED_STATES]
            if not pending:
                return
            progress(f"loading {', '.join(pending)}")
        else:
            progress("starting tritonserver")
        if time.monotonic() > deadline:
            raise ServeError(
                f"tritonserver was not ready after {timeout:.0f} s; the end of its log:\n{server.log_tail(25)}"
            )
        time.sleep(0.2)
