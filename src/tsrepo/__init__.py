"""tsrepo: from PyTorch models to a Triton model repository that the server loads as it is."""

from __future__ import annotations

__version__ = "0.1.0"
