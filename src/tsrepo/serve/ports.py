"""TCP ports on loopback: whether a server could bind one, and free ones for tests and benchmarks."""

from __future__ import annotations

import errno
import random
import socket

from tsrepo.serve.local import Ports


def bind_error(port: int, host: str = "127.0.0.1") -> OSError | None:
    """Why a server could not bind `port` now, or None when it could.

    The probe binds the way tritonserver does, with SO_REUSEADDR: a port a stopped server just used
    holds only TIME_WAIT sockets for about a minute, which block a plain bind but not the server's.
    A live listener still refuses the bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e
    return None


def is_privileged(error: OSError) -> bool:
    return error.errno in (errno.EACCES, errno.EPERM)


def free_port(low: int = 18000, high: int = 18999) -> int:
    candidates = list(range(low, high + 1))
    random.shuffle(candidates)
    for port in candidates:
        if bind_error(port) is None:
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def free_ports(low: int = 18000, high: int = 18999) -> Ports:
    """Three distinct free ports (HTTP, gRPC, metrics)."""
    chosen: set[int] = set()
    while len(chosen) < 3:
        chosen.add(free_port(low, high))
    http, grpc, metrics = sorted(chosen)
    return Ports(http, grpc, metrics)
