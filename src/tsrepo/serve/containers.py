"""Which official Triton container can load what the local torch exported.

Triton's `py3` container of release YY.MM runs its PyTorch backend on the libtorch of the NGC
PyTorch container of the same release. The versions below come from NVIDIA's Triton "Release
Compatibility Matrix" (user-guide/docs/introduction/compatibility.html), whose Torch column carries
the NGC build suffix `.nvYY.MM` naming the PyTorch container each libtorch comes from. Only
releases whose version could be read there are listed; add newer ones as they are published.
"""

from __future__ import annotations

from dataclasses import dataclass

from tsrepo.meta import torch_minor

IMAGE = "nvcr.io/nvidia/tritonserver"

# (Triton container release, PyTorch version of that release's libtorch)
RELEASES: tuple[tuple[str, str], ...] = (
    ("24.03", "2.3.0a0+40ec155e58"),
    ("24.05", "2.4.0a0+07cecf4168"),
    ("24.07", "2.4.0a0+3bcc3cddb5"),
    ("24.10", "2.5.0a0+e000cf0ad9"),
    ("24.11", "2.6.0a0+df5bbc09d1"),
    ("25.01", "2.6.0a0+ecf3bae40a"),
    ("25.04", "2.7.0a0+79aa17489c"),
    ("25.05", "2.8.0a0+5228986c39"),
    ("25.10", "2.9.0a0+145a3a7bda"),
    # From DESIGN.md's release table (researched 2026-11; several from secondary sources): the releases
    # whose PyTorch backend serves AOTInductor packages.
    ("26.03", "2.11.0a0"),
    ("26.04", "2.12.0a0"),
    ("26.06", "2.12.0a0"),
    ("26.07", "2.13.0a0"),
    ("26.08", "2.14.0a0"),
)

# platform torch_aoti (model.pt2) is served from 26.03; batch sizes above 1 with dynamic batching are
# exercised by the server's tests from 26.06 (26.05 answered merged requests wrongly).
AOTI_MIN_RELEASE = "26.03"
AOTI_BATCHED_MIN_RELEASE = "26.06"

# TorchScript archives record a file-format version (archive/version). Every libtorch 2.x reads
# formats up to 0xA; tsrepo's exports (torch 2.13) write 3. Operators are not versioned in the
# archive, so an operator added after the container's PyTorch still fails at load time: that is why
# the torch version decides, and the file format is only checked as the stricter bound.
MAX_READABLE_FILE_FORMAT = 0xA


@dataclass(frozen=True)
class Choice:
    release: str
    container_torch: str
    image: str
    warning: str | None


def _release_key(release: str) -> tuple[int, int]:
    year, month = release.split(".")
    return int(year), int(month)


def choose(
    exporting_torch: str, file_format: int | None = None, aoti: bool = False, aoti_batched: bool = False
) -> Choice:
    """The oldest release whose PyTorch is at least the exporting one's (older releases need older
    drivers: 25.x needs CUDA 12.8+/13 drivers), else the newest known release with a warning. A repository
    with torch_aoti models never gets a release before 26.03, nor before 26.06 when they batch."""
    wanted = torch_minor(exporting_torch)
    floor = AOTI_BATCHED_MIN_RELEASE if aoti_batched else AOTI_MIN_RELEASE if aoti else None
    for release, torch_version in RELEASES:
        if floor is not None and _release_key(release) < _release_key(floor):
            continue
        if torch_minor(torch_version) >= wanted:
            warning = None
            if aoti_batched:
                warning = (
                    f"torch_aoti models with dynamic batching: {release} is chosen because batched torch_aoti"
                    f" rests on {AOTI_BATCHED_MIN_RELEASE} or newer (26.05 answered merged requests wrongly)"
                )
            if file_format is not None and file_format > MAX_READABLE_FILE_FORMAT:
                warning = f"the archives use TorchScript file format {file_format}, newer than libtorch reads"
            return Choice(release, torch_version, f"{IMAGE}:{release}-py3", warning)
    release, torch_version = RELEASES[-1]
    warning = (
        f"the models were exported with torch {exporting_torch}, newer than the PyTorch"
        f" {torch_version} in the newest known Triton container ({release}); their archives use"
        f" TorchScript file format {file_format if file_format is not None else '?'}, which it reads,"
        " but operators added after its PyTorch would fail to load. Export with torch <="
        f" {'.'.join(map(str, torch_minor(torch_version)))} for production, or check with `docker compose up`"
    )
    return Choice(release, torch_version, f"{IMAGE}:{release}-py3", warning)
