"""Operators outside aten/prim in an exported model, and the shared libraries that register them.

A TorchScript file that calls `my_ops::muladd` loads only in a process where the library registering
`my_ops` was loaded first ("Unknown builtin op: my_ops::muladd"). Triton's PyTorch backend has no config
field for op libraries: its rule (server docs, docs/user_guide/custom_operations.md, "PyTorch") is to start
the server with the library in LD_PRELOAD and /opt/tritonserver/backends/pytorch on LD_LIBRARY_PATH, and
the library must be built against the container's PyTorch; torchvision's operators are linked into the
backend since 20.07 and need nothing. tsrepo records each namespace's library in tsrepo.json; the local
runner loads it with torch.ops.load_library, compose and Kubernetes mount and preload it.

The library of a namespace is found among those loaded with `torch.ops.load_library` (what
`torch.utils.cpp_extension.load(..., is_python_module=False)` does too): TORCH_LIBRARY(ns, m) keeps `ns`
as a NUL-terminated string literal in the library, which is what is looked for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from tsrepo.errors import ServingError
from tsrepo.meta import OpLibraryMeta

# Namespaces libtorch itself registers: every server with the same libtorch has them.
BUILTIN_NAMESPACES = frozenset(
    {"aten", "prim", "prims", "quantized", "_quantized", "profiler", "cuda", "onnx", "attr", "_caffe2", "c10d"}
)
# Namespaces the official PyTorch backend links (TorchVision operations, since Triton 20.07).
BACKEND_NAMESPACES = {"torchvision": "pytorch_backend"}


def used_ops(module: torch.jit.ScriptModule) -> list[str]:
    """Qualified names (`ns::op`) of the operators forward calls, submodules and nested blocks included."""
    found: set[str] = set()

    def walk(block) -> None:
        for node in block.nodes():
            found.add(node.kind())
            for sub in node.blocks():
                walk(sub)

    try:
        graph = module.inlined_graph
    except (AttributeError, RuntimeError):
        graph = module.graph
    walk(graph)
    return sorted(k for k in found if "::" in k)


def custom_ops(module: torch.jit.ScriptModule) -> dict[str, list[str]]:
    """namespace -> ops, for operators outside libtorch's own namespaces."""
    out: dict[str, list[str]] = {}
    for op in used_ops(module):
        ns = op.split("::", 1)[0]
        if ns not in BUILTIN_NAMESPACES:
            out.setdefault(ns, []).append(op)
    return out


def _registers(path: Path, namespace: str) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return b"\0" + namespace.encode() + b"\0" in data


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def libraries(where: str, module: torch.jit.ScriptModule) -> tuple[OpLibraryMeta, ...]:
    """What tsrepo.json records for the model's custom ops. Raises ServingError when a namespace's library
    cannot be found: a repository that loads nowhere but here must not be called ok."""
    loaded = [Path(p) for p in sorted(getattr(torch.ops, "loaded_libraries", set()))]
    out = []
    for ns, ops in sorted(custom_ops(module).items()):
        if ns in BACKEND_NAMESPACES:
            out.append(OpLibraryMeta(ns, tuple(ops), provided_by=BACKEND_NAMESPACES[ns]))
            continue
        owners = [p for p in loaded if _registers(p, ns)]
        if not owners:
            raise ServingError(
                f"{where}: the model calls {', '.join(ops)}, registered by a library tsrepo cannot find (none of"
                f" the libraries loaded with torch.ops.load_library registers namespace {ns!r}). Load the op library"
                " with torch.ops.load_library(PATH) in the module that builds the model, so tsrepo can record it"
                " and the server can preload it"
            )
        lib = owners[0].resolve()
        out.append(OpLibraryMeta(ns, tuple(ops), str(lib), sha256(lib)))
    return tuple(out)


def describe(where: str, libs: tuple[OpLibraryMeta, ...]) -> list[str]:
    """Notes for the build output: what a server needs to load this model."""
    notes = []
    for lib in libs:
        if lib.provided_by:
            notes.append(
                f"{where}: calls {', '.join(lib.ops)}; the official PyTorch backend links {lib.namespace}'s operators,"
                " so the container needs nothing more (the local engine needs the same package importable)"
            )
        else:
            notes.append(
                f"{where}: calls {', '.join(lib.ops)} from {lib.library}; recorded in tsrepo.json. The official"
                " server loads it only when started with LD_PRELOAD (and /opt/tritonserver/backends/pytorch on"
                " LD_LIBRARY_PATH), and the library must be built against the container's PyTorch"
            )
    return notes
