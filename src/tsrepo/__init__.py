"""tsrepo: from PyTorch models to a Triton model repository that the server loads as it is.

The public API, imported lazily so that `import tsrepo` (and `tsrepo --help`) stays instant:

    spec = tsrepo.load_spec("tsrepo.toml")
    tsrepo.build_repository(spec, "model_repository")
    with tsrepo.start_server("local", "model_repository", tsrepo.Ports()) as server: ...
    tsrepo.validate("127.0.0.1:8000", "model_repository")
    tsrepo.bench(settings, "concurrency", [1, 4], "model_repository")

`build`, `serve` and `doctor` are the names of the modules and packages that hold each stage, so the
functions that run them are `build_repository`, `start_server` and `diagnose`.
"""

from __future__ import annotations

from importlib import import_module

from tsrepo.errors import ClientError, ServerRefused, ServerTimeout, ServerUnreachable, TsrepoError

__version__ = "0.1.0"

_LAZY = {
    "load_spec": ("tsrepo.spec", "load_spec"),
    "build_repository": ("tsrepo.build", "build"),
    "diagnose": ("tsrepo.doctor", "check"),
    "start_server": ("tsrepo.serve.runner", "start"),
    "Ports": ("tsrepo.serve.local", "Ports"),
    "validate": ("tsrepo.client.validate", "validate"),
    "bench": ("tsrepo.client.bench", "run"),
    "BenchSettings": ("tsrepo.client.bench", "Settings"),
}

__all__ = [
    "BenchSettings",
    "ClientError",
    "Ports",
    "ServerRefused",
    "ServerTimeout",
    "ServerUnreachable",
    "TsrepoError",
    "bench",
    "build_repository",
    "diagnose",
    "load_spec",
    "start_server",
    "validate",
]


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'tsrepo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
