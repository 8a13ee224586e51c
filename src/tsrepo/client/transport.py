"""One client for a running server, over HTTP or gRPC: the protocol is chosen once, in `connect`.

Every failure leaves here as ServerUnreachable, ServerTimeout or ServerRefused (mapped once, in
failures.py), whichever protocol carried it. validate, bench and serve all talk through this; only
bench's hot load loop (loadgen.py) sends on its own fast path, and it maps failures the same way.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from enum import StrEnum
from urllib.parse import quote

import numpy as np

from tsrepo.client.address import Address, parse_address
from tsrepo.errors import ServerTimeout, ServerUnreachable, UsageError


class Protocol(StrEnum):
    HTTP = "http"
    GRPC = "grpc"


def parse_protocol(value: str | Protocol) -> Protocol:
    try:
        return Protocol(value)
    except ValueError:
        raise UsageError(f"`--protocol`: expected http or grpc, got {value!r}") from None


def model_path(model: str, version: int | str | None = None) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    return f"{path}/versions/{quote(str(version), safe='')}" if version is not None else path


def repository_path(model: str, action: str) -> str:
    return f"/v2/repository/models/{quote(model, safe='')}/{action}"


class Transport(ABC):
    """The server's KServe v2 API. Answers are plain dicts, the same for both protocols."""

    protocol: Protocol

    def __init__(self, address: Address, timeout: float):
        self.address = address
        self.timeout = timeout

    @property
    def url(self) -> str:
        return str(self.address)

    # -- health --
    @abstractmethod
    def live(self) -> bool: ...

    @abstractmethod
    def server_ready(self) -> bool: ...

    @abstractmethod
    def model_ready(self, model: str, version: int | None = None) -> bool: ...

    def wait_ready(self, timeout: float) -> None:
        """Wait (bounded) until the server says ready; the last failure's kind is kept."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            try:
                if self.server_ready():
                    return
                last = ServerTimeout(f"server at {self.url} is live but not ready after {timeout:g} s")
            except (ServerUnreachable, ServerTimeout) as e:
                last = e
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        if isinstance(last, ServerUnreachable):
            raise ServerUnreachable(f"{last} (waited {timeout:g} s)")
        raise last or ServerTimeout(f"server at {self.url} not ready after {timeout:g} s")

    # -- models --
    @abstractmethod
    def metadata(self, model: str) -> dict: ...

    @abstractmethod
    def config(self, model: str) -> dict:
        """The model config as JSON (protobuf field names)."""

    @abstractmethod
    def infer(
        self, model: str, version: int | None, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def statistics(self, model: str) -> dict:
        """{"model_stats": [...]} as the statistics extension returns it."""

    # -- repository (explicit model control) --
    @abstractmethod
    def repository_index(self) -> list[dict]:
        """[{"name", "version", "state", "reason"}] for every model in the repository."""

    @abstractmethod
    def load(self, model: str, config: dict | str | None = None) -> None:
        """Load (or reload) `model`; with `config`, under that config instead of its config.pbtxt."""

    @abstractmethod
    def unload(self, model: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def config_text(config: dict | str) -> str:
    return config if isinstance(config, str) else json.dumps(config)


def connect(url: str | Address, protocol: str | Protocol = Protocol.HTTP, timeout: float = 30.0) -> Transport:
    """A client for the server at `url` (HOST:PORT). Raises UsageError for a malformed address."""
    address = parse_address(url)
    protocol = parse_protocol(protocol)
    if protocol is Protocol.GRPC:
        from tsrepo.client.transport_grpc import GrpcTransport

        return GrpcTransport(address, timeout)
    from tsrepo.client.transport_http import HttpTransport

    return HttpTransport(address, timeout)
