"""The options of `tsrepo deploy`, each checked before anything is read or written.

Every message names the option and the fix. The checks live here, not in the CLI, so the library
refuses the same values the command line does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tsrepo.deploy.uri import S3Location
from tsrepo.errors import UsageError
from tsrepo.serve.containers import IMAGE

TARGETS = ("k8s", "kserve")
# A Service name is a DNS-1035 label; the Deployment, PDB, HPA and InferenceService share it.
NAME_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
SECRET_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
QUANTITY_RE = re.compile(r"(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
# The OCI distribution spec's grammar for a tag, and a simplified one for a full image reference.
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REFERENCE_RE = re.compile(
    rf"(?:(?P<host>[A-Za-z0-9.-]+(?::\d+)?)/)?(?P<path>{COMPONENT}(?:/{COMPONENT})*)"
    rf"(?::(?P<tag>{TAG_RE.pattern}))?(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?"
)


@dataclass(frozen=True)
class DeployOptions:
    loc: S3Location
    target: str = "k8s"
    name: str = "triton"
    replicas: int = 1
    min_replicas: int | None = None  # None: --replicas
    max_replicas: int | None = None  # None: max(3, --replicas), NVIDIA's chart scales 1-3
    gpus: int | None = None  # None: 1 when any model has a KIND_GPU instance group, else 0
    image: str = "auto"
    secret: str = "triton-s3-credentials"
    ops_configmap: str | None = None  # a ConfigMap holding the custom-op libraries the models record
    cpu: str = "2"
    memory: str = "8Gi"
    shm_size: str = "1Gi"
    queue_target_us: int = 50
    startup_seconds: int = 600

    @property
    def min_r(self) -> int:
        return self.min_replicas if self.min_replicas is not None else self.replicas

    @property
    def max_r(self) -> int:
        return self.max_replicas if self.max_replicas is not None else max(3, self.replicas, self.min_r)


def _int(value, option: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UsageError(f"{option} must be a whole number >= {low}, got {value!r}")


def _quantity(value: str, option: str) -> None:
    if not isinstance(value, str) or not QUANTITY_RE.fullmatch(value) or float(re.sub(r"[^\d.]", "", value)) <= 0:
        raise UsageError(f"{option} must be a Kubernetes quantity > 0 such as 2, 500m, 8Gi, got {value!r}")


def image_parts(image: str, option: str = "--image") -> tuple[str, str]:
    """(full image reference, tag) for a tag like 25.10-py3 or a reference like registry/repo:tag."""
    if TAG_RE.fullmatch(image) and "/" not in image and ":" not in image:
        return f"{IMAGE}:{image}", image
    m = REFERENCE_RE.fullmatch(image)
    if not m or not (m.group("tag") or m.group("digest")):
        raise UsageError(
            f"{option} must be auto, a tag such as 25.10-py3, or an image reference with a tag or digest such as"
            f" {IMAGE}:25.10-py3, got {image!r}"
        )
    return image, m.group("tag") or ""


def check(o: DeployOptions) -> None:
    if o.target not in TARGETS:
        raise UsageError(f"--target must be one of {', '.join(TARGETS)}, got {o.target!r}")
    if not isinstance(o.name, str) or not NAME_RE.fullmatch(o.name):
        raise UsageError(
            f"--name must be a DNS label (lower-case letters, digits and '-', starting with a letter, at most 63"
            f" characters), got {o.name!r}"
        )
    if not isinstance(o.secret, str) or len(o.secret) > 253 or not SECRET_RE.fullmatch(o.secret):
        raise UsageError(f"--secret must be a Kubernetes object name (lower-case DNS subdomain), got {o.secret!r}")
    if o.ops_configmap is not None and (len(o.ops_configmap) > 253 or not SECRET_RE.fullmatch(o.ops_configmap)):
        raise UsageError(
            f"--ops-configmap must be a Kubernetes object name (lower-case DNS subdomain), got {o.ops_configmap!r}"
        )
    _int(o.replicas, "--replicas", 1)
    if o.min_replicas is not None:
        _int(o.min_replicas, "--min-replicas", 1)
    if o.max_replicas is not None:
        _int(o.max_replicas, "--max-replicas", 1)
    if o.min_r > o.max_r:
        # Without --min-replicas the lower bound is --replicas: name the option the user gave.
        lower = "--min-replicas" if o.min_replicas is not None else "--replicas"
        raise UsageError(f"{lower} ({o.min_r}) must be <= --max-replicas ({o.max_r})")
    if not o.min_r <= o.replicas <= o.max_r:
        raise UsageError(
            f"--replicas ({o.replicas}) must lie within --min-replicas..--max-replicas ({o.min_r}..{o.max_r});"
            " the autoscaler would move it there at once"
        )
    if o.gpus is not None:
        _int(o.gpus, "--gpus", 0)
    _int(o.queue_target_us, "--queue-target-us", 1)
    _int(o.startup_seconds, "--startup-seconds", 10)
    _quantity(o.cpu, "--cpu")
    _quantity(o.memory, "--memory")
    _quantity(o.shm_size, "--shm-size")
    if o.image != "auto":
        full, tag = image_parts(o.image)
        if o.target == "kserve" and (full != f"{IMAGE}:{tag}" or not tag):
            raise UsageError(
                f"--target kserve takes --image auto or a tag of {IMAGE} (the ClusterServingRuntime names the"
                f" image; the InferenceService sets only runtimeVersion), got {o.image!r}"
            )
