"""The local engine: the real `tritonserver` shipped in the nvidia-pytriton wheel, on CPU or GPU.

The wheel carries Triton 2.51.0 (container 24.10) with the Python backend but no libtorch backend,
so models run through a shadow repository (see shadow.py). Everything else is the real Triton core.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tsrepo.errors import ClientError, ServeError, ServerFailed
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


MAX_TIMEOUT_S = 86400.0  # as validate's: a readiness wait of more than a day is a typo


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
    # The XDG spec says to ignore an empty or relative XDG_CACHE_HOME (it would land in the cwd).
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    cache = (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "tsrepo"
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    dest = cache / f"triton-backends-{install.version_tag}-{py}"
    stub = Path("python") / "triton_python_backend_stub"
    if (dest / stub).is_file():
        return dest
    tmp = None
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".backends-", dir=cache))
        (tmp / "python").mkdir()
        for item in install.python_backend.iterdir():
            if item.name != "__pycache__":
                os.symlink(item, tmp / "python" / item.name)
        shutil.copy2(install.stub, tmp / stub)
        os.rename(tmp, dest)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / stub).is_file():  # else another process won the race: use theirs
            raise ServeError(
                f"{cache}: cannot prepare the Python backend for tritonserver there ({e.strerror or e});"
                " make it writable, or point XDG_CACHE_HOME at a writable folder"
            ) from None
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


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # held while a server is being stopped


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
        return repository_index(self.http_url)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server's process group (server and backend stubs), SIGKILL what remains. A Ctrl-C
        or SIGTERM that arrives meanwhile is held until the server is gone, then raised: the server runs
        in a session of its own, so a stop cut short would leave it running with nobody to stop it."""
        if threading.current_thread() is not threading.main_thread():  # handlers belong to the main thread
            self._stop(timeout)
            return
        pending: list[int] = []
        previous = {sig: signal.signal(sig, lambda signum, _frame: pending.append(signum)) for sig in HELD_SIGNALS}
        try:
            self._stop(timeout)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
            if pending:  # now handled as it would have been: KeyboardInterrupt, the CLI's "interrupted"...
                signal.raise_signal(pending[0])

    def _stop(self, timeout: float) -> None:
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


def repository_index(http_url: str, timeout: float = 5.0) -> list[ModelState]:
    """Every model's state, through the client transport; raises ClientError when the server cannot answer."""
    from tsrepo.client import transport

    with transport.connect(http_url, transport.Protocol.HTTP, timeout) as client:
        return [
            ModelState(str(m.get("name", "")), str(m.get("version", "")), m.get("state", ""), m.get("reason", ""))
            for m in client.repository_index()
        ]


def is_live(http_url: str, timeout: float = 2.0) -> bool:
    """Whether the server at HOST:PORT answers /v2/health/live with 200 (False for any failure)."""
    from tsrepo.client import transport

    try:
        with transport.connect(http_url, transport.Protocol.HTTP, timeout) as client:
            return client.live()
    except ClientError:
        return False


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
    model_control: str = "none",
    load_models: list[str] | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> LocalServer:
    """Start tritonserver on `repo` and wait until every model is loaded or has failed.

    With exit_on_error, a model that fails to load stops the server and raises ServerFailed naming the
    model and quoting the server's reason. model_control="explicit" starts Triton in explicit
    model-control mode (the repository API may then load a model with another config, as tune does),
    loading `load_models` (default: every model) at start.
    """
    ports = ports or Ports()
    check_arguments(ports, timeout)
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
    expected = result.models
    if model_control == "explicit":
        unknown = [m for m in load_models or [] if m not in result.models]
        if unknown:
            shutil.rmtree(work, ignore_errors=True)
            raise ServeError(f"{repo}: no model named {', '.join(map(repr, unknown))} in the repository")
        expected = list(load_models) if load_models is not None else result.models
        cmd.append("--model-control-mode=explicit")
        cmd += [f"--load-model={m}" for m in expected]
    elif model_control != "none":
        shutil.rmtree(work, ignore_errors=True)
        raise ServeError(f"model control {model_control!r}: use none or explicit")
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
        _wait_loaded(server, expected, timeout, progress)
        failed = [m for m in server.models() if m.name in expected and m.state not in READY_STATES]
        if failed and exit_on_error:
            raise ServerFailed(load_failure_message(failed))
    except BaseException:
        server.stop()
        raise
    return server


def check_arguments(ports: Ports, timeout: float) -> None:
    """Refuse what no server start can use, before anything starts; each message names the option."""
    import math

    from tsrepo.errors import UsageError

    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise UsageError(f"--timeout must be a finite number of seconds > 0, got {timeout!r}")
    if timeout > MAX_TIMEOUT_S:
        raise UsageError(f"--timeout must be at most {MAX_TIMEOUT_S:g} seconds (a day), got {timeout!r}")
    check_ports_free(ports)


def check_ports_free(ports: Ports) -> None:
    """Three distinct port numbers that a server could bind on 127.0.0.1 now."""
    import errno

    from tsrepo.errors import UsageError
    from tsrepo.serve.ports import bind_error, is_privileged  # ports.py imports this module

    named = [("--http-port", ports.http), ("--grpc-port", ports.grpc), ("--metrics-port", ports.metrics)]
    for option, port in named:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise UsageError(f"{option} must be a port number from 1 to 65535, got {port!r}")
    for i, (option, port) in enumerate(named):
        for other, other_port in named[i + 1 :]:
            if port == other_port:
                raise UsageError(f"{option} and {other} are both {port}; each needs a port of its own")
    for option, port in named:
        error = bind_error(port)
        if error is None:
            continue
        if is_privileged(error):
            raise UsageError(
                f"port {port} is below 1024, which only root (or CAP_NET_BIND_SERVICE) may bind;"
                f" choose another with {option}"
            )
        if error.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on 127.0.0.1 is already in use; choose another with {option}")
        raise ServeError(f"port {port} on 127.0.0.1 cannot be bound ({error.strerror}); choose another with {option}")


def load_failure_message(failed: list[ModelState]) -> str:
    lines = [f"{len(failed)} model(s) failed to load:"]
    for m in failed:
        lines.append(f"  {m.name} (version {m.version or '?'}): {m.reason or m.state}")
    lines.append("(pass --no-exit-on-error to serve the other models anyway)")
    return "\n".join(lines)


def _wait_loaded(server: LocalServer, names: list[str], timeout: float, progress) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not server.alive():
            raise ServerFailed(
                f"tritonserver exited with code {server.process.returncode} before it was ready;"
                f" the end of its log:\n{server.log_tail(25)}"
            )
        if is_live(server.http_url):
            try:
                states = {m.name: m for m in server.models()}
            except ClientError:
                states = {}
            pending = [n for n in names if n not in states or states[n].state not in READY_STATES | FAILED_STATES]
            if not pending:
                return
            progress(f"loading {', '.join(pending)}")
        else:
            progress("starting tritonserver")
        if time.monotonic() > deadline:
            raise ServerFailed(
                f"tritonserver was not ready after {timeout:.0f} s; the end of its log:\n{server.log_tail(25)}"
            )
        time.sleep(0.2)
