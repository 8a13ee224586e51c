"""The one mapping from what went wrong on the wire to the three kinds of failure users see.

"Server not reachable" (nothing listens, or the connection died), "timed out" (no answer in
time) and "server said no" (an error answer) are kept apart: pytriton reports a refused connection
as a timeout, which sends people looking in the wrong place. The transport raises the exception
class; the load loop counts the short `kind` per request. Both come from here.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
from dataclasses import dataclass

from tsrepo.errors import ClientError, ServerRefused, ServerTimeout, ServerUnreachable


@dataclass(frozen=True)
class Failure:
    error: type[ClientError]
    kind: str  # short, for error counts: "connection refused", "timeout", "HTTP 400", ...

    @property
    def unreachable(self) -> bool:
        return issubclass(self.error, ServerUnreachable)


class RequestFailed(Exception):
    """One load request failed; the load loops count `failure.kind`. Raised by both wire clients (HTTP/1.1 in
    loadgen.py, HTTP/2 in grpc_wire.py)."""

    def __init__(self, failure: Failure):
        super().__init__(failure.kind)
        self.failure = failure


REFUSED_CONNECTION = Failure(ServerUnreachable, "connection refused")
LOST = Failure(ServerUnreachable, "connection lost")
UNREACHABLE = Failure(ServerUnreachable, "unreachable")
TIMEOUT = Failure(ServerTimeout, "timeout")
BAD_ANSWER = Failure(ServerRefused, "bad answer")

# A keep-alive connection the server closed: the request can be retried once on a fresh one.
STALE_CONNECTION = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    BrokenPipeError,
    asyncio.IncompleteReadError,
)


def from_exception(exc: BaseException) -> Failure:
    """A socket-level failure (blocking or asyncio)."""
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED_CONNECTION
    if isinstance(exc, (socket.timeout, TimeoutError, asyncio.TimeoutError)):
        return TIMEOUT
    if isinstance(exc, (*STALE_CONNECTION, ConnectionError)):
        return LOST
    if isinstance(exc, OSError):
        return UNREACHABLE
    return BAD_ANSWER  # an answer that is not HTTP/KServe (a wrong port, another service)


def from_http_status(status: int) -> Failure:
    return Failure(ServerRefused, f"HTTP {status}")


def from_grpc_code(code: str) -> Failure:
    """`code` is a grpc.StatusCode name (UNAVAILABLE, DEADLINE_EXCEEDED, ...)."""
    code = code.rsplit(".", 1)[-1]
    if code == "UNAVAILABLE":
        return LOST
    if code == "DEADLINE_EXCEEDED":
        return TIMEOUT
    return Failure(ServerRefused, f"gRPC {code}")
