"""The served model file of a version: which file the PyTorch backend loads, and loading it here.

One owner for "model.pt or model.pt2": the backend loads `default_model_filename` when the config
names one, else `model.pt2` for platform torch_aoti (26.03+) and `model.pt` for pytorch_libtorch.
validate, tune and the shadow repository all ask here, so a TorchScript file and an AOTInductor
package are run locally the way the server runs them.
"""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

TORCHSCRIPT_FILE = "model.pt"
AOTI_FILE = "model.pt2"
AOTI_PLATFORM = "torch_aoti"


def file_name(cfg: pb.ModelConfig) -> str:
    if cfg.default_model_filename:
        return cfg.default_model_filename
    return AOTI_FILE if cfg.platform == AOTI_PLATFORM else TORCHSCRIPT_FILE


def load(path: Path):
    """A callable that runs the file on CPU: torch.jit.load for TorchScript, aoti_load_package for a package."""
    import torch

    path = Path(path)
    if path.suffix == ".pt2":
        return torch._inductor.aoti_load_package(str(path))
    return torch.jit.load(str(path), map_location="cpu").eval()


def run(module, args) -> list:
    """Forward's outputs as a flat list of leaves (tensors, or a List[str]), for either kind of file."""
    import torch

    from tsrepo.verify import leaves

    with torch.no_grad():
        return leaves(module(*args))
