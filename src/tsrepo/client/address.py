"""Server addresses (`--url`), parsed once and up front.

Both protocols take HOST:PORT; an `http://` or `grpc://` prefix is accepted for either, because
people paste URLs. TLS (`https://`, `grpcs://`) is refused: the client speaks plain text only, and
saying so beats a gRPC "Misformatted domain name" after the whole timeout.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from tsrepo.errors import UsageError

PLAIN_SCHEMES = ("http://", "grpc://")
TLS_SCHEMES = ("https://", "grpcs://")
HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
FORM = "HOST:PORT, e.g. 127.0.0.1:8000, localhost:8001 or [::1]:8000"


@dataclass(frozen=True)
class Address:
    host: str  # without brackets, also for IPv6
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"


def parse_address(text: str | Address, option: str = "--url") -> Address:
    """HOST:PORT (optionally `http://` or `grpc://` first); raises UsageError naming `option`."""
    if isinstance(text, Address):
        return text

    def bad(why: str) -> UsageError:
        return UsageError(f"`{option}`: {why}; expected {FORM}, got {text!r}")

    rest = str(text)
    if not rest.strip():
        raise bad("the address is empty")
    if any(c.isspace() for c in rest):
        raise bad("the address contains a space")
    lowered = rest.lower()
    if lowered.startswith(TLS_SCHEMES):
        raise UsageError(f"`{option}`: TLS ({rest.split('://')[0]}://) is not supported; give {FORM} (plain text)")
    for scheme in PLAIN_SCHEMES:
        if lowered.startswith(scheme):
            rest = rest[len(scheme) :]
            break
    else:
        if "://" in rest:
            raise bad(f"unknown scheme {rest.split('://')[0]!r} (only http:// and grpc:// may prefix it)")
    rest = rest.removesuffix("/")  # a pasted "http://host:8000/" means the server, not a path
    if "/" in rest:
        raise bad("an address cannot hold a path")
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]")
        if not sep or not port.startswith(":"):
            raise bad("an IPv6 address needs the form [ADDRESS]:PORT")
        port = port[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            raise bad("the port is missing")
        if ":" in host:
            raise bad("write an IPv6 address in brackets")
        if not host:
            raise bad("the host is empty")
        if not HOST_RE.match(host):
            raise bad(f"{host!r} is not a host name or IPv4 address")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise bad(f"the port must be a number from 1 to 65535, not {port!r}")
    return Address(host, int(port))
