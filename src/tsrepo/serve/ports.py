"""Free TCP ports on loopback, for tests and benchmarks that start their own servers."""

from __future__ import annotations

import random
import socket

from tsrepo.serve.local import Ports


def free_port(low: int = 18000, high: int = 18999) -> int:
    candidates = list(range(low, high + 1))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def free_ports(low: int = 18000, high: int = 18999) -> Ports:
    """Three distinct free ports (HTTP, gRPC, metrics)."""
    chosen: set[int] = set()
    while len(chosen) < 3:
        chosen.add(free_port(low, high))
    http, grpc, metrics = sorted(chosen)
    return Ports(http, grpc, metrics)
