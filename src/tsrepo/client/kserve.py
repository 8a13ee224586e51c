"""The KServe v2 protocol over HTTP, with the binary tensor extension, and errors kept apart.

"Server not reachable" (nothing listens), "timed out" (no answer in time) and "server said no"
(an HTTP error with Triton's message) are different exceptions, so users see which one it was.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass

import numpy as np

from tsrepo.dtypes import BY_WIRE, STRING
from tsrepo.errors import ServerRefused, ServerTimeout, ServerUnreachable


def split_url(url: str) -> tuple[str, int]:
    url = url.removeprefix("http://").removeprefix("https://").rstrip("/")
    host, _, port = url.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {url!r}")
    return host, int(port)


def encode_infer(
    inputs: dict[str, np.ndarray], outputs: list[str] | None = None, binary_outputs: bool = True
) -> tuple[bytes, int]:
    """A request body: JSON header then raw tensor bytes. Returns (body, header length)."""
    header: dict = {"inputs": []}
    blobs = []
    for name, arr in inputs.items():
        wire = next((d.wire for d in BY_WIRE.values() if d.numpy == str(arr.dtype)), None)
        if arr.dtype == np.object_:
            raw = b"".join(
                len(s).to_bytes(4, "little") + s
                for s in (x if isinstance(x, bytes) else str(x).encode() for x in arr.ravel())
            )
            wire = STRING.wire
        else:
            raw = np.ascontiguousarray(arr).tobytes()
        if wire is None:
            raise ValueError(f"input {name}: dtype {arr.dtype} has no KServe datatype")
        header["inputs"].append(
            {"name": name, "shape": list(arr.shape), "datatype": wire, "parameters": {"binary_data_size": len(raw)}}
        )
        blobs.append(raw)
    if outputs is not None:
        header["outputs"] = [{"name": o, "parameters": {"binary_data": binary_outputs}} for o in outputs]
    else:
        header["parameters"] = {"binary_data_output": binary_outputs}
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + b"".join(blobs), len(head)


def decode_infer(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """Outputs of an infer response (binary or JSON data)."""
    head = json.loads(body[:header_length] if header_length else body)
    offset = header_length or 0
    out = {}
    for o in head.get("outputs", []):
        dtype = BY_WIRE[o["datatype"]]
        size = o.get("parameters", {}).get("binary_data_size")
        if size is not None:
            raw = body[offset : offset + size]
            offset += size
            if dtype is STRING:
                items, i = [], 0
                while i < len(raw):
                    n = int.from_bytes(raw[i : i + 4], "little")
                    items.append(raw[i + 4 : i + 4 + n])
                    i += 4 + n
                arr = np.array(items, dtype=np.object_)
            else:
                arr = np.frombuffer(raw, dtype=dtype.numpy)
        else:
            arr = np.array(o["data"], dtype=dtype.numpy if dtype is not STRING else np.object_)
        out[o["name"]] = arr.reshape(o["shape"])
    return out


@dataclass
class HttpClient:
    """A small blocking KServe v2 client (one keep-alive connection) with typed errors."""

    url: str
    timeout: float = 30.0

    def __post_init__(self):
        self.host, self.port = split_url(self.url)
        self._conn: http.client.HTTPConnection | None = None

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                resp = self._conn.getresponse()
                data = resp.read()
                return resp, data
            except ConnectionRefusedError:
                self.close()
                raise ServerUnreachable(f"server not reachable at {self.url}: connection refused") from None
            except (socket.timeout, TimeoutError):
                self.close()
                raise ServerTimeout(f"{self.url}{path}: no answer within {self.timeout:g} s") from None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.BadStatusLine):
                self.close()  # a stale keep-alive connection: retry once on a fresh one
                if attempt:
                    raise ServerUnreachable(f"server at {self.url} closed the connection") from None
            except OSError as e:
                self.close()
                raise ServerUnreachable(f"server not reachable at {self.url}: {e.strerror or e}") from None
        raise AssertionError("unreachable")

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def get_json(self, path: str):
        resp, data = self._request("GET", path)
        if resp.status != 200:
            raise ServerRefused(f"{self.url}{path}: HTTP {resp.status}: {_error_text(data)}")
        return json.loads(data)

    def post_json(self, path: str, body: dict):
        resp, data = self._request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        if resp.status != 200:
            raise ServerRefused(f"{self.url}{path}: HTTP {resp.status}: {_error_text(data)}")
        return json.loads(data or b"null")

    def status(self, path: str) -> int:
        resp, _ = self._request("GET", path)
        return resp.status

    def infer(
        self, model: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        body, hlen = encode_infer(inputs, outputs)
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(hlen)}
        resp, data = self._request("POST", f"/v2/models/{model}/infer", body, headers)
        if resp.status != 200:
            raise ServerRefused(f"{model}: the server answered HTTP {resp.status}: {_error_text(data)}")
        hl = resp.getheader("Inference-Header-Content-Length")
        return decode_infer(data, int(hl) if hl else None)

    def wait_ready(self, timeout: float) -> None:
        """Wait (bounded) for /v2/health/ready; keeps the three failure kinds apart."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if self.status("/v2/health/ready") == 200:
                    return
                last = ServerTimeout(f"server at {self.url} is live but not ready after {timeout:g} s")
            except ServerUnreachable as e:
                last = e
            except ServerTimeout as e:
                last = e
            time.sleep(0.25)
        if isinstance(last, ServerUnreachable):
            raise ServerUnreachable(f"{last} (waited {timeout:g} s)")
        raise last or ServerTimeout(f"server at {self.url} not ready after {timeout:g} s")


def _error_text(data: bytes) -> str:
    try:
        return json.loads(data).get("error", data.decode(errors="replace"))
    except (ValueError, AttributeError):
        return data.decode(errors="replace")[:300]
